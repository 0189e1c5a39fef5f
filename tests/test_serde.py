"""The Confluent wire format: every contract round-trips, and every kind of bad input says what is wrong."""

from __future__ import annotations

import struct

import pytest

from streams.serde import CONTRACTS, MAGIC_BYTE, Serde, SerdeError, embedded_schema_id, register_contracts
from tests.samples import SAMPLES


@pytest.fixture(scope="module")
def serde() -> Serde:
    return Serde()


def test_every_contract_has_a_sample() -> None:
    assert set(SAMPLES) == set(CONTRACTS)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_round_trip_in_confluent_wire_format(serde: Serde, contract: str) -> None:
    data = serde.encode(contract, SAMPLES[contract])
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == MAGIC_BYTE
    assert schema_id == serde.contract(contract).schema_id
    assert serde.decode(contract, data) == SAMPLES[contract]


def test_embedded_ids_are_deterministic_and_distinct() -> None:
    first, second = Serde(), Serde()
    ids = [first.contract(name).schema_id for name in CONTRACTS]
    assert ids == [second.contract(name).schema_id for name in CONTRACTS]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**31 for i in ids)
    assert embedded_schema_id(first.contract("shipment").schema) == first.contract("shipment").schema_id


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda good: b"", "empty value"),
        (lambda good: b"\x01" + good[1:], "wrong magic byte 0x01"),
        (lambda good: b'{"product_id": "B07"}', "wrong magic byte 0x7b"),
        (lambda good: good[:3], "truncated: 3 bytes"),
        (lambda good: good[:1] + struct.pack(">I", 7) + good[5:], "unknown schema id 7"),
        (lambda good: good[: len(good) // 2], "truncated or corrupt"),
        (lambda good: good + b"\x00\x01", "2 bytes after the Avro body"),
    ],
    ids=["empty", "magic", "json", "short-header", "unknown-id", "truncated-body", "trailing-bytes"],
)
def test_malformed_input_raises_serde_error_naming_the_problem(serde: Serde, mangle, problem: str) -> None:
    good = serde.encode("shipment", SAMPLES["shipment"])
    with pytest.raises(SerdeError, match=problem):
        serde.decode("shipment", mangle(good))


def test_none_value_is_an_empty_value(serde: Serde) -> None:
    with pytest.raises(SerdeError, match="empty value"):
        serde.decode("shipment", None)


def test_message_of_another_contract_is_rejected(serde: Serde) -> None:
    data = serde.encode("damage_report", SAMPLES["damage_report"])
    with pytest.raises(SerdeError, match="not a version of 'dev.packwise.events.Shipment'"):
        serde.decode("shipment", data)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("package_type", "crate", "package_type is <crate>.*expected one of sioc, poly_bag, padded_mailer, box"),
        ("shipped_at", "yesterday", "shipped_at is <yesterday>.*expected timestamp-millis"),
        ("product_id", None, "product_id"),
    ],
)
def test_invalid_field_values_are_refused_at_encode(serde: Serde, field: str, value, problem: str) -> None:
    with pytest.raises(SerdeError, match=f"shipment record is invalid: .*{problem}"):
        serde.encode("shipment", {**SAMPLES["shipment"], field: value})


def test_a_refused_comment_is_not_quoted(serde: Serde) -> None:
    """A damage report's comment is the customer's own words: the error names the field and what was wrong
    with it, never the words (a producer logs the error)."""
    comment = "Henkel abgebrochen, Nachbar hat 0171 5551234"
    with pytest.raises(SerdeError) as refused:
        serde.encode("damage_report", {**SAMPLES["damage_report"], "comment": comment.encode()})
    assert "DamageReport.comment" in str(refused.value) and "bytes" in str(refused.value)
    assert "Henkel" not in str(refused.value)


def test_unknown_contract_is_named(serde: Serde) -> None:
    with pytest.raises(SerdeError, match="unknown contract 'parcel'"):
        serde.encode("parcel", {})


def test_schema_registry_ids_through_confluent_client(strict_registry) -> None:
    """With a registry URL the ids are looked up in the registry, once the deploy step has registered them."""
    subjects = {contract: f"{contract}-topic-value" for contract in CONTRACTS}
    register_contracts(strict_registry.url, {c: [s] for c, s in subjects.items()})
    registry = Serde(registry_url=strict_registry.url, subjects=subjects)
    embedded = Serde()
    data = registry.encode("shipment", SAMPLES["shipment"])
    schema_id = struct.unpack(">I", data[1:5])[0]
    assert schema_id == registry.contract("shipment").schema_id
    assert schema_id != embedded.contract("shipment").schema_id
    # A second process on the same registry finds the writer schema by id alone.
    fresh = Serde(registry_url=strict_registry.url, subjects=subjects)
    assert fresh.decode("shipment", data) == SAMPLES["shipment"]
