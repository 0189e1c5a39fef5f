"""Schema Registry discipline, against a registry that enforces compatibility (tests/registry.py): processes
only read the registry; the deploy step registers the contracts; a message written with a schema that is not
a readable version of its topic's contract goes to the dead-letter topic as `wrong_contract`."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest

from streams.errors import PackwiseError
from streams.marketplaces import DEFAULT_MARKETPLACES
from streams.processor import Incoming, Processor, Tables
from streams.serde import (COMPATIBILITY, CONTRACTS, SUBJECT_NAMING, RegistryUnavailable, Serde, SerdeError,
                           WrongContract, load_schema_files, register_contracts)
from streams.settings import Settings
from streams.topics import contract_subjects
from tests.samples import SAMPLES, T0

SETTINGS = Settings(topic_prefix="reg.")
ORDER = {"type": "record", "name": "Order", "namespace": "com.acme", "doc": "another team's order",
         "fields": [{"name": "order_id", "type": "string"}, {"name": "amount", "type": "double"}]}


def deployed(registry) -> Serde:
    """The registry after `packwise schemas register`, and a worker's Serde on it."""
    register_contracts(registry.url, contract_subjects(SETTINGS))
    registry.requests.clear()
    return Serde.for_settings(SETTINGS.replace(schema_registry_url=registry.url))


def written_with(registry, subject: str, schema: dict, record: dict) -> bytes:
    """A message as another team's producer writes it: its schema registered under its own subject."""
    status, answer = registry.register(subject, json.dumps(schema))
    assert status == 200, answer
    out = io.BytesIO(struct.pack(">bI", 0, answer["id"]))
    out.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(schema)), record)
    return out.getvalue()


def test_a_third_party_schema_is_a_wrong_contract_and_nothing_is_registered(strict_registry) -> None:
    serde = deployed(strict_registry)
    data = written_with(strict_registry, "com.acme.Order", ORDER, {"order_id": "o-1", "amount": 9.5})
    versions_before = copy.deepcopy(strict_registry.subjects)
    with pytest.raises(WrongContract, match="wrong_contract: shipment message was written with schema id .* of "
                                            "'com.acme.Order', not a version of 'dev.packwise.events.Shipment'"):
        serde.decode("shipment", data)
    assert strict_registry.writes() == []
    assert strict_registry.subjects == versions_before
    # a second message with the same id costs no second registry call
    calls = len(strict_registry.requests)
    with pytest.raises(WrongContract):
        serde.decode("shipment", data)
    with pytest.raises(WrongContract, match="wrong_contract: damage_report message .* not a version of "
                                            "'dev.packwise.events.DamageReport'"):
        serde.decode("damage_report", data)
    assert len(strict_registry.requests) == calls


def test_the_worker_dead_letters_a_wrong_contract_and_counts_the_events_around_it(strict_registry) -> None:
    serde = deployed(strict_registry)
    processor = Processor(SETTINGS, serde, DEFAULT_MARKETPLACES, Tables(), clock=lambda: T0.timestamp() + 60)
    shipment = SAMPLES["shipment"]
    product = shipment["product_id"].encode()
    good = [serde.encode("shipment", {**shipment, "event_id": f"e-{i}"}) for i in range(2)]
    bad = written_with(strict_registry, "com.acme.Order", ORDER, {"order_id": "o-1", "amount": 9.5})
    topic = processor.topics.shipments
    out = processor.on_damage_events([Incoming(topic, 0, 10, product, good[0]), Incoming(topic, 0, 11, product, bad),
                                      Incoming(topic, 0, 12, product, good[1])])
    [letter] = out
    assert letter.topic == topic + ".dlq"
    record = serde.decode("dead_letter", letter.value)
    assert record["error_type"] == "WrongContract" and record["reason"].startswith("wrong_contract:")
    assert (record["topic"], record["partition"], record["offset"], record["original_value"]) == (topic, 0, 11, bad)
    stats = processor.stats(shipment["product_id"])
    assert sum(stats["shipments"]) == 2
    assert strict_registry.writes() == []


def test_an_evolved_version_from_another_producer_is_read_without_registering(strict_registry) -> None:
    serde = deployed(strict_registry)
    evolved = copy.deepcopy(load_schema_files()["shipment"][-1])
    evolved["fields"].append({"name": "carrier", "type": ["null", "string"], "default": None, "doc": "Carrier."})
    shipment = SAMPLES["shipment"]
    # compatible with the contract: the registry takes it as a new version of the topic's own subject
    data = written_with(strict_registry, "reg.shipments-value", evolved, {**shipment, "carrier": "UPS"})
    versions = len(strict_registry.subjects["reg.shipments-value"])
    strict_registry.requests.clear()
    assert serde.decode("shipment", data) == shipment
    assert strict_registry.writes() == []
    assert len(strict_registry.subjects["reg.shipments-value"]) == versions
    assert len(strict_registry.subjects) == len({s for names in contract_subjects(SETTINGS).values() for s in names})


