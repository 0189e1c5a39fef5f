"""The worker's RocksDB store (streams/changelog.py RestoringStore) against records Faust's recovery can hand it
after a rebalance: the store only moves forward along its own changelog."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import faust
from faust.types import TP

from streams import changelog  # noqa: F401 - registers the packwise-rocksdb store


def record(topic: str, partition: int, offset: int, key: bytes, value: bytes | None) -> SimpleNamespace:
    """What the store reads of a Faust changelog event."""
    return SimpleNamespace(message=SimpleNamespace(tp=TP(topic, partition), offset=offset, partition=partition,
                                                   key=key, value=value))


def store_of(tmp_path: Path):
    app = faust.App("changelog-test", broker="kafka://127.0.0.1:1", store="packwise-rocksdb://", datadir=str(tmp_path))
    table = app.Table("damage_stats", partitions=2, key_type=bytes, value_type=bytes)
    return table.data, table.changelog_topic.get_topic_name()


def test_records_at_or_behind_the_offset_reached_are_not_applied_again(tmp_path: Path) -> None:
    store, topic = store_of(tmp_path)
    store.apply_changelog_batch([record(topic, 0, 5, b"P1", b"12 shipments"), record(topic, 0, 6, b"P2", b"3")],
                                None, None)
    # a record fetched for the partition before it moved, delivered after the store went further
    store.apply_changelog_batch([record(topic, 0, 5, b"P1", b"12 shipments"), record(topic, 0, 4, b"P1", b"9 shipments")],
                                None, None)
    assert store._db_for_partition(0).get(b"P1") == b"12 shipments"
    assert store.persisted_offset(TP(topic, 0)) == 6
    store.apply_changelog_batch([record(topic, 0, 7, b"P1", b"15 shipments"), record(topic, 0, 8, b"P2", None)],
                                None, None)
    assert store._db_for_partition(0).get(b"P1") == b"15 shipments"
    assert store._db_for_partition(0).get(b"P2") is None
    assert store.persisted_offset(TP(topic, 0)) == 8


def test_another_tables_records_are_not_applied(tmp_path: Path) -> None:
    """Faust's recovery loop hands a record of a partition it no longer tracks to the table of the record before
    it: applied, it would overwrite a key and move this store's offset to another changelog's, so that the
    next recovery would skip records it never applied."""
    store, topic = store_of(tmp_path)
    store.apply_changelog_batch([record(topic, 1, 2, b"P1", b"3 shipments")], None, None)
    store.apply_changelog_batch([record("changelog-test-products-changelog", 1, 40, b"P1", b"a decision")], None, None)
    assert store._db_for_partition(1).get(b"P1") == b"3 shipments"
    assert store.persisted_offset(TP(topic, 1)) == 2


def test_stream_partitions_are_sought_before_anything_is_fetched_from_them(tmp_path: Path) -> None:
    """Faust's recovery, once the tables are restored, resumes the stream partitions, seeks them to their committed
    offsets, then resumes the flow, which empties the stream queues. With standbys (or nothing to restore) the
    flow already runs during the seek, so events fetched from the old position were delivered, then dropped from
    the queues after the consumer's read offset had moved past them, and never applied (one run of the
    join-and-leave test in tests/test_worker.py lost up to three shipments each of 31 products this way). With
    the worker's consumer, nothing is fetched from a stream partition until it is sought and the flow resumed."""
    app = faust.App("changelog-test", broker="kafka://127.0.0.1:1", store="packwise-rocksdb://", datadir=str(tmp_path))
    changelog.install(app)
    table = app.Table("damage_stats", partitions=2, key_type=bytes, value_type=bytes)
    streams = {TP("shipments", 0), TP("shipments", 1)}
    changelogs = {TP(table.changelog_topic.get_topic_name(), 0)}
    consumer = app.consumer
    assert isinstance(consumer, changelog.FlushingConsumer)
    consumer.assignment = lambda: streams | changelogs
    consumer._active_partitions = set(changelogs)  # as the recovery leaves them: streams paused since the assignment
    fetchable_during_seek: list[set[TP]] = []

    async def perform_seek() -> None:  # a request to the broker: the fetcher runs meanwhile
        fetchable_during_seek.append(set(consumer._get_active_partitions()) & streams)
        await asyncio.sleep(0.01)
        fetchable_during_seek.append(set(consumer._get_active_partitions()) & streams)

    consumer.perform_seek = perform_seek
    app._fetcher = SimpleNamespace(maybe_start=lambda: asyncio.sleep(0))
    consumer.resume_flow()  # the recovery resumed the flow for its standbys
    recovery = app.tables.recovery
    recovery.loop.run_until_complete(recovery.on_recovery_completed(app.consumer_generation_id))
    assert fetchable_during_seek == [set(), set()]
    assert streams <= consumer._get_active_partitions() and consumer.flow_active
    assert recovery.completed.is_set()


def test_a_stream_resume_from_an_earlier_generation_does_not_leak_into_the_next(tmp_path: Path) -> None:
    app = faust.App("changelog-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    changelog.install(app)
    consumer = app.consumer
    consumer._active_partitions = set()
    consumer.resume_partitions({TP("shipments", 0)})  # then a rebalance, before the recovery resumed the flow
    consumer.assignment = lambda: set()
    consumer.app.on_rebalance_start = lambda: None
    asyncio.new_event_loop().run_until_complete(changelog.FlushingConsumer.on_partitions_revoked(consumer, set()))
    consumer.resume_flow()
    assert TP("shipments", 0) not in consumer._get_active_partitions()


def test_changelog_partitions_are_paused_and_resumed_in_aiokafka_too(tmp_path: Path) -> None:
    """Faust pauses partitions in its own bookkeeping only, so aiokafka kept fetching the active tables' changelog
    partitions outside recovery: the worker's own writes, fetched back and held unread. The worker's consumer
    mirrors Faust's pause and resume of changelog partitions into aiokafka, in aiokafka's thread; stream partitions
    are left to Faust's flow control."""
    from aiokafka import TopicPartition

    app = faust.App("changelog-test", broker="kafka://127.0.0.1:1", store="packwise-rocksdb://", datadir=str(tmp_path))
    changelog.install(app)
    table = app.Table("damage_stats", partitions=2, key_type=bytes, value_type=bytes)
    name = table.changelog_topic.get_topic_name()
    calls: list[tuple[str, set]] = []
    kafka = SimpleNamespace(assignment=lambda: {TopicPartition(name, 0), TopicPartition("shipments", 0)},
                            pause=lambda *tps: calls.append(("pause", set(tps))),
                            resume=lambda *tps: calls.append(("resume", set(tps))))
    loop = asyncio.new_event_loop()  # the consumer thread's loop: nothing runs on it until the test runs it
    consumer = app.consumer
    consumer._thread = SimpleNamespace(thread_loop=loop, _consumer=kafka)
    consumer._active_partitions = set()
    assigned = {TP(name, 0), TP(name, 1), TP("shipments", 0)}  # partition 1 moved away in aiokafka meanwhile
    consumer.pause_partitions(assigned)
    assert calls == []  # handed to aiokafka's thread, not called from this one
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [("pause", {TopicPartition(name, 0)})]
    consumer.resume_partitions(assigned)  # recovery reads the changelog
    loop.run_until_complete(asyncio.sleep(0))
    assert calls[1:] == [("resume", {TopicPartition(name, 0)})]
    assert consumer._held_streams == {TP("shipments", 0)}  # the stream partition waits for the flow, as before
    loop.close()
    consumer.pause_partitions(assigned)  # the thread has stopped: nothing to hand it
    assert len(calls) == 2
