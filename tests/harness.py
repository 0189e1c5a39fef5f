"""Worker processes for integration tests: real `packwise worker` processes against the session broker,
started, killed and stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from streams.broker import free_port
from streams.settings import Settings, env_name


def settings_env(settings: Settings) -> dict[str, str]:
    """The PACKWISE_* environment that reproduces `settings` in another process."""
    return {env_name(name): "" if value is None else str(value) for name, value in vars(settings).items()}


@dataclass
class WorkerProcess:
    settings: Settings
    log_path: Path
    process: subprocess.Popen | None = None
    starts: int = field(default=0)

    def start(self, wait_ready_s: float = 120.0) -> "WorkerProcess":
        env = {**os.environ, **settings_env(self.settings), "PACKWISE_LOG_FORMAT": "json"}
        self.starts += 1
        with open(self.log_path, "a") as log:
            log.write(f"\n=== start {self.starts} ===\n")
        log = open(self.log_path, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        if wait_ready_s:
            self.wait_ready(wait_ready_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        marker = f"=== start {self.starts} ==="
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "Worker]: Ready" in text.rsplit(marker, 1)[-1]:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout_s}s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9: no shutdown, no commit, no flush."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        self.stop()
        assert self.process is None or not psutil.pid_exists(self.process.pid) or \
            psutil.Process(self.process.pid).status() == psutil.STATUS_ZOMBIE


def worker_settings(base: Settings, tmp: Path, name: str, model: Path, **changes) -> Settings:
    return base.replace(state_dir=str(tmp / "state"), worker_name=name, web_port=free_port(), model_path=str(model),
                        **changes)


def write_marketplaces(path: Path, target: float) -> Path:
    path.write_text(json.dumps({code: {"target_damage_rate": target} for code in ("NA", "EU", "JP")}))
    return path
