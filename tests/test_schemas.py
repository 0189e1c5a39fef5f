"""The event contracts in schemas/: documented, keyed by product, and evolvable both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from streams.policy import ChosenBy
from streams.serde import CONTRACTS, DEFAULT_SCHEMAS_DIR, Serde, SerdeError, load_schema_files, register_contracts
from tests.samples import SAMPLES


def _fields(schema: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every field of every record in a schema, nested ones included."""
    if isinstance(schema, dict):
        for field in schema.get("fields", []):
            yield f"{path}{field['name']}", field
            yield from _fields(field["type"], f"{path}{field['name']}.")
        for key in ("items", "values"):
            if key in schema:
                yield from _fields(schema[key], path)
    elif isinstance(schema, list):
        for branch in schema:
            yield from _fields(branch, path)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_contract_is_documented_and_namespaced(contract: str) -> None:
    schema = load_schema_files()[contract][-1]
    assert schema["namespace"] == "dev.packwise.events"
    assert schema.get("doc")
    undocumented = [name for name, field in _fields(schema) if not field.get("doc")]
    assert undocumented == []


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c != "dead_letter"])
def test_events_carry_event_id_product_key_and_event_time(contract: str) -> None:
    fields = dict(_fields(load_schema_files()[contract][-1]))
    assert fields["event_id"]["type"] == "string"
    assert fields["product_id"]["type"] == "string"
    timestamp = {"type": "long", "logicalType": "timestamp-millis"}
    times = [f["type"] for name, f in fields.items() if name.endswith("_at")]
    # an event has its time; a later moment it may not have yet (a test request's closed_at) is optional
    assert timestamp in times and all(t in (timestamp, ["null", timestamp]) for t in times)


def _evolved(schema: dict[str, Any]) -> dict[str, Any]:
    """The next version of a contract: one optional field with a default, the one compatible change."""
    new = json.loads(json.dumps(schema))
    new["fields"].append({"name": "origin_system", "type": ["null", "string"], "default": None,
                          "doc": "System that produced the event, if known."})
    return new


def _schemas_dir(tmp_path: Path, contract: str, history: list[dict], current: dict) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, target)
    (target / "history" / contract).mkdir(parents=True, exist_ok=True)
    for number, version in enumerate(history, start=1):
        (target / "history" / contract / f"v{number}.avsc").write_text(json.dumps(version))
    (target / f"{contract}.avsc").write_text(json.dumps(current))
    return target


@pytest.mark.parametrize("contract", CONTRACTS)
def test_new_reader_reads_old_data_embedded(tmp_path: Path, contract: str) -> None:
    """Backward: after an upgrade, messages written before it still decode (old version kept in history)."""
    v1 = load_schema_files()[contract][-1]
    old_bytes = Serde().encode(contract, SAMPLES[contract])
    upgraded = Serde(_schemas_dir(tmp_path, contract, [v1], _evolved(v1)))
    assert upgraded.decode(contract, old_bytes) == {**SAMPLES[contract], "origin_system": None}


@pytest.mark.parametrize("contract", CONTRACTS)
def test_old_reader_reads_new_data_through_registry(tmp_path: Path, contract: str, strict_registry) -> None:
    """Forward: a worker not yet upgraded reads what an upgraded producer writes, finding the new schema by
    id in the registry and dropping the field it does not know."""
    url = strict_registry.url
    subjects = {name: f"{name}-topic-value" for name in CONTRACTS}
    v1 = load_schema_files()[contract][-1]
    evolved = _schemas_dir(tmp_path, contract, [], _evolved(v1))
    register_contracts(url, {name: [subject] for name, subject in subjects.items()})  # the deploy of v1
    register_contracts(url, {name: [subject] for name, subject in subjects.items()}, evolved)  # the upgrade's
    new_writer = Serde(evolved, registry_url=url, subjects=subjects)
    old_reader = Serde(registry_url=url, subjects=subjects)
    data = new_writer.encode(contract, {**SAMPLES[contract], "origin_system": "wms-7"})
    assert old_reader.decode(contract, data) == SAMPLES[contract]
    # The same bytes also round-trip on the new side, field kept.
    assert new_writer.decode(contract, data)["origin_system"] == "wms-7"


def test_incompatible_change_is_caught(tmp_path: Path) -> None:
    """A required field without a default cannot read old data: the evolution rule the tests above rely on."""
    v1 = load_schema_files()["shipment"][-1]
    breaking = json.loads(json.dumps(v1))
    breaking["fields"].append({"name": "carrier", "type": "string", "doc": "Carrier code."})
    old_bytes = Serde().encode("shipment", SAMPLES["shipment"])
    with pytest.raises(SerdeError, match="wrong_contract: .*No default value for field carrier"):
        Serde(_schemas_dir(tmp_path, "shipment", [v1], breaking)).decode("shipment", old_bytes)


def test_a_test_request_from_before_the_lifecycle_reads_as_open_with_no_request_id(tmp_path: Path) -> None:
    """`packwise watch` tells such a request (which no record closes) by its missing request_id."""
    v1 = load_schema_files()["test_request"][0]
    assert "status" not in {field["name"] for field in v1["fields"]}
    old = {k: v for k, v in SAMPLES["test_request"].items() if k in {field["name"] for field in v1["fields"]}}
    old_bytes = Serde(_schemas_dir(tmp_path, "test_request", [], v1)).encode("test_request", old)
    assert Serde().decode("test_request", old_bytes) == {**old, "status": "open", "request_id": None,
                                                         "closed_at": None, "reason": None, "superseded_by": None}


def test_a_decision_from_before_chosen_by_reads_as_chosen_by_unknown(tmp_path: Path) -> None:
    """How its type was chosen was not recorded: `unknown`, never a guess such as safe_default, so a dataset
    never counts its shipments as honest evidence."""
    v3 = load_schema_files()["pack_type_decision"][-2]
    names = {field["name"] for field in v3["fields"]}
    assert "chosen_by" not in names and "all_box_weight_g" in names
    old = {k: v for k, v in SAMPLES["pack_type_decision"].items() if k in names}
    old_bytes = Serde(_schemas_dir(tmp_path, "pack_type_decision", [], v3)).encode("pack_type_decision", old)
    assert Serde().decode("pack_type_decision", old_bytes) == {**old, "chosen_by": "unknown", "audit_propensity": None}


def test_the_contract_names_every_way_the_policy_chooses_a_type() -> None:
    schema = load_schema_files()["pack_type_decision"][-1]
    [field] = [f for f in schema["fields"] if f["name"] == "chosen_by"]
    assert field["type"]["symbols"] == [c.value for c in ChosenBy]
    assert field["default"] == field["type"]["default"] == ChosenBy.UNKNOWN.value  # a symbol added later reads so
