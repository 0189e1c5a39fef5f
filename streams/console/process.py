"""`packwise console` as a child process, for the integration tests and the benchmark: started with the
environment that reproduces a Settings object, waited for until it has caught up with the topics, stopped by
its pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from streams.errors import PackwiseError
from streams.settings import Settings
from streams.workers import settings_env, stop_process


class ConsoleProcess:
    def __init__(self, settings: Settings, log_path: Path, token: str | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.token = token
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = self.settings.console_host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.settings.console_port}"

    def start(self) -> None:
        env = {**os.environ, **settings_env(self.settings), "PACKWISE_LOG_FORMAT": "json"}
        if self.token is not None:
            env["PACKWISE_CONSOLE_TOKEN"] = self.token
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "console"], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def health(self) -> dict | None:
        request = urllib.request.Request(self.url + "/healthz")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.loads(response.read())
        except Exception:
            return None

    def wait_caught_up(self, timeout_s: float = 120.0) -> float:
        """Seconds from now until the console has read every partition to the end it had."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise PackwiseError(f"the console exited ({self.process.returncode}): "
                                    + self.log_path.read_text(errors="replace")[-1500:])
            health = self.health()
            if health and health.get("caught_up"):
                return time.monotonic() - started
            time.sleep(0.1)
        self.stop()
        raise PackwiseError(f"the console did not catch up within {timeout_s:.0f}s (log {self.log_path})")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 30)

    def gone(self) -> bool:
        if self.process is None or not psutil.pid_exists(self.process.pid):
            return True
        return psutil.Process(self.process.pid).status() == psutil.STATUS_ZOMBIE

    def rss_mib(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20
