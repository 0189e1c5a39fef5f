"""The worker's view of the model: a bundle loaded once, scoring batches of jobs into ModelViews.

Scorer runs the model in the calling process. ScoringProcess runs a Scorer in a child process and is what
the worker uses: torch's operators give up Python's global lock and take it back hundreds of times per
batch, so a model sharing a process with a busy event loop waits for the lock at every one of them (ten
times slower beside a thread running Python: `bench/bench_worker.py contention`). In its own process the
model never waits for the event loop, and the event loop never waits for the model.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Callable

from streams import metrics
from streams.errors import PackwiseError
from streams.logs import get_logger
from streams.policy import ModelView
from streams.processor import ScoreJob

log = get_logger("packwise.scoring")


def require_path(path: str | Path) -> None:
    if not str(path):
        raise PackwiseError("no model bundle given: pass --model DIR or set PACKWISE_MODEL_PATH "
                            "(`packwise train --out DIR` writes one)")


def cannot_load(error: Exception) -> PackwiseError:
    return PackwiseError(f"cannot load the model: {str(error).rstrip('.')}; retrain with `packwise train --out DIR`")


class Scorer:
    def __init__(self, bundle) -> None:  # models.bundle.Bundle; imported lazily (torch) by load()
        self.bundle = bundle

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> "Scorer":
        require_path(path)
        import torch

        from models.bundle import BundleError, load_bundle

        try:
            bundle = load_bundle(path)
        except BundleError as error:
            raise cannot_load(error) from None
        # after load_bundle, which sets one thread per core
        torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0)) - 1))
        scorer = cls(bundle)
        scorer.warm_up()
        return scorer

    def warm_up(self) -> None:
        """Score a synthetic product once, text and images, before the worker takes traffic: torch's first
        calls allocate and pick kernels, and would otherwise add most of a second to the first captures."""
        import numpy as np

        from models.world import World, WorldConfig, capture_record, catalog_record

        product = World.generate(WorldConfig(seed=0, n_products=1)).products[0]
        catalog, capture = catalog_record(product), capture_record(product, np.random.default_rng(0), missing_view_rate=0.0)
        for _ in range(2):
            self.bundle.predict([catalog, None, catalog], [capture, capture, None])

    @property
    def version(self) -> str:
        return self.bundle.version

    def score(self, jobs: list[ScoreJob]) -> list[ModelView]:
        return self.score_records([(j.catalog, j.capture) for j in jobs])

    def score_records(self, records: list[tuple[dict | None, dict | None]]) -> list[ModelView]:
        """(catalog record, capture record) pairs, either side None, to one ModelView each."""
        if not records:
            return []
        predictions = self.bundle.predict([c for c, _ in records], [t for _, t in records])
        return [ModelView(p.probabilities, p.certified, p.bundle_version) for p in predictions]


def _settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Resolve a batch's future unless its caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class ScorerGone(PackwiseError):
    """The scoring process died: no batch can be scored any more."""


class ScoringFailed(Exception):
    """The model could not score one batch (what the scoring process raised, as text)."""


def score_one_by_one(score: Callable[[list[ScoreJob]], list[ModelView]],
                     jobs: list[ScoreJob]) -> list[ModelView | None]:
    """After a batch failed to score: each job alone; on its catalog text alone when its capture cannot be
    scored; None when nothing can be (the product keeps no model verdict and is decided on its damage
    statistics: sent to test, not lost). Every fallback is logged and counted for ops."""
    views: list[ModelView | None] = []
    for job in jobs:
        try:
            views.append(score([job])[0])
            continue
        except ScoringFailed as error:
            log.error("scoring_failed", product_id=job.product_id, error=str(error))
        if job.catalog is not None and job.capture is not None:
            try:
                views.append(score([ScoreJob(job.product_id, job.catalog, None, job.source, job.catalog_changed)])[0])
                metrics.SCORING_FAILURES.labels(outcome="text_only").inc()
                continue
            except ScoringFailed as error:
                log.error("scoring_failed_on_text", product_id=job.product_id, error=str(error))
        metrics.SCORING_FAILURES.labels(outcome="unscored").inc()
        views.append(None)
    return views


def _serve(path: str, threads: int, conn) -> None:
    """The scoring process: load, say ready (or why not), then score each batch sent until the pipe closes:
    when the worker closes it, and when the worker dies, however it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the worker decides
    from streams.logs import configure_logging

    configure_logging()  # its lines (a view that does not decode, torch's warnings) render as the worker's do
    try:
        try:
            scorer = Scorer.load(path, threads)
        except PackwiseError as error:
            conn.send(("error", str(error)))
            return
        except Exception as error:  # noqa: BLE001 - reported to the worker, which exits with it
            conn.send(("error", f"cannot load the model from {path}: {error!r}"))
            return
        conn.send(("ready", scorer.version))
    except OSError:  # BrokenPipeError among them: the worker stopped while the model loaded, nobody to tell
        return
    # the next batch is read off the pipe (and unpickled) while this one scores, so the model goes from one batch
    # to the next without waiting for the transfer; two waiting at most, then the worker's send waits
    waiting: queue.Queue = queue.Queue(maxsize=2)

    def read() -> None:
        while True:
            try:
                waiting.put(conn.recv())
            except (EOFError, OSError):
                waiting.put(_END)
                return

    threading.Thread(target=read, name="packwise-scoring-reader", daemon=True).start()
    while True:
        records = waiting.get()
        if records is _END:
            return
        try:
            views = scorer.score_records(records)
        except Exception as error:  # noqa: BLE001 - one batch; the worker retries its jobs one by one
            answer = ("error", repr(error))
        else:
            answer = ("ok", [(v.probabilities, v.certified, v.version) for v in views])
        try:
            conn.send(answer)
        except OSError:  # the worker is gone
            return


