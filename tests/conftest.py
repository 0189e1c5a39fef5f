"""Shared fixtures: a real Apache Kafka broker for the session, started by the project and stopped by pid.

Set PACKWISE_TEST_BOOTSTRAP=host:port to run the suite against a broker you started yourself instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from streams.broker import LocalBroker, free_port
from streams.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> str:
    given = os.environ.get("PACKWISE_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), free_port(), free_port(), heap="512m")
    status, _ = broker.start(echo=False)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        assert not psutil.pid_exists(status.pid) or psutil.Process(status.pid).status() == psutil.STATUS_ZOMBIE


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> LocalBroker:
    """A second session broker, secured as `packwise kafka start --secure` secures one: SASL_SSL on 127.0.0.1,
    SCRAM-SHA-512 users per role, the StandardAuthorizer (streams/secure_broker.py). Stopped by pid."""
    broker = LocalBroker(tmp_path_factory.mktemp("kafka-secure"), free_port(), free_port(), heap="512m", secure=True)
    status, _ = broker.start(echo=False)
    try:
        yield broker
    finally:
        broker.stop()
        assert not psutil.pid_exists(status.pid) or psutil.Process(status.pid).status() == psutil.STATUS_ZOMBIE


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> Settings:
    """Settings pointing at the session broker, with a topic prefix and app id (changelog topics) of their own
    so tests never collide."""
    from tests.harness import isolated_settings

    return isolated_settings(kafka_bootstrap)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle, trained once per session through the CLI on a small world (about a minute on 2
    cores). It is certified, as `packwise train` certifies by default, at the targets of the marketplaces in
    force: here those the worker tests run with (tests/harness.py TINY_MODEL_TARGETS, 3-5%), at which a small
    calibration split can certify light package types."""
    import subprocess
    import sys

    from tests.harness import TINY_MODEL_TARGETS, write_marketplaces

    folder = tmp_path_factory.mktemp("bundle")
    markets = write_marketplaces(folder / "marketplaces.json", TINY_MODEL_TARGETS)
    out = folder / "tiny"
    subprocess.run([sys.executable, "-m", "streams.cli", "train", "--out", str(out), "--products", "800",
                    "--epochs", "2", "--seed", "11"], env={**os.environ, "PACKWISE_MARKETPLACES_FILE": str(markets)},
                   check=True, timeout=900, stdout=subprocess.DEVNULL)
    return out


@pytest.fixture
def strict_registry():
    """A Schema Registry that enforces compatibility as Confluent's does (tests/registry.py), on 127.0.0.1."""
    from tests.registry import StrictRegistry

    registry = StrictRegistry()
    registry.url = registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:
    """Checks skipped for want of a tool (Chromium, Prometheus) end the run with a line nobody can miss."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "NOT RUN" in reason or "NOT CHECKED" in reason:
            reason = reason.removeprefix("Skipped: ")
            reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        terminalreporter.write_sep("!", f"{count} skipped: {reason}", red=True, bold=True)
