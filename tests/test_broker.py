"""`packwise kafka start | stop | status`: idempotent, by pid, with clear errors for a missing toolchain."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from streams.broker import LocalBroker, free_port, resolve_jars
from streams.errors import PackwiseError

pytestmark = pytest.mark.kafka


def packwise(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=180)


def test_start_twice_status_and_stop_by_pid(tmp_path: Path) -> None:
    env = {"PACKWISE_STATE_DIR": str(tmp_path), "PACKWISE_KAFKA_PORT": str(free_port()),
           "PACKWISE_KAFKA_CONTROLLER_PORT": str(free_port())}
    first = packwise(env, "kafka", "start")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("started: Kafka 4.4.0 is running at 127.0.0.1:")
    pid = int((tmp_path / "kafka" / "broker.pid").read_text())
    java = psutil.Process(pid)
    assert "kafka.Kafka" in java.cmdline()
    # Listens on loopback only.
    listening = {c.laddr.ip for c in java.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}

    second = packwise(env, "kafka", "start")
    assert second.returncode == 0 and second.stdout.startswith("already running: ")
    assert f"pid {pid}" in second.stdout
    assert packwise(env, "kafka", "status").returncode == 0

    stopped = packwise(env, "kafka", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(str(tmp_path) in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))

    again = packwise(env, "kafka", "stop")
    assert again.returncode == 0 and "not running" in again.stdout
    status = packwise(env, "kafka", "status")
    assert status.returncode == 3 and "not running" in status.stdout


def test_missing_java_is_one_line(tmp_path: Path) -> None:
    env = {"PACKWISE_STATE_DIR": str(tmp_path), "JAVA_HOME": str(tmp_path / "no-jdk"),
           "PACKWISE_KAFKA_PORT": str(free_port()), "PACKWISE_KAFKA_CONTROLLER_PORT": str(free_port())}
    result = packwise(env, "kafka", "start")
    assert result.returncode == 2
    assert result.stderr.startswith("packwise: Java 17+ is needed") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_missing_maven_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PackwiseError, match="Maven is needed once .* `mvn` was not found"):
        resolve_jars("0.0.1-not-resolved", echo=False)


def test_port_taken_by_another_program(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = LocalBroker(tmp_path, port, free_port())
        with pytest.raises(PackwiseError, match=f"port {port} on 127.0.0.1 is taken"):
            broker.start(echo=False)


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """StorageTool reads `-t -xyz` as an option: one generated id in 64 used to fail the format."""
    import uuid

    from streams import broker

    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" * 16)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    assert base64_first(uuid.UUID(bytes=b"\xf8" + bytes(15))) == "-"  # the draw that broke the format
    assert broker.new_cluster_id() == "EBAQEBAQEBAQEBAQEBAQEA"


def base64_first(value) -> str:
    import base64

    return base64.urlsafe_b64encode(value.bytes).decode()[0]
