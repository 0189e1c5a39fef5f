"""`packwise worker` refuses to start on operator mistakes with one clear line and a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from streams.settings import Settings
from streams.topics import admin_client, create_topics
from tests.harness import settings_env


def worker(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run([sys.executable, "-m", "streams.cli", "worker", *args], env=env, capture_output=True,
                          text=True, timeout=180)


def assert_one_line(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in result.stderr


def test_no_model_given(tmp_path: Path) -> None:
    assert_one_line(worker(Settings(state_dir=str(tmp_path), model_path="")), "no model bundle given")


def test_missing_bundle(tmp_path: Path) -> None:
    result = worker(Settings(state_dir=str(tmp_path)), "--model", str(tmp_path / "nowhere"))
    assert_one_line(result, "cannot load the model", "nowhere", "does not exist")


def test_corrupt_bundle(tmp_path: Path, trained_bundle: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(trained_bundle, broken)
    weights = broken / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_one_line(worker(Settings(state_dir=str(tmp_path)), "--model", str(broken)),
                    "cannot load the model", "weights.pt")


def test_web_port_taken_by_another_worker(tmp_path: Path, trained_bundle: Path) -> None:
    with socket.socket() as other_worker:  # what a second worker on the same port finds: a listener
        other_worker.bind(("127.0.0.1", 0))
        other_worker.listen()
        port = other_worker.getsockname()[1]
        settings = Settings(state_dir=str(tmp_path), bootstrap_servers="127.0.0.1:1", model_path=str(trained_bundle),
                            web_port=port)
        assert_one_line(worker(settings), f"web port 127.0.0.1:{port} is already in use", "PACKWISE_WEB_PORT")


def test_unreachable_broker_after_bounded_retry(tmp_path: Path, trained_bundle: Path) -> None:
    settings = Settings(state_dir=str(tmp_path), bootstrap_servers="127.0.0.1:1", model_path=str(trained_bundle))
    assert_one_line(worker(settings), "cannot reach Kafka at 127.0.0.1:1")


@pytest.mark.kafka
def test_topics_missing(kafka_settings: Settings, tmp_path: Path, trained_bundle: Path) -> None:
    settings = kafka_settings.replace(state_dir=str(tmp_path), model_path=str(trained_bundle))
    assert_one_line(worker(settings), "topics missing on", "packwise topics create")


@pytest.mark.kafka
def test_partition_counts_that_break_co_partitioning(kafka_settings: Settings, tmp_path: Path,
                                                     trained_bundle: Path) -> None:
    settings = kafka_settings.replace(state_dir=str(tmp_path), model_path=str(trained_bundle))
    create_topics(settings)
    damage_reports = settings.topic_prefix + "damage-reports"
    admin = admin_client(settings)
    admin.delete_topics([damage_reports])[damage_reports].result()
    wrong = {}
    for _ in range(30):  # deletion completes asynchronously
        wrong = admin.create_topics([NewTopic(damage_reports, 1, 1)])
        try:
            wrong[damage_reports].result()
            break
        except Exception:
            time.sleep(0.5)
    for _ in range(30):  # and so does its metadata: the worker must see the new topic, not a missing one
        topic = admin.list_topics(damage_reports, timeout=5).topics.get(damage_reports)
        if topic is not None and topic.error is None and len(topic.partitions) == 1:
            break
        time.sleep(0.5)
    assert_one_line(worker(settings), f"{damage_reports} has 1 (expected 3)")


@pytest.mark.kafka
def test_contracts_not_registered(kafka_settings: Settings, tmp_path: Path, trained_bundle: Path,
                                  strict_registry) -> None:
    """Workers never register schemas: against a registry the deploy step has not filled, the worker names it."""
    settings = kafka_settings.replace(state_dir=str(tmp_path), model_path=str(trained_bundle),
                                      schema_registry_url=strict_registry.url)
    create_topics(settings)
    assert_one_line(worker(settings), "has no current version of the contract(s) pack_type_decision",
                    "run `packwise schemas register`")
    assert strict_registry.writes() == []


@pytest.mark.kafka
def test_a_model_that_fails_to_load_stops_the_worker_that_started_meanwhile(kafka_settings: Settings, tmp_path: Path,
                                                                           trained_bundle: Path) -> None:
    """The worker joins its group while the scoring process loads the model: weights that pass the manifest's
    checksums but that torch cannot read still stop it, with the reason last on its stderr and exit code 2."""
    from models.bundle_files import sha256

    broken = tmp_path / "unreadable"
    shutil.copytree(trained_bundle, broken)
    weights = broken / "weights.pt"
    weights.write_bytes(b"not a torch checkpoint\n" * 100)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["weights.pt"] = sha256(weights)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    settings = kafka_settings.replace(state_dir=str(tmp_path), model_path=str(broken))
    create_topics(settings)
    result = worker(settings)
    assert result.returncode == 2, result.stderr[-2000:]
    reason = result.stderr[result.stderr.rfind("packwise: "):]  # the last thing it says (torch's reason spans lines)
    assert reason.startswith("packwise: cannot load the model") and "unreadable" in reason, result.stderr[-2000:]
    assert "retrain with `packwise train" in reason
