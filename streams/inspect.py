"""Read a worker table from its changelog topic (the latest value of every key) or a whole topic, as any
other consumer of the cluster can. Used by the demo's summary and by the tests that compare state with ground truth."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from confluent_kafka import Consumer, TopicPartition

from streams.serde import Serde
from streams.settings import Settings
from streams.state import codec_for, decode_key
from streams.topics import client_config


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def read_table(settings: Settings, table: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Every key of `table` with its latest value (deleted keys left out), as the worker's state layer
    decodes it: dicts, or wire bytes for the tables that keep events whole."""
    decode = codec_for(table).decode
    values: dict[str, Any] = {}
    for key, value in _read_all(settings, changelog_topic(settings, table), timeout_s):
        if value is None:
            values.pop(decode_key(key), None)
        else:
            values[decode_key(key)] = decode(value)
    return values


def read_local_state(worker_dir: Path, table: str) -> dict[str, Any]:
    """Every key of `table` in a stopped worker's own RocksDB stores (all partitions it holds, standbys
    included), decoded as read_table decodes the changelog: what that worker would start from."""
    import rocksdict

    decode = codec_for(table).decode
    values: dict[str, Any] = {}
    for path in sorted(worker_dir.glob(f"**/tables/{table}-*.db")):
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            for key, value in db.items():
                if not key.startswith(b"__faust"):
                    values[decode_key(key)] = decode(value)
        finally:
            db.close()
    return values


def product_stats(products: Mapping[str, Any], legacy: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """Each product's evidence (shipments and damages per package type, test outcomes, what was applied) from
    the worker's products table, which keeps it under "stats"; `legacy`: the damage_stats table, where an older
    worker kept it, for the products that got no event since."""
    stats = dict(legacy or {})
    stats.update((product, value["stats"]) for product, value in products.items() if "stats" in value)
    return stats


def read_stats(settings: Settings, timeout_s: float = 30.0) -> dict[str, dict]:
    """Every product's evidence, read from the changelogs (see product_stats)."""
    return product_stats(read_table(settings, "products", timeout_s), read_table(settings, "damage_stats", timeout_s))


def read_local_stats(worker_dir: Path) -> dict[str, dict]:
    """Every product's evidence in a stopped worker's own stores (see product_stats and read_local_state)."""
    return product_stats(read_local_state(worker_dir, "products"), read_local_state(worker_dir, "damage_stats"))


def read_topic(settings: Settings, topic: str, contract: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every record on `topic` so far, decoded as `contract` (tombstones left out), in partition order."""
    serde = Serde.for_settings(settings)
    return [serde.decode(contract, value) for _, value in _read_all(settings, topic, timeout_s) if value is not None]


def _read_all(settings: Settings, topic: str, timeout_s: float) -> list[tuple[bytes, bytes | None]]:
    """(key, value) of every message on `topic` up to its end when called."""
    consumer = Consumer(client_config(settings, **{"group.id": f"packwise-inspect-{uuid.uuid4().hex}",
                                                   "enable.auto.commit": False}))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        messages: list[tuple[bytes, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            messages.append((message.key(), message.value()))
            if message.offset() + 1 >= ends[message.partition()]:
                remaining.discard(message.partition())
        return messages
    finally:
        consumer.close()
