"""docker-compose.kafka.yml: valid against the compose specification, same Kafka as the Maven broker."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import jsonschema
import yaml

from streams.broker import kafka_version
from streams.settings import Settings


# check-jsonschema vendors the compose-spec schema; no Docker engine runs here to ask instead. Read as a
# file: importing the package pulls in its CLI, which does not import beside faust's click.
COMPOSE_SPEC = json.loads(Path(metadata.distribution("check-jsonschema").locate_file(
    "check_jsonschema/builtin_schemas/vendor/compose-spec.json")).read_text())


def _compose(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "docker-compose.kafka.yml").read_text())


def test_compose_file_validates_against_the_compose_spec(repo_root: Path) -> None:
    validator = jsonschema.Draft202012Validator(COMPOSE_SPEC)
    errors = sorted(validator.iter_errors(_compose(repo_root)), key=str)
    assert errors == []


def test_validator_catches_a_broken_compose_file(repo_root: Path) -> None:
    broken = _compose(repo_root)
    broken["services"]["kafka"]["ports"] = {"not": "a list"}
    assert list(jsonschema.Draft202012Validator(COMPOSE_SPEC).iter_errors(broken))


def test_compose_runs_the_same_kafka_version_on_loopback(repo_root: Path) -> None:
    kafka = _compose(repo_root)["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    assert kafka["ports"] == [f"127.0.0.1:{Settings().kafka_port}:9092"]
