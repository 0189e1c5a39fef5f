"""Operator mistakes end in one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams.errors import PackwiseError
from streams.settings import Settings, reference_table


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [("PACKWISE_PARTITIONS", "zero", "an integer >= 1"), ("PACKWISE_KAFKA_PORT", "70000", "1-65535"),
     ("PACKWISE_LOG_FORMAT", "xml", "auto, json or console")],
)
def test_bad_setting_names_the_variable_and_accepted_values(variable: str, value: str, accepted: str) -> None:
    result = run_cli("config", **{variable: value})
    assert result.returncode == 2
    assert result.stderr == f"packwise: {variable}='{value}' is not valid: expected {accepted}\n"


def test_unreachable_broker_names_the_address() -> None:
    result = run_cli("topics", "list", PACKWISE_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.startswith("packwise: cannot reach Kafka at 127.0.0.1:1")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_settings_read_from_environment_and_bootstrap_follows_local_port() -> None:
    settings = Settings.from_env({"PACKWISE_KAFKA_PORT": "19092", "PACKWISE_PARTITIONS": "12"})
    assert settings.bootstrap_servers == "127.0.0.1:19092" and settings.partitions == 12
    explicit = Settings.from_env({"PACKWISE_BOOTSTRAP_SERVERS": "kafka-0:9092,kafka-1:9092"})
    assert explicit.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    with pytest.raises(PackwiseError, match="PACKWISE_REPLICATION_FACTOR='-1'"):
        Settings.from_env({"PACKWISE_REPLICATION_FACTOR": "-1"})


def test_every_setting_is_documented() -> None:
    rows = reference_table()
    assert all(name.startswith("PACKWISE_") and doc.endswith(".") for name, _, doc in rows)
    assert len({name for name, _, _ in rows}) == len(rows)
