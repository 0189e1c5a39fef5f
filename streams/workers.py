"""`packwise worker` as a child process: started with the environment that reproduces a Settings object,
waited for until Faust says it is ready, and killed or stopped by its pid. The demo, the integration
tests and the benchmarks all run their workers through this."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from streams.errors import PackwiseError
from streams.settings import Settings, env_name

READY = "Worker]: Ready"
MODEL_LOADED = "model_loaded"  # the worker is Ready (consuming) before its scoring process has loaded the model


def settings_env(settings: Settings) -> dict[str, str]:
    """The PACKWISE_* environment that reproduces `settings` in another process."""
    return {env_name(name): "" if value is None else str(value) for name, value in vars(settings).items()}


def stop_process(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after timeout_s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait_ready_s: float | None = 180.0, model: bool = True) -> float:
        """Start the worker; with wait_ready_s, wait until it is ready (consuming, and with `model` able to score
        too). Returns the seconds it took."""
        self.starts += 1
        started = time.monotonic()
        with open(self.log_path, "a") as log:
            log.write(f"\n=== start {self.starts} ===\n")
            log.flush()
            env = {**os.environ, **settings_env(self.settings), "PACKWISE_LOG_FORMAT": "json"}
            self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait_ready_s:
            self.wait_ready(wait_ready_s, model)
        return time.monotonic() - started

    def _log_since_start(self) -> str:
        return self.log_path.read_text(errors="replace").rsplit(f"=== start {self.starts} ===", 1)[-1]

    def wait_ready(self, timeout_s: float, model: bool = True) -> None:
        deadline = time.monotonic() + timeout_s
        marks = (READY, MODEL_LOADED) if model else (READY,)
        while True:
            text = self._log_since_start()
            if all(mark in text for mark in marks):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(text.splitlines()[-8:])
                raise PackwiseError(f"the worker did not become ready within {timeout_s:.0f}s (log {self.log_path}):"
                                    f"\n{tail}")
            time.sleep(0.2)

    def kill(self) -> None:
        """kill -9: no shutdown, no commit, no flush."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s)

    def gone(self) -> bool:
        """True once the process no longer exists (or is a zombie awaiting its parent)."""
        if self.process is None or not psutil.pid_exists(self.process.pid):
            return True
        return psutil.Process(self.process.pid).status() == psutil.STATUS_ZOMBIE

    def rss_mib(self) -> float:
        process = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
