"""The worker's state layer: per-product tables written back once per flush, crash-consistent at any instant.

Reads see every write at once; writes stay in memory (one entry per changed product and table) until a
flush, which:

0. runs `before_flush` (the worker re-decides there, once, each product whose statistics changed, so the
   decision is durable with the counts it was made on);
1. waits until every output published so far is acknowledged (decisions, triggers, dead letters), so a
   product's state never claims an output that was lost;
2. sends each changed key's value to the table's changelog once, and waits for the broker's acknowledgement;
3. only then writes those values to the local store, in one write batch per partition together with the
   changelog offset they reached;
4. acknowledges the events whose effects it carried, so the consumer may commit their offsets.

So the local store only ever holds a prefix of the changelog: after a crash at any instant, Faust's
recovery (which replays each changelog from the offset kept in the store) brings the store exactly to the
changelog, and the events whose flush did not complete are read again and applied on top of it (their
effects are either absent from the changelog, or recognised as already applied by the offsets the
statistics remember). A worker with an empty disk restores the same state from the changelog alone.

This module holds no Kafka: the changelog sender and the stores are passed in (streams/changelog.py
adapts Faust's producer and RocksDB stores; tests pass in-memory ones).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from streams import failpoints
from streams.logs import get_logger

log = get_logger("packwise.state")

_MISSING = object()
DELETED = object()  # a pending delete in the write-back buffer


async def acknowledged(futures: list[asyncio.Future]) -> list[Any]:
    """The results of the producer's delivery futures, in order, once every one is done; raises the first
    failure (in order) after all are done, having retrieved every failure. What asyncio.gather returns, without
    its callback on every future: aiokafka resolves a whole batch of futures at once, and under gather each of a
    flush's thousands of records then cost the event loop a scheduled call (6-7% of the worker's samples on the
    statistics path). Here one wait per future still pending when the one before it is
    done: about one per produce batch. Cancelling the caller leaves the futures to the producer."""
    for future in futures:
        if not future.done():
            await asyncio.wait((future,))
    failures = [error for error in (future.exception() for future in futures) if error is not None]
    if failures:
        raise failures[0]
    return [future.result() for future in futures]


class Codec(Protocol):
    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JsonValues:
    """Dict values as compact JSON."""

    @staticmethod
    def encode(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> Any:
        return json.loads(data)


class WireBytes:
    """Event wire bytes kept exactly as read: no base64, no JSON (a capture costs its own size). Values that
    an older worker wrote as base64 inside a JSON string (they start with a quote; wire bytes start with the
    magic byte 0) are still read."""

    @staticmethod
    def encode(value: bytes) -> bytes:
        return value

    @staticmethod
    def decode(data: bytes) -> bytes:
        if data[:1] == b'"':
            return base64.b64decode(json.loads(data))
        return data


# Tables that keep event wire bytes (a record each at most): stored as read, never cached decoded
WIRE_TABLES = ("catalog", "captures")


def codec_for(table: str) -> Codec:
    return WireBytes if table in WIRE_TABLES else JsonValues


def encode_key(key: str) -> bytes:
    """Keys as JSON strings, as Faust wrote them before this layer: existing changelogs stay readable."""
    return json.dumps(key).encode()


def decode_key(data: bytes) -> str:
    return json.loads(data)


class PartitionStore(Protocol):
    """A table's local store, one keyspace per partition (streams/changelog.py adapts Faust's)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def write(self, partition: int, items: list[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        """Apply the puts (None: delete) and remember `changelog_offset`, atomically."""

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]: ...


class ChangelogSender(Protocol):
    async def outputs_delivered(self) -> None:
        """Return once every output handed to the producer so far is acknowledged; raise if one failed."""

    async def send(self, topic: str, partition: int, key: bytes, value: bytes | None) -> asyncio.Future:
        """Hand one changelog record to the producer; the future resolves once the broker acknowledged it,
        to a result whose `offset` is the record's offset in the changelog."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    changelog_topic: str
    codec: Codec
    store: PartitionStore
    cached: bool = True  # keep decoded values in memory between reads (not for large wire bytes)


class StateTooLarge(ValueError):
    """A value would not fit in one changelog record."""


class WriteBackTable(MutableMapping):
    """One table of the layer, as a mapping the Processor reads and writes. Writes land in the partition the
    layer is set to (`StateLayer.at`); reads look in the write-back buffer, the values being flushed, a
    bounded cache of decoded values, then the local store of that partition."""

    def __init__(self, layer: "StateLayer", spec: TableSpec) -> None:
        self._layer = layer
        self.spec = spec
        self.dirty: dict[str, tuple[int, Any]] = {}
        self.flushing: dict[str, tuple[int, Any]] = {}
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.dirty_bytes = 0  # wire bytes waiting in `dirty` (bytes values only): a memory bound

    def _lookup(self, key: str) -> Any:
        entry = self.dirty.get(key) or self.flushing.get(key)
        if entry is not None:
            value = entry[1]
            return None if value is DELETED else value
        cache = self.cache
        value = cache.get(key, _MISSING)
        if value is not _MISSING:
            cache.move_to_end(key)
            return value
        raw = self.spec.store.get(self._layer.partition, encode_key(key))
        value = None if raw is None else self.spec.codec.decode(raw)
        self._layer.remember(self, key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self._lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not None  # type: ignore[arg-type]

    def __setitem__(self, key: str, value: Any) -> None:
        if value is None:
            raise ValueError("a state table cannot hold None (it marks a missing key)")
        if isinstance(value, (bytes, bytearray)):
            limit = self._layer.record_limit
            if len(value) + len(key) > limit:
                raise StateTooLarge(f"{self.spec.name} value of {len(value):,} bytes for {key!r} exceeds the "
                                    f"changelog record limit of {limit:,} bytes")
            self.dirty_bytes += len(value)
        self.dirty[key] = (self._layer.partition, value)
        self._uncache(key)

    def __delitem__(self, key: str) -> None:
        if self._lookup(key) is None:
            raise KeyError(key)
        self.dirty[key] = (self._layer.partition, DELETED)
        self._uncache(key)

    def _uncache(self, key: str) -> None:
        """The buffer holds the key's value now; the cache gets it back after the flush."""
        if self.cache.pop(key, _MISSING) is not _MISSING:
            self._layer.cached -= 1

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        """Every (key, value) of the partitions this worker owns, pending writes included."""
        partitions = set(self._layer.owned())
        overlay = {**self.flushing, **self.dirty}
        for partition in sorted(partitions):
            for raw_key, raw in self.spec.store.items(partition):
                key = decode_key(raw_key)
                if key not in overlay:
                    yield key, self.spec.codec.decode(raw)
        for key, (partition, value) in overlay.items():
            if partition in partitions and value is not DELETED:
                yield key, value

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.items())


