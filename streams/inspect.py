"""Read a worker table from its changelog topic, as any other consumer of the cluster can: the latest
value of every key. Used by the demo's summary and by the tests that compare state with ground truth."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.settings import Settings
from streams.topics import client_config


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def read_table(settings: Settings, table: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Every key of `table` with its latest JSON value (deleted keys left out)."""
    topic = changelog_topic(settings, table)
    consumer = Consumer(client_config(settings, **{"group.id": f"packwise-inspect-{uuid.uuid4().hex}",
                                                   "enable.auto.commit": False}))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        values: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            key = json.loads(message.key())
            if message.value() is None:
                values.pop(key, None)
            else:
                values[key] = json.loads(message.value())
            if message.offset() + 1 >= ends[message.partition()]:
                remaining.discard(message.partition())
        return values
    finally:
        consumer.close()
