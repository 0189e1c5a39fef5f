"""The simulator's producer refuses what the brokers would refuse, before anything is sent."""

from __future__ import annotations

import pytest

from streams.errors import PackwiseError
from streams.simulator import produce_keyed


class RecordingProducer:
    """Stands in for confluent_kafka.Producer: records what it was asked to send."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic: str, key: bytes | None = None, value: bytes = b"", on_delivery=None) -> None:
        self.produced.append((topic, key, value))

    def poll(self, timeout: float = 0) -> int:
        return 0


@pytest.mark.parametrize("product_id", [None, ""])
def test_a_record_without_a_product_id_is_refused_before_sending(product_id: str | None) -> None:
    producer = RecordingProducer()
    with pytest.raises(PackwiseError, match="without a product id to catalog-updates"):
        produce_keyed(producer, "catalog-updates", product_id, b"record")
    assert producer.produced == []


def test_a_record_is_keyed_by_its_product_id() -> None:
    producer = RecordingProducer()
    produce_keyed(producer, "shipments", "P-000042", b"record")
    assert producer.produced == [("shipments", b"P-000042", b"record")]