def test_a_same_named_schema_that_does_not_resolve_is_a_wrong_contract(strict_registry) -> None:
    serde = deployed(strict_registry)
    broken = copy.deepcopy(load_schema_files()["shipment"][-1])
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "marketplace"]  # a required field dropped
    record = {k: v for k, v in SAMPLES["shipment"].items() if k != "marketplace"}
    # the topic's subject refuses it (COMPATIBILITY); a producer that registered it elsewhere still wrote it
    status, answer = strict_registry.register("reg.shipments-value", json.dumps(broken))
    assert status == 409 and answer["error_code"] == 409
    strict_registry.config["rogue-shipment"] = "NONE"
    data = written_with(strict_registry, "rogue-shipment", broken, record)
    with pytest.raises(WrongContract, match="wrong_contract: .*does not resolve.*marketplace"):
        serde.decode("shipment", data)


def test_an_unknown_schema_id_is_a_serde_error_and_a_silent_registry_stops_the_worker(strict_registry) -> None:
    serde = deployed(strict_registry)
    unknown = struct.pack(">bI", 0, 99_999) + b"\x00"
    with pytest.raises(SerdeError, match="unknown schema id 99999"):
        serde.decode("shipment", unknown)
    calls = len(strict_registry.requests)
    # remembered: the same id on another topic costs no call, and its reason names that topic's contract
    with pytest.raises(SerdeError, match="^damage_report message has unknown schema id 99999"):
        serde.decode("damage_report", unknown)
    assert len(strict_registry.requests) == calls
    strict_registry.stop()  # a registry that does not answer says nothing about the message: no dead letter
    with pytest.raises(RegistryUnavailable, match="did not answer"):
        serde.decode("shipment", struct.pack(">bI", 0, 12_345) + b"\x00")


def test_a_process_on_an_empty_registry_names_the_deploy_step(strict_registry) -> None:
    serde = Serde.for_settings(SETTINGS.replace(schema_registry_url=strict_registry.url))
    assert strict_registry.writes() == []
    with pytest.raises(PackwiseError, match="run `packwise schemas register`"):
        serde.require_registered(("pack_type_decision", "dead_letter"), "the worker")
    with pytest.raises(SerdeError, match="not registered"):
        serde.encode("dead_letter", SAMPLES["dead_letter"])


def _cli(*args: str, registry_url: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PACKWISE_SCHEMA_REGISTRY_URL": registry_url, "PACKWISE_TOPIC_PREFIX": "reg."}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def test_schemas_register_is_the_deploy_step(strict_registry, repo_root: Path, tmp_path: Path) -> None:
    result = _cli("schemas", "register", registry_url=strict_registry.url, cwd=repo_root)
    assert result.returncode == 0, result.stderr
    subjects = contract_subjects(SETTINGS)
    expected = sorted(s for names in subjects.values() for s in names)
    assert sorted(strict_registry.subjects) == expected
    assert all(strict_registry.config[subject] == COMPATIBILITY for subject in expected)
    shipped = load_schema_files()
    for contract, names in subjects.items():
        for subject in names:  # every shipped version, oldest first, the current one last
            latest = json.loads(strict_registry.schemas[strict_registry.subjects[subject][-1] - 1])
            assert latest == shipped[contract][-1]
            assert len(strict_registry.subjects[subject]) == len(shipped[contract])
    assert "reg.shipments-value: shipment" in result.stdout
    # safe to repeat: nothing new
    again = _cli("schemas", "register", registry_url=strict_registry.url, cwd=repo_root)
    assert again.returncode == 0 and sum(map(len, strict_registry.subjects.values())) == \
        sum(len(shipped[c]) * len(n) for c, n in subjects.items())

    # an incompatible change to a contract is refused, in one line
    breaking = tmp_path / "schemas"
    shutil.copytree(repo_root / "schemas", breaking)
    shipment = json.loads((breaking / "shipment.avsc").read_text())
    shipment["fields"].append({"name": "carrier", "type": "string", "doc": "Carrier code."})
    (breaking / "shipment.avsc").write_text(json.dumps(shipment))
    refused = _cli("schemas", "register", "--schemas", str(breaking), registry_url=strict_registry.url, cwd=repo_root)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "refused contract 'shipment'" in refused.stderr and "subject 'reg.shipments-value'" in refused.stderr
    assert "incompatible" in refused.stderr


def test_schemas_register_needs_a_registry(repo_root: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "streams.cli", "schemas", "register"], capture_output=True,
                            text=True, timeout=60, cwd=repo_root,
                            env={k: v for k, v in os.environ.items() if k != "PACKWISE_SCHEMA_REGISTRY_URL"})
    assert result.returncode == 2 and "no Schema Registry configured" in result.stderr


def test_readme_documents_subject_naming_and_compatibility(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    section = readme[readme.index("## Schema Registry"):]
    section = section[:section.index("\n## ", 1)]
    assert SUBJECT_NAMING in section and COMPATIBILITY in section and "packwise schemas register" in section
    assert "wrong_contract" in section


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_shipped_history_keeps_the_compatibility_level(contract: str, strict_registry) -> None:
    """The contracts' own history passes the registry's check at the level they promise."""
    strict_registry.config["s"] = COMPATIBILITY
    for schema in load_schema_files()[contract]:
        status, answer = strict_registry.register("s", json.dumps(schema))
        assert status == 200, answer
