"""Every contract through the real broker: produced with confluent-kafka, consumed with aiokafka."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer

from streams.serde import CONTRACTS, Serde
from streams.settings import Settings
from streams.topics import create_topics, topic_specs
from tests.samples import SAMPLES

pytestmark = pytest.mark.kafka


async def _consume_all(bootstrap: str, topics: list[str], expected: int, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    messages = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(messages) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    messages.extend(batch)
    finally:
        await consumer.stop()
    return messages


def test_every_contract_round_trips_through_the_broker(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    serde = Serde()
    topic_of = {spec.contract: spec.name for spec in topic_specs(kafka_settings)}
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers, "enable.idempotence": True})
    for contract in CONTRACTS:
        key = SAMPLES[contract].get("product_id", "dead-letter").encode()
        producer.produce(topic_of[contract], key=key, value=serde.encode(contract, SAMPLES[contract]))
    assert producer.flush(30) == 0

    contract_of = {name: contract for contract, name in topic_of.items()}
    messages = asyncio.run(_consume_all(kafka_settings.bootstrap_servers, sorted(contract_of), len(CONTRACTS)))
    decoded = {contract_of[m.topic]: serde.decode(contract_of[m.topic], m.value) for m in messages}
    assert decoded == SAMPLES
    assert {m.key for m in messages if contract_of[m.topic] != "dead_letter"} == {b"B07XJ8C8F5"}


def test_same_product_lands_on_same_partition_of_every_input(kafka_settings: Settings) -> None:
    """Invariant 1: co-partitioned inputs, so one worker owns every event of a product."""
    create_topics(kafka_settings)
    inputs = [spec.name for spec in topic_specs(kafka_settings) if spec.role.value == "input"]
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    delivered: dict[tuple[str, str], int] = {}

    def remember(error, message) -> None:
        assert error is None
        delivered[(message.topic(), message.key().decode())] = message.partition()

    products = [f"P{i:04d}" for i in range(40)]
    for topic in inputs:
        for product in products:
            producer.produce(topic, key=product.encode(), value=b"x", on_delivery=remember)
    assert producer.flush(30) == 0
    for product in products:
        assert len({delivered[(topic, product)] for topic in inputs}) == 1
    assert len({delivered[(inputs[0], p)] for p in products}) == kafka_settings.partitions
