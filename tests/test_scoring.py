"""The model in its own process: the same verdicts as in the worker's process, clear errors when it cannot
load, a batch it cannot score reported (and the process still serving), its death noticed."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from models.world import World, WorldConfig, capture_record, catalog_record
from streams.errors import PackwiseError
from streams.processor import ScoreJob
from streams.scoring import Scorer, ScorerGone, ScoringFailed, ScoringProcess


@pytest.fixture(scope="module")
def jobs() -> list[ScoreJob]:
    world = World.generate(WorldConfig(seed=3, n_products=6))
    rng = np.random.default_rng(3)
    out = []
    for i, product in enumerate(world.products):
        catalog = catalog_record(product) if i % 3 != 1 else None  # some image-only, some text-only
        capture = capture_record(product, rng) if i % 3 != 2 else None
        out.append(ScoreJob(product.product_id, catalog, capture, ("tunnel-captures", 0)))
    return out


@pytest.fixture(scope="module")
def process(trained_bundle: Path):
    scoring = ScoringProcess(trained_bundle, threads=1)
    yield scoring
    scoring.close()


def test_same_verdicts_as_in_process(process: ScoringProcess, trained_bundle: Path, jobs: list[ScoreJob]) -> None:
    local = Scorer.load(trained_bundle, threads=1).score(jobs)
    remote = process.score(jobs)
    assert process.version == local[0].version
    assert [v.certified for v in remote] == [v.certified for v in local]
    for r, l in zip(remote, local):
        assert r.probabilities == pytest.approx(l.probabilities, abs=1e-9)
    assert process.score([]) == []


def test_a_batch_it_cannot_score_is_reported_and_the_process_keeps_serving(process: ScoringProcess,
                                                                           jobs: list[ScoreJob]) -> None:
    capture = next(j.capture for j in jobs if j.capture is not None)
    broken = {**capture, "measured_weight_g": "heavy"}  # an image that does not decode is a missing view instead
    with pytest.raises(ScoringFailed):
        process.score([ScoreJob("P-broken", None, broken, ("tunnel-captures", 0))])
    assert len(process.score(jobs)) == len(jobs)


def test_batches_are_sent_ahead_and_answered_in_order(process: ScoringProcess, jobs: list[ScoreJob]) -> None:
    """The next batch goes down the pipe while one scores (the model does not wait for the worker between
    batches), and each answer reaches its own batch, a failed one included."""
    text_only = [j for j in jobs if j.capture is None]  # small: all three fit in the pipe while nobody reads it
    expected = process.score(text_only)
    capture = next(j.capture for j in jobs if j.capture is not None)
    broken = [ScoreJob("P-broken", None, {**capture, "measured_weight_g": "heavy"}, ("tunnel-captures", 0))]
    os.kill(process.pid, signal.SIGSTOP)  # a model busy with a long batch
    try:
        answers = [process.submit(text_only[:1]), process.submit(broken), process.submit(text_only[1:])]
        assert not any(answer.done() for answer in answers)  # all three sent, none answered yet
    finally:
        os.kill(process.pid, signal.SIGCONT)
    first = answers[0].result(60)
    with pytest.raises(ScoringFailed):
        answers[1].result(60)
    got = first + answers[2].result(60)
    assert [v.certified for v in got] == [v.certified for v in expected]
    for mine, theirs in zip(got, expected, strict=True):  # scored in batches of one: float noise apart
        assert mine.probabilities == pytest.approx(theirs.probabilities, abs=1e-6)


def test_missing_bundle_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PackwiseError, match="cannot load the model.*does not exist"):
        ScoringProcess(tmp_path / "nowhere")
    with pytest.raises(PackwiseError, match="no model bundle given"):
        ScoringProcess("")


def test_death_is_noticed_and_close_reaps(trained_bundle: Path, jobs: list[ScoreJob]) -> None:
    scoring = ScoringProcess(trained_bundle, threads=1)
    pid = scoring.pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ScorerGone, match=str(pid)):
        scoring.score(jobs)
    scoring.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_close_stops_the_process(trained_bundle: Path) -> None:
    scoring = ScoringProcess(trained_bundle, threads=1)
    pid = scoring.pid
    scoring.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_hung_process_is_killed_after_the_answer_timeout(trained_bundle: Path, jobs: list[ScoreJob]) -> None:
    scoring = ScoringProcess(trained_bundle, threads=1, answer_timeout_s=2.0)
    pid = scoring.pid
    os.kill(pid, signal.SIGSTOP)
    outcome: list[BaseException | object] = []

    def score() -> None:
        try:
            outcome.append(scoring.score(jobs))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    caller = threading.Thread(target=score, daemon=True)  # without a watchdog the call would never return
    caller.start()
    caller.join(60)
    try:
        assert outcome, "score() still blocked 60 s after a 2 s answer timeout"
        assert isinstance(outcome[0], ScorerGone) and "did not answer within 2s" in str(outcome[0])
    finally:
        scoring.close()  # SIGKILLs it if the watchdog did not
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_after_a_failed_batch_each_job_is_scored_alone_then_on_text_then_given_up(jobs: list[ScoreJob]) -> None:
    """The worker's fallback (streams/app.py): no job is lost to another's bad input, a capture the model cannot
    read falls back to the catalog text, and a job nothing can score is None (decided on statistics alone)."""
    from streams import metrics
    from streams.policy import ModelView
    from streams.scoring import score_one_by_one

    def verdict(job: ScoreJob) -> ModelView:
        return ModelView({}, {}, f"{job.product_id}/{'capture' if job.capture else 'text'}")

    def score(batch: list[ScoreJob]) -> list[ModelView]:
        for job in batch:
            if (job.capture or {}).get("unreadable") or (job.catalog or {}).get("unreadable"):
                raise ScoringFailed(f"cannot score {job.product_id}")
        return [verdict(job) for job in batch]

    good = ScoreJob("P-0", {"title": "t"}, {"views": []}, ("tunnel-captures", 0))
    bad_capture = ScoreJob("P-1", {"title": "t"}, {"unreadable": True}, ("tunnel-captures", 0))
    bad_both = ScoreJob("P-2", {"unreadable": True}, {"unreadable": True}, ("tunnel-captures", 0))
    before = {o: metrics.SCORING_FAILURES.labels(outcome=o)._value.get() for o in ("text_only", "unscored")}
    views = score_one_by_one(score, [good, bad_capture, bad_both])
    assert [v.version if v else None for v in views] == ["P-0/capture", "P-1/text", None]
    after = {o: metrics.SCORING_FAILURES.labels(outcome=o)._value.get() for o in ("text_only", "unscored")}
    assert (after["text_only"] - before["text_only"], after["unscored"] - before["unscored"]) == (1, 1)
