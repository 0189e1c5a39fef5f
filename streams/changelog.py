"""The Kafka side of the state layer (streams/state.py): Faust's stores and producer adapted to it, and the
consumer hook that makes a rebalance or a stop flush the state before it waits for unacknowledged events.

Faust still declares the tables (so their changelog topics exist and are co-partitioned), opens their
RocksDB stores for the partitions a worker owns, and restores them from the changelog on assignment,
standbys included. Every write goes through the state layer instead of Faust's table API: Faust would
write RocksDB at once and the changelog later, so local state could run ahead of the changelog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.manager import TableManager

from streams.delivery import FastDeliveryConsumer
from streams.logs import get_logger
from streams.state import acknowledged

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


class RestoringStore(RocksDBStore):
    """Faust's RocksDB store that restores each active partition it is assigned from the changelog itself,
    before Faust's recovery starts: a librdkafka consumer in a thread, applied in write batches of 10,000
    records with the offset they reached (as Faust's own recovery writes them). Faust's recovery then
    replays only what arrived meanwhile; its loop costs an asyncio task per record (about 12,500 keys/s on
    2 cores, bench/RESULTS-worker.md). Any failure here leaves the rest to Faust's recovery, which stays the
    mechanism that makes the store whole."""

    batch_records = 10_000

    async def assign_partitions(self, table: Any, tps: Any, generation_id: int = 0) -> None:
        await super().assign_partitions(table, tps, generation_id)
        standbys = self.app.assignor.assigned_standbys()
        actives = sorted(tp for tp in tps if tp.topic in table.changelog_topic.topics and tp not in standbys)
        settings = getattr(self.app, "packwise_settings", None)
        if not actives or settings is None:
            return
        started = time.monotonic()
        try:
            restored = await asyncio.get_running_loop().run_in_executor(None, self._restore, settings, actives)
        except Exception as error:  # an optimisation: Faust's recovery still restores whatever is missing
            log.warning("fast_restore_failed", table=table.name, error=repr(error))
            return
        if restored:
            seconds = time.monotonic() - started
            log.info("fast_restore", table=table.name, partitions=len(actives), records=restored,
                     seconds=round(seconds, 2), records_per_s=round(restored / max(seconds, 1e-6)))

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        """Faust's recovery and standby reading write changelog records here. Only records past the offset the
        store reached are applied, and only records of this table's changelog: the store then only ever
        moves forward along its own changelog, whatever a rebalance leaves in Faust's queues (a record fetched
        for a partition before it moved, or one of a partition Faust no longer tracks, which its recovery
        loop hands to the table of the record before it)."""
        topics = self.table.changelog_topic.topics
        reached: dict[Any, int | None] = {}
        kept, foreign, behind = [], 0, 0
        for event in batch:
            tp = event.message.tp
            if tp.topic not in topics:
                foreign += 1
                continue
            if tp not in reached:
                reached[tp] = self.persisted_offset(tp)
            if reached[tp] is not None and event.message.offset <= reached[tp]:
                behind += 1
                continue
            reached[tp] = event.message.offset
            kept.append(event)
        if foreign or behind:
            log.warning("changelog_records_skipped", table=self.table.name, foreign=foreign, behind=behind,
                        applied=len(kept))
        if kept:
            super().apply_changelog_batch(kept, to_key, to_value)

    def _restore(self, settings: Any, tps: list) -> int:
        """Read every given changelog partition from the offset its store reached to its end, in one consumer."""
        import rocksdict
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        from streams.topics import client_config

        consumer = Consumer(client_config(settings, **{"group.id": f"{settings.app_id}-restore",
                                                       "enable.auto.commit": False, "enable.partition.eof": True}))
        try:
            ends: dict[int, int] = {}
            assignment = []
            for tp in tps:
                persisted = self.persisted_offset(tp)
                low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                start = max(0 if persisted is None else persisted + 1, low)
                if start < high:
                    ends[tp.partition] = high
                    assignment.append(TopicPartition(tp.topic, tp.partition, start))
            if not assignment:
                return 0
            consumer.assign(assignment)
            batches = {p: rocksdict.WriteBatch(raw_mode=True) for p in ends}
            pending = dict.fromkeys(ends, 0)
            last = {p: -1 for p in ends}
            restored = 0

            def write(partition: int) -> None:
                nonlocal restored
                batch = batches[partition]
                batch.put(self.offset_key, str(last[partition]).encode())
                self._db_for_partition(partition).write(batch)
                restored += pending[partition]
                batches[partition], pending[partition] = rocksdict.WriteBatch(raw_mode=True), 0

            deadline = time.monotonic() + 600
            while ends:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"restoring {tps[0].topic} stopped short of the end of {sorted(ends)}")
                # consume() returns when it has the whole batch or the timeout passed: a short timeout, or a
                # changelog of a few records would cost the full wait, per table and rebalance
                for message in consumer.consume(self.batch_records, timeout=0.05):
                    partition = message.partition()
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(error.str())
                    elif partition in ends:
                        value = message.value()
                        if value is None:
                            batches[partition].delete(message.key())
                        else:
                            batches[partition].put(message.key(), value)
                        last[partition] = message.offset()
                        pending[partition] += 1
                        if pending[partition] >= self.batch_records:
                            write(partition)
                    if partition in ends and (error is not None or last[partition] >= ends[partition] - 1):
                        if pending[partition]:
                            write(partition)
                        del ends[partition]
            return restored
        finally:
            consumer.close()


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
            await acknowledged(outputs)

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

    # Stream (input) partitions whose resume waits for the flow's: see resume_partitions
    _held_streams: frozenset = frozenset()

    def pause_partitions(self, tps: Any) -> None:
        """Faust pauses a partition in its own bookkeeping only: aiokafka, below it, goes on fetching every
        assigned partition, and keeps what it fetched for a partition Faust does not read until the next seek.
        For a changelog partition of an active table (paused from assignment on, read only during recovery)
        that was the worker's own writes, fetched back once per partition, up to 1 MB each, and kept unread in
        memory: a worker with 6 partitions of its 5 tables read back a flush's records (3.7 MB of a 5,000-product
        run) and held up to 30 MB, and each such fetch held every other fetch to the broker back for aiokafka's
        0.1 s prefetch backoff, the captures included. So a changelog partition is paused in aiokafka too."""
        tps = set(tps)
        super().pause_partitions(tps)
        self._fetch_changelogs(tps, fetch=False)

    def _fetch_changelogs(self, tps: set, fetch: bool) -> None:
        """Pause (or resume) in aiokafka the changelog partitions among `tps`, in the consumer's own thread, where
        aiokafka runs: its pause state wakes the fetcher through a future of that thread's loop."""
        changelogs = [(tp.topic, tp.partition) for tp in tps if self._is_changelog_tp(tp)]
        thread = getattr(self, "_thread", None)
        loop = getattr(thread, "thread_loop", None)
        if not changelogs or loop is None or loop.is_closed():
            return

        def apply() -> None:
            consumer = thread._consumer
            if consumer is None:
                return
            assigned = consumer.assignment()
            present = [tp for tp in (TopicPartition(*pair) for pair in changelogs) if tp in assigned]
            if present:
                (consumer.resume if fetch else consumer.pause)(*present)

        loop.call_soon_threadsafe(apply)

    def resume_partitions(self, tps: Any) -> None:
        """Faust's recovery resumes the stream partitions, *then* seeks them to their committed offsets, then
        resumes the flow, which empties the stream queues. With standbys (or nothing to restore) the flow is
        already running during that seek: the fetcher delivers events from the old position, the consumer's read
        offset moves past them, and the flow's resume drops them from the queues; fetched again, they are
        behind the read offset and dropped again, and the offsets skipped count as processed (Faust's gaps), so
        they were never applied (a join-and-leave run lost up to three shipments each of 31 products). Here a
        stream partition stays paused until the flow resumes, so it is sought before anything is fetched from
        it (tests/test_changelog.py). Changelog partitions (recovery's own) resume at once."""
        tps = set(tps)
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        if streams:
            self._held_streams = self._held_streams | streams
        super().resume_partitions(tps - streams)
        self._fetch_changelogs(tps - streams, fetch=True)

    def resume_flow(self) -> None:
        super().resume_flow()
        held, self._held_streams = self._held_streams, frozenset()
        if held:
            super().resume_partitions(held)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._held_streams = frozenset()  # a resume from an earlier generation must not leak into the next
        await super().on_partitions_revoked(revoked)

    def changelog_partitions_buffered(self) -> int | None:
        """Changelog partitions whose fetched records aiokafka holds unread (None: unknown). Outside recovery and
        standbys, 0: see pause_partitions."""
        fetcher = getattr(getattr(getattr(self, "_thread", None), "_consumer", None), "_fetcher", None)
        if fetcher is None:
            return None
        try:
            held = list(fetcher._records)  # aiokafka's own thread may change it meanwhile: a copy, or unknown
        except RuntimeError:
            return None
        return sum(1 for tp in held if self._is_changelog_tp(tp))

    async def on_stop(self) -> None:
        log.info("deliveries", fast=self.fast_deliveries, raced=self.raced_deliveries, waits_for_room=self.waits_for_room,
                 changelog_partitions_buffered=self.changelog_partitions_buffered())
        await super().on_stop()


class PromptTableManager(TableManager):
    """Faust's TableManager without the fixed second it sleeps before it subscribes the changelogs and starts
    recovery (a grace for tables declared after the app starts; the worker declares every table in
    create_app): a second off every start."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def install(app: faust.App) -> None:
    """Make `app` create a FlushingConsumer (with the delivery fast path); call before the app starts. Its
    tables take `store="packwise-rocksdb://"` for the RestoringStore, the app `TableManager=PromptTableManager`."""
    app.transport.Consumer = FlushingConsumer


STORES.aliases["packwise-rocksdb"] = f"{__name__}:RestoringStore"
