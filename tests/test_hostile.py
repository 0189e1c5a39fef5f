"""The hostile corpus (tests/hostile.py) against the Processor: every bad message becomes one dead letter with its
coordinates and a reason, every good message around it is applied exactly once, and nothing raises."""

from __future__ import annotations

import uuid

import pytest

from streams.marketplaces import DEFAULT_MARKETPLACES
from streams.processor import Incoming, Processor, Tables
from streams.serde import Serde
from streams.settings import Settings
from tests.hostile import BASES, conflicting_duplicate, corpus
from tests.samples import SAMPLES, T0

SERDE = Serde()


@pytest.fixture
def processor() -> Processor:
    return Processor(Settings(), SERDE, DEFAULT_MARKETPLACES, Tables(), clock=lambda: T0.timestamp() + 3600)


def run(processor: Processor, contract: str, batch: list[Incoming]) -> list:
    if contract in ("shipment", "damage_report", "test_result"):
        return processor.on_damage_events(batch) + processor.decide_changed()
    if contract == "tunnel_capture":
        return processor.on_captures(batch)[0]
    return processor.on_catalog(batch)[0]


def test_every_hostile_message_is_dead_lettered_and_the_good_ones_around_it_applied(processor: Processor) -> None:
    hostile = corpus(SERDE)
    assert len(hostile) > 70
    goods: dict[str, int] = {}
    for contract, base in BASES.items():
        topic = processor.topics.__dict__[{"tunnel_capture": "captures", "catalog_update": "catalog",
                                           "shipment": "shipments", "damage_report": "damage_reports",
                                           "test_result": "test_results"}[contract]]
        batch, expected = [], {}
        offset = 0
        for item in (h for h in hostile if h.contract == contract):
            good = SERDE.encode(contract, {**SAMPLES[contract], "event_id": str(uuid.uuid4())})
            batch.append(Incoming(topic, 1, offset, SAMPLES[contract]["product_id"].encode(), good))
            batch.append(Incoming(topic, 1, offset + 1, item.key, item.value))
            expected[offset + 1] = item
            offset += 2
        goods[contract] = len(expected)
        letters = [m for m in run(processor, contract, batch) if m.topic == topic + ".dlq"]
        records = {r["offset"]: r for r in (SERDE.decode("dead_letter", m.value) for m in letters)}
        assert sorted(records) == sorted(expected), f"{contract}: dead letters at offsets {sorted(records)}"
        for offset, item in expected.items():
            record = records[offset]
            assert (record["topic"], record["partition"], record["original_value"]) == (topic, 1, item.value)
            assert item.reason in record["reason"], f"{contract} / {item.label}: {record['reason']}"
    product = SAMPLES["shipment"]["product_id"]
    stats = processor.stats(product)
    assert sum(stats["shipments"]) == goods["shipment"] and sum(stats["damages"]) == goods["damage_report"]
    assert product in processor.tables.catalog and product in processor.tables.captures


@pytest.mark.parametrize("contract", ["shipment", "damage_report"])
def test_a_resend_is_silent_and_a_conflicting_one_is_a_dead_letter(processor: Processor, contract: str) -> None:
    topic = processor.topics.shipments if contract == "shipment" else processor.topics.damage_reports
    key = SAMPLES[contract]["product_id"].encode()
    first, conflicting = conflicting_duplicate(SERDE, contract)
    out = run(processor, contract, [Incoming(topic, 0, 0, key, first), Incoming(topic, 0, 1, key, first),
                                    Incoming(topic, 0, 2, key, conflicting)])
    [letter] = [SERDE.decode("dead_letter", m.value) for m in out if m.topic == topic + ".dlq"]
    assert letter["offset"] == 2 and letter["reason"].startswith("conflicting_duplicate")
    stats = processor.stats(key.decode())
    assert sum(stats["shipments" if contract == "shipment" else "damages"]) == 1


@pytest.mark.parametrize("contract", list(BASES))
def test_ids_at_their_limit_are_accepted(processor: Processor, contract: str) -> None:
    """The corpus sends ids one character past the limit; at the limit they are events like any other."""
    from streams.validation import MAX_EVENT_ID, MAX_PRODUCT_ID

    topic = processor.topics.__dict__[{"tunnel_capture": "captures", "catalog_update": "catalog",
                                       "shipment": "shipments", "damage_report": "damage_reports",
                                       "test_result": "test_results"}[contract]]
    product = "P" * MAX_PRODUCT_ID
    value = SERDE.encode(contract, {**SAMPLES[contract], "product_id": product, "event_id": "e" * MAX_EVENT_ID})
    out = run(processor, contract, [Incoming(topic, 0, 0, product.encode(), value)])
    assert [m for m in out if m.topic.endswith(".dlq")] == []
