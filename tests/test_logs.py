"""When JSON logs are asked for (PACKWISE_LOG_FORMAT=json, or auto into a file or pipe), every line a packwise
process writes is one JSON object: packwise's own structlog events and the lines Faust, mode and aiokafka
log through the standard library alike, each at its own level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.topics import create_topics
from streams.workers import READY
from tests.harness import WorkerProcess, worker_settings

EVERY_KIND_OF_LINE = """
import logging, warnings
from streams.logs import configure_logging, get_logger

configure_logging()
get_logger("packwise.worker").info("deliveries", fast=3)
for name in ("faust.worker", "mode.services", "aiokafka.consumer"):
    logging.getLogger(name).warning("%s says\\nover two lines", name)
logging.getLogger("aiokafka.conn").info("below the libraries' level in a tool: not shown")
warnings.warn("a library's warning")
"""


def json_records(text: str) -> list[dict]:
    """Every line of `text` as a JSON object; a line that is not one fails the test, named."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return records


def test_auto_into_a_pipe_writes_every_line_as_json() -> None:
    result = subprocess.run([sys.executable, "-c", EVERY_KIND_OF_LINE], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PACKWISE_LOG_FORMAT": "auto", "PACKWISE_LOG_LEVEL": "info"})
    assert result.returncode == 0, result.stderr
    records = json_records(result.stdout + result.stderr)
    by_logger = {record["logger"]: record for record in records}
    assert by_logger["packwise.worker"]["event"] == "deliveries" and by_logger["packwise.worker"]["fast"] == 3
    assert by_logger["packwise.worker"]["level"] == "info"  # its own level, not a wrapper's
    for name in ("faust.worker", "mode.services", "aiokafka.consumer"):
        assert by_logger[name]["event"] == f"{name} says\nover two lines" and by_logger[name]["level"] == "warning"
    assert "a library's warning" in by_logger["py.warnings"]["event"]
    assert "aiokafka.conn" not in by_logger
    assert all("timestamp" in record for record in records)


@pytest.mark.kafka
def test_a_worker_asked_for_json_writes_nothing_else(kafka_settings: Settings, tmp_path: Path,
                                                     trained_bundle: Path) -> None:
    settings = worker_settings(kafka_settings, tmp_path, "worker-0", trained_bundle)
    create_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")  # stdout and stderr, with PACKWISE_LOG_FORMAT=json
    try:
        worker.start()
    finally:
        worker.stop()
    records = json_records(worker.log_path.read_text().split("=== start 1 ===\n", 1)[1])
    loggers = {record["logger"].split(".")[0] for record in records}
    assert {"packwise", "faust", "aiokafka"} <= loggers, loggers
    assert any(READY in record["event"] for record in records)  # what WorkerProcess waits for still shows
    deliveries = [record for record in records if record["event"] == "deliveries"]  # logged as the worker stops
    assert deliveries and deliveries[0]["level"] == "info"


@pytest.mark.kafka
def test_a_quiet_json_worker_draws_no_spinner(kafka_settings: Settings, tmp_path: Path, trained_bundle: Path) -> None:
    """At WARNING Faust would draw its startup spinner, cursor escapes included, into a file as well."""
    settings = worker_settings(kafka_settings, tmp_path, "worker-0", trained_bundle, log_level="WARNING")
    create_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.start(wait_ready_s=None)  # nothing says Ready at WARNING: the web server answering says it runs
        deadline = time.monotonic() + 120
        while worker.process.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        assert worker.process.poll() is None, worker.log_path.read_text()[-2000:]
    finally:
        worker.stop()
    text = worker.log_path.read_text().split("=== start 1 ===\n", 1)[1]
    assert "\x1b" not in text and "\b" not in text, repr(text[:300])
    json_records(text)