_END = object()


class ScoringProcess:
    """A Scorer in a child process (spawned: nothing of the worker's sockets or threads is inherited).
    submit() sends a batch down a pipe and returns a future of its views, which a thread of this object
    resolves as the answers come back; score() waits for it. Send from one thread at a time (the worker's single
    scoring thread)."""

    def __init__(self, path: str | Path, threads: int = 0, answer_timeout_s: float = 120.0,
                 wait: bool = True) -> None:
        """Start the process; with `wait`, wait until the model is loaded (else the first score() waits for it,
        or wait_ready(): the worker starts consuming meanwhile)."""
        require_path(path)
        from models.bundle_files import BundleError, single_target, verify_files

        try:  # the common mistakes (no bundle there, a file missing or corrupt) without waiting for torch
            manifest = verify_files(path)
        except BundleError as error:
            raise cannot_load(error) from None
        self.path = str(path)
        # version -> target of the verdicts that workers before per-target certification kept with this bundle
        known = single_target(path)
        self.legacy_targets: dict[str, float] = dict([known]) if known else {}
        self.version: str = manifest["version"]  # known before the model loads: the files are checked
        self.ready = False
        self.answer_timeout_s = answer_timeout_s  # a batch takes well under a second; a hung model must not
        # hold the worker's partitions forever
        self._lock = threading.Lock()
        self._pending: deque[tuple[Future, float]] = deque()  # sent, not answered yet: (future, when sent)
        self._receiver: threading.Thread | None = None  # reads the answers, started with the first batch
        self._gone: ScorerGone | None = None
        self._hung = False  # killed for not answering in time
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_serve, args=(self.path, threads, child_conn),
                                        name="packwise-scoring", daemon=True)
        self._process.start()
        child_conn.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Block until the model is loaded; PackwiseError (the process stopped) when it cannot be. score()
        waits for it too, so a caller may start its other work first."""
        if self.ready:
            return
        try:
            if not self._conn.poll(timeout_s):
                raise PackwiseError(f"the scoring process did not load the model {self.path} within {timeout_s:.0f}s")
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(5)
            raise PackwiseError(f"the scoring process exited (code {self._process.exitcode}) while loading the "
                                f"model {self.path}") from None
        except PackwiseError:
            self.close()
            raise
        if kind != "ready":
            self.close()
            raise PackwiseError(value)
        self.version, self.ready = value, True

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit(self, jobs: list[ScoreJob]) -> Future:
        """Send a batch to the process; the future resolves to its views, or fails with ScoringFailed (this batch)
        or ScorerGone (the process died, or did not answer within answer_timeout_s: killed). Batches are answered
        in the order sent, and the next one may be sent while one scores, so the model never waits for the
        worker between batches. Call from one thread at a time (the worker's scoring thread): the send blocks
        while two batches wait in the process already."""
        future: Future = Future()
        if not jobs:
            future.set_result([])
            return future
        self.wait_ready()  # the first batch waits for the model, when the worker started before it loaded
        payload = [(j.catalog, j.capture) for j in jobs]
        with self._lock:
            if self._gone is not None:
                raise self._gone
            self._pending.append((future, time.perf_counter()))  # before the send: the answer can come first
            if self._receiver is None:
                self._receiver = threading.Thread(target=self._receive, name="packwise-scoring-answers", daemon=True)
                self._receiver.start()
        try:
            self._conn.send(payload)
        except (EOFError, OSError, ValueError):  # a dead process's pipe; ValueError: closed meanwhile
            self._process.join(1)
            self._fail_all(self._gone_error())
        return future

    def score(self, jobs: list[ScoreJob]) -> list[ModelView]:
        return self.submit(jobs).result()

    def _gone_error(self) -> ScorerGone:
        if self._hung:
            return ScorerGone(f"the scoring process (pid {self._process.pid}) did not answer within "
                              f"{self.answer_timeout_s:.0f}s; killed it")
        return ScorerGone(f"the scoring process (pid {self._process.pid}) is gone (exit code "
                          f"{self._process.exitcode})")

    def _fail_all(self, error: ScorerGone) -> None:
        with self._lock:
            if self._gone is None:
                self._gone = error
            pending, self._pending = list(self._pending), deque()
        for future, _ in pending:
            _settle(future, error=self._gone)

    def _receive(self) -> None:
        """The answers, in the order the batches were sent. A batch at the head of the line for answer_timeout_s
        (from its send, or from the answer before it) gets the process killed: a hung model must not hold the
        worker's partitions forever."""
        answered = time.perf_counter()
        while True:
            try:
                if not self._conn.poll(0.25):
                    with self._lock:
                        head = self._pending[0][1] if self._pending else None
                    if head is not None and time.perf_counter() - max(head, answered) > self.answer_timeout_s:
                        self._hung = True  # before the kill: a send blocked on the full pipe fails with it
                        self._process.kill()
                    continue
                kind, value = self._conn.recv()
            except (EOFError, OSError, ValueError):  # ValueError/OSError: closed by close()
                self._process.join(1)
                self._fail_all(self._gone_error())
                return
            now = time.perf_counter()
            with self._lock:
                if not self._pending:  # failed already (a send that broke): nobody waits for this answer
                    continue
                future, sent = self._pending.popleft()
            metrics.SCORING_SECONDS.observe(now - max(sent, answered))
            answered = now
            if kind == "ok":
                _settle(future, result=[ModelView(*view) for view in value])
            else:
                _settle(future, error=ScoringFailed(value))

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the pipe (the process ends when it reads the end of it), then make sure it has: SIGKILL after
        timeout_s. No goodbye message: a send can block on a full pipe to a hung process."""
        self._conn.close()
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
