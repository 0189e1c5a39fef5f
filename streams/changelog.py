"""The Kafka side of the state layer (streams/state.py): Faust's stores and producer adapted to it, and the
consumer hook that makes a rebalance or a stop flush the state before it waits for unacknowledged events.

Faust still declares the tables (so their changelog topics exist and are co-partitioned), opens their
RocksDB stores for the partitions a worker owns, and restores them from the changelog on assignment,
standbys included. Every write goes through the state layer instead of Faust's table API: Faust would
write RocksDB at once and the changelog later, so local state could run ahead of the changelog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import faust

from streams.delivery import FastDeliveryConsumer
from streams.logs import get_logger

log = get_logger("packwise.worker")


class FaustStore:
    """A table's Faust store (RocksDB, or memory) read and written as raw bytes per partition."""

    def __init__(self, table: faust.Table) -> None:
        self.table = table

    @property
    def _store(self) -> Any:
        return self.table.data

    @property
    def on_disk(self) -> bool:
        return hasattr(self._store, "_db_for_partition")

    def get(self, partition: int, key: bytes) -> bytes | None:
        store = self._store
        if self.on_disk:
            return store._db_for_partition(partition).get(key)
        return store.data.get(key)

    def write(self, partition: int, items: list[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        store = self._store
        if self.on_disk:
            import rocksdict

            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in items:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            # one atomic write: the values and the changelog offset they reached (Faust's recovery resumes
            # the changelog after it)
            batch.put(store.offset_key, str(changelog_offset).encode())
            store._db_for_partition(partition).write(batch)
            return
        for key, value in items:  # the memory store replays the whole changelog on every assignment
            if value is None:
                store.data.pop(key, None)
                store._key_partition.pop(key, None)
            else:
                store.data[key] = value
                store._key_partition[key] = partition

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        store = self._store
        if self.on_disk:
            for key, value in store._db_for_partition(partition).items():
                if key != store.offset_key:
                    yield key, value
            return
        for key, value in list(store.data.items()):
            if store._key_partition.get(key) == partition:
                yield key, value


class ProducerSender:
    """Sends outputs and changelog records through the worker's producer (aiokafka's, behind Faust's), and
    keeps the outputs' delivery futures so a flush can wait for them before it writes state."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._outputs: list[asyncio.Future] = []
        self._producer: Any = None

    @property
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = self.app.producer._ensure_producer()  # faust-streaming pinned < 0.16
        return self._producer

    async def publish(self, topic: str, key: bytes, value: bytes | None) -> None:
        self._outputs.append(await self.producer.send(topic, value=value, key=key))

    async def outputs_delivered(self) -> None:
        outputs, self._outputs = self._outputs, []
        if outputs:
            await asyncio.gather(*outputs)

    async def send(self, topic: str, partition: int, key: bytes, value: bytes | None) -> asyncio.Future:
        return await self.producer.send(topic, value=value, key=key, partition=partition)  # -> RecordMetadata


class FlushingConsumer(FastDeliveryConsumer):
    """Before a rebalance (or a stop) waits for every event in progress to be acknowledged, flush the state:
    events are acknowledged only by the flush that makes their effects durable. While it waits, each batch
    that finishes asks for a flush at once (`StateLayer.urgent`)."""

    async def wait_empty(self) -> None:
        state = getattr(self.app, "packwise_state", None)
        if state is None:
            return await super().wait_empty()
        state.urgent = True
        try:
            if not self.should_stop:
                await state.flush()
            await super().wait_empty()
        finally:
            state.urgent = False


    async def on_stop(self) -> None:
        log.info("deliveries", fast=self.fast_deliveries, raced=self.raced_deliveries, waits_for_room=self.waits_for_room)
        await super().on_stop()


def install(app: faust.App) -> None:
    """Make `app` create a FlushingConsumer (with the delivery fast path); call before the app starts."""
    app.transport.Consumer = FlushingConsumer