class _At:
    """`with layer.at(partition):` without a generator: it runs for every event."""

    __slots__ = ("layer", "partition", "previous")

    def __init__(self, layer: "StateLayer", partition: int) -> None:
        self.layer, self.partition = layer, partition

    def __enter__(self) -> None:
        self.previous = self.layer.partition
        self.layer.partition = self.partition

    def __exit__(self, *exc: object) -> None:
        self.layer.partition = self.previous


class StateLayer:
    """The tables of one worker, their write-back buffer, and the flush that makes them durable."""

    def __init__(self, specs: Iterable[TableSpec], sender: ChangelogSender, release: Callable[[list], None], *,
                 cache_size: int = 200_000, max_dirty: int = 50_000, max_dirty_bytes: int = 64 << 20,
                 record_limit: int = 1 << 20, owned: Callable[[], Iterable[int]] = lambda: (),
                 before_flush: Callable[[], Awaitable[None]] | None = None) -> None:
        self.tables = {spec.name: WriteBackTable(self, spec) for spec in specs}
        self.sender = sender
        self.release = release
        self.cache_size = cache_size
        self.max_dirty = max_dirty
        self.max_dirty_bytes = max_dirty_bytes
        self.record_limit = record_limit
        self.owned = owned  # the partitions this worker owns now
        self.before_flush = before_flush  # last writes of a flush (deferred decisions), under its lock
        self.partition = -1
        self.urgent = False  # set while a rebalance or a stop waits for the held events
        self.held: list = []  # events whose effects are in the write-back buffer
        self.cached = 0
        self.flushes = self.records_flushed = 0
        self._flush_lock = asyncio.Lock()
        self.wake = asyncio.Event()  # set: a flush is wanted now (rebalance, limits)

    def __getitem__(self, name: str) -> WriteBackTable:
        return self.tables[name]

    def at(self, topic: str, partition: int) -> _At:
        """Context in which reads and writes belong to `partition` (the Processor's PartitionContext)."""
        return _At(self, partition)

    def remember(self, table: WriteBackTable, key: str, value: Any) -> None:
        if self.cache_size == 0 or not table.spec.cached:
            return
        if key in table.cache:
            table.cache[key] = value
            table.cache.move_to_end(key)
            return
        table.cache[key] = value
        self.cached += 1
        if self.cached > self.cache_size:  # evict from the largest cache
            largest = max(self.tables.values(), key=lambda t: len(t.cache))
            largest.cache.popitem(last=False)
            self.cached -= 1

    def hold(self, events: list) -> None:
        """Keep `events` unacknowledged until a flush has made their effects durable."""
        self.held.extend(events)
        if self.urgent or self.over_limits():
            self.wake.set()

    @property
    def dirty_count(self) -> int:
        return sum(len(t.dirty) for t in self.tables.values())

    def over_limits(self) -> bool:
        return (self.dirty_count >= self.max_dirty
                or sum(t.dirty_bytes for t in self.tables.values()) >= self.max_dirty_bytes)

    async def flush(self) -> int:
        """Make every write so far durable (changelog acknowledged, then the local store), then acknowledge
        the events held for it. Returns the number of changelog records written."""
        async with self._flush_lock:
            self.wake.clear()
            if self.before_flush is not None:
                await self.before_flush()
            if not self.held and not any(t.dirty for t in self.tables.values()):
                return 0
            events, self.held = self.held, []
            batches: list[tuple[WriteBackTable, list[tuple[str, int, bytes, Any]]]] = []
            for table in self.tables.values():
                if not table.dirty:
                    continue
                table.flushing, table.dirty, table.dirty_bytes = table.dirty, {}, 0
                encode = table.spec.codec.encode
                # encoded now, before any await: later writes to the same objects belong to the next flush
                batches.append((table, [(key, partition, encode_key(key), value if value is DELETED else encode(value))
                                        for key, (partition, value) in table.flushing.items()]))
            try:
                await self.sender.outputs_delivered()
                sent = []
                half = sum(len(records) for _, records in batches) // 2
                for table, records in batches:
                    topic = table.spec.changelog_topic
                    for key, partition, raw_key, raw in records:
                        sent.append(await self.sender.send(topic, partition, raw_key,
                                                           None if raw is DELETED else raw))
                        if len(sent) == half:
                            failpoints.reached("flush.sending")
                failpoints.reached("flush.sent")
                offsets = iter([metadata.offset for metadata in await acknowledged(sent)])
                for table, records in batches:
                    by_partition: dict[int, tuple[list, list[int]]] = {}
                    for key, partition, raw_key, raw in records:
                        items, reached = by_partition.setdefault(partition, ([], []))
                        items.append((raw_key, None if raw is DELETED else raw))
                        reached.append(next(offsets))
                    for partition, (items, reached) in by_partition.items():
                        table.spec.store.write(partition, items, max(reached))
            except BaseException:
                # nothing acknowledged to the consumer: the events are read again after a restart
                for table, _ in batches:
                    table.dirty = {**table.flushing, **table.dirty}
                    table.flushing = {}
                self.held = events + self.held
                raise
            written = 0
            for table, records in batches:
                for key, (partition, value) in table.flushing.items():
                    if key not in table.dirty:
                        self.remember(table, key, None if value is DELETED else value)
                table.flushing = {}
                written += len(records)
            self.flushes += 1
            self.records_flushed += written
            self.release(events)
            return written

    def forget(self, kept: set[int]) -> None:
        """Partitions moved (call after a flush): drop every cached value, since another worker may write
        them now, and any write still buffered for a partition not in `kept` (its events were never
        acknowledged, so the partition's new owner applies them again)."""
        self.cached = 0
        for table in self.tables.values():
            table.cache.clear()
            lost = [key for key, (partition, _) in table.dirty.items() if partition not in kept]
            for key in lost:
                del table.dirty[key]
            if lost:
                log.warning("state_writes_dropped_for_revoked_partitions", table=table.spec.name, keys=len(lost))


class MemoryStore:
    """A PartitionStore in memory, with the offset it reached per partition (unit and property tests)."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[bytes, bytes]] = {}
        self.offsets: dict[int, int] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions.get(partition, {}).get(key)

    def write(self, partition: int, items: list[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        data = self.partitions.setdefault(partition, {})
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self.offsets[partition] = changelog_offset

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.partitions.get(partition, {}).items()))
