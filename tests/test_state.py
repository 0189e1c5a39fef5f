"""The state layer (streams/state.py) without a broker: write-back, flush order, limits, and a property test
that crashes it at every kind of instant and compares what recovery restores with the fold of the events.

The changelog here is a list per partition that the test controls (records land, acknowledgements come,
or the process dies in between); the real broker's side is tested in tests/test_worker.py."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
from collections import Counter
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from models.packtypes import PACK_TYPES
from streams.marketplaces import DEFAULT_MARKETPLACES
from streams.processor import Incoming, Processor, Tables
from streams.serde import Serde
from streams.settings import Settings
from streams.state import (WIRE_TABLES, MemoryStore, StateLayer, StateTooLarge, TableSpec, WireBytes, acknowledged,
                           codec_for, decode_key, encode_key)
from streams.topics import TABLES
from tests.samples import SAMPLES

SERDE = Serde()


class Crash(BaseException):
    """The worker process dies here (kill -9): nothing after this line of the flush runs."""


@dataclass
class Cluster:
    """What survives a worker: changelog partitions (records that landed, acknowledged or not), the local
    stores on the worker's disk, and the committed offsets of the input partitions."""

    changelog: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = field(default_factory=dict)
    stores: dict[str, MemoryStore] = field(default_factory=lambda: {name: MemoryStore() for name in TABLES})
    committed: dict[int, int] = field(default_factory=dict)
    outputs: list = field(default_factory=list)

    def recover(self, wipe: bool) -> None:
        """Faust's recovery: replay each changelog partition into the store after the offset it reached."""
        if wipe:
            self.stores = {name: MemoryStore() for name in TABLES}
        for (topic, partition), records in self.changelog.items():
            store = self.stores[topic]
            start = store.offsets.get(partition, -1) + 1
            if start < len(records):
                store.write(partition, records[start:], len(records) - 1)

    def table(self, name: str) -> dict[str, Any]:
        """The latest value of every key in a table's changelog."""
        values: dict[str, Any] = {}
        for (topic, _), records in self.changelog.items():
            if topic == name:
                for key, value in records:
                    if value is None:
                        values.pop(decode_key(key), None)
                    else:
                        values[decode_key(key)] = codec_for(name).decode(value)
        return values


class Sender:
    """Hands records to the Cluster; `crash_at` kills the flush after that many changelog sends (records
    sent land in the changelog at once; their acknowledgements come only when the flush awaits them)."""

    def __init__(self, cluster: Cluster, crash_at: int | None = None, crash_before_acks: bool = False) -> None:
        self.cluster = cluster
        self.crash_at = crash_at
        self.crash_before_acks = crash_before_acks
        self.sends = 0
        self.log: list[str] = []

    async def outputs_delivered(self) -> None:
        self.log.append("outputs_delivered")

    async def send(self, topic: str, partition: int, key: bytes, value: bytes | None):
        if self.crash_at is not None and self.sends >= self.crash_at:
            raise Crash()
        self.sends += 1
        records = self.cluster.changelog.setdefault((topic, partition), [])
        records.append((key, value))
        self.log.append(f"send {topic}")
        acknowledgement = asyncio.get_running_loop().create_future()
        if self.crash_before_acks:
            acknowledgement.set_exception(Crash())
        else:
            acknowledgement.set_result(SimpleNamespace(offset=len(records) - 1))
        return acknowledgement


def layer_for(cluster: Cluster, sender: Sender, released: list | None = None, **limits: Any) -> StateLayer:
    specs = [TableSpec(name, name, codec_for(name), cluster.stores[name], cached=name not in WIRE_TABLES)
             for name in TABLES]  # as the worker builds them
    return StateLayer(specs, sender, (released if released is not None else []).extend, **limits)


def run(coro):
    return asyncio.run(coro)


# -- the write-back buffer ---------------------------------------------------------------------------------


def test_reads_see_writes_before_any_flush_and_the_store_only_after() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster))
    stats = layer["damage_stats"]
    with layer.at("shipments", 3):
        stats["P1"] = {"n": 1}
        assert stats["P1"] == {"n": 1} and "P1" in stats
    assert cluster.stores["damage_stats"].get(3, encode_key("P1")) is None
    run(layer.flush())
    assert json.loads(cluster.stores["damage_stats"].get(3, encode_key("P1"))) == {"n": 1}
    assert cluster.stores["damage_stats"].offsets == {3: 0}


def test_a_key_changed_many_times_is_written_once_per_flush() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster))
    with layer.at("shipments", 0):
        for n in range(100):
            layer["damage_stats"]["P1"] = {"n": n}
            layer["products"]["P1"] = {"n": n}
    assert run(layer.flush()) == 2
    assert cluster.changelog == {("damage_stats", 0): [(b'"P1"', b'{"n":99}')],
                                 ("products", 0): [(b'"P1"', b'{"n":99}')]}
    assert run(layer.flush()) == 0  # nothing changed since


def test_outputs_are_acknowledged_before_the_changelog_is_written() -> None:
    cluster = Cluster()
    sender = Sender(cluster)
    layer = layer_for(cluster, sender)
    with layer.at("shipments", 0):
        layer["products"]["P1"] = {"decision": 1}
    run(layer.flush())
    assert sender.log == ["outputs_delivered", "send products"]


def test_events_are_released_only_by_the_flush_that_makes_them_durable() -> None:
    cluster = Cluster()
    released: list = []
    layer = layer_for(cluster, Sender(cluster, crash_before_acks=True), released)
    with layer.at("shipments", 0):
        layer["damage_stats"]["P1"] = {"n": 1}
    layer.hold(["event-1"])
    with pytest.raises(Crash):
        run(layer.flush())
    assert released == [] and cluster.stores["damage_stats"].get(0, encode_key("P1")) is None
    assert layer["damage_stats"].get("P1") == {"n": 1}  # kept for the next try
    layer.sender = Sender(cluster)
    run(layer.flush())
    assert released == ["event-1"]


def test_acknowledgements_come_back_in_order_however_they_arrive() -> None:
    async def scenario() -> list:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(5)]
        futures[1].set_result("b")
        for i in (4, 0, 3, 2):  # the rest arrive later, out of order
            loop.call_later(0.001 * (5 - i), futures[i].set_result, "abcde"[i])
        return await acknowledged(futures)

    assert run(scenario()) == ["a", "b", "c", "d", "e"]


def test_a_failed_acknowledgement_is_raised_once_all_are_done_and_none_is_left_unretrieved() -> None:
    unretrieved: list = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
        futures = [loop.create_future() for _ in range(4)]
        loop.call_later(0.001, futures[1].set_exception, RuntimeError("first"))
        loop.call_later(0.002, futures[3].set_exception, RuntimeError("second"))
        loop.call_later(0.003, futures[0].set_result, "a")
        loop.call_later(0.004, futures[2].set_result, "c")
        with pytest.raises(RuntimeError, match="first"):
            await acknowledged(futures)
        assert all(future.done() for future in futures)
        del futures
        gc.collect()

    run(scenario())
    assert unretrieved == []  # asyncio logs a failed future whose exception nobody read


def test_a_flush_acknowledged_in_one_batch_costs_the_event_loop_no_call_per_record() -> None:
    """aiokafka resolves a produce batch's futures together: under asyncio.gather each then scheduled a
    callback, a tenth of the worker's CPU on the statistics path (bench/RESULTS-worker.md)."""
    scheduled = 0

    async def scenario() -> list:
        nonlocal scheduled
        loop = asyncio.get_running_loop()
        call_soon = loop.call_soon

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal scheduled
            scheduled += 1
            return call_soon(*args, **kwargs)

        loop.call_soon = counting  # type: ignore[method-assign]
        futures = [loop.create_future() for _ in range(1000)]

        def batch_done() -> None:  # what aiokafka's MessageBatch.done does
            for offset, future in enumerate(futures):
                future.set_result(offset)

        loop.call_later(0.001, batch_done)
        return await acknowledged(futures)

    assert run(scenario()) == list(range(1000))
    assert scheduled < 10


def test_a_cancelled_flush_leaves_the_acknowledgements_to_the_producer() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        waiting = asyncio.ensure_future(acknowledged(futures))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not any(future.cancelled() for future in futures)

    run(scenario())


def test_a_delete_reaches_the_changelog_as_a_tombstone() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster))
    with layer.at("catalog-updates", 1):
        layer["pending"]["P1"] = {"since": 1}
        run(layer.flush())
        del layer["pending"]["P1"]
        assert "P1" not in layer["pending"]
    run(layer.flush())
    assert cluster.changelog[("pending", 1)][-1] == (b'"P1"', None)
    assert cluster.stores["pending"].get(1, encode_key("P1")) is None


def test_wire_bytes_are_kept_as_they_are_and_old_base64_values_still_read() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster))
    wire = SERDE.encode("tunnel_capture", SAMPLES["tunnel_capture"])
    with layer.at("tunnel-captures", 0):
        layer["captures"]["P1"] = wire
    run(layer.flush())
    assert cluster.changelog[("captures", 0)] == [(b'"P1"', wire)]  # no base64, no JSON: the wire size
    legacy = json.dumps(base64.b64encode(wire).decode()).encode()
    assert WireBytes.decode(legacy) == wire


def test_a_value_over_the_record_limit_is_refused_before_it_is_buffered() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster), record_limit=1000)
    with layer.at("tunnel-captures", 0), pytest.raises(StateTooLarge, match="exceeds the changelog record limit"):
        layer["captures"]["P1"] = b"\0" * 999
    assert layer["captures"].get("P1") is None


def test_reaching_the_dirty_limit_asks_for_a_flush() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster), max_dirty=3)
    with layer.at("shipments", 0):
        for n in range(3):
            layer["damage_stats"][f"P{n}"] = {"n": n}
            layer.hold([n])
    assert layer.wake.is_set()


def test_reaching_the_dirty_bytes_limit_asks_for_a_flush_and_counts_wire_bytes_only() -> None:
    """Captures are flushed in small bursts: a flush of seconds of 17 KB captures held up the decisions behind it."""
    cluster = Cluster()
    wire = SERDE.encode("tunnel_capture", SAMPLES["tunnel_capture"])
    layer = layer_for(cluster, Sender(cluster), max_dirty_bytes=3 * len(wire))
    with layer.at("shipments", 0):
        for n in range(50):
            layer["damage_stats"][f"S{n}"] = {"padding": "x" * len(wire)}  # decoded values: a count limit of their own
            layer.hold([n])
        assert not layer.wake.is_set()
        for n in range(2):
            layer["captures"][f"P{n}"] = wire
            layer.hold([n])
        assert not layer.wake.is_set()
        layer["captures"]["P2"] = wire
        layer.hold([2])
    assert layer.wake.is_set()
    run(layer.flush())
    assert sum(t.dirty_bytes for t in layer.tables.values()) == 0


def test_the_decoded_cache_is_bounded_and_skips_wire_bytes() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster), cache_size=2)
    wire = SERDE.encode("tunnel_capture", SAMPLES["tunnel_capture"])
    with layer.at("shipments", 0):
        for n in range(5):
            layer["damage_stats"][f"P{n}"] = {"n": n}
            layer["captures"][f"P{n}"] = wire
        run(layer.flush())
        assert [layer["captures"][f"P{n}"] for n in range(5)] == [wire] * 5  # read from the store
        assert len(layer["captures"].cache) == 0  # wire bytes are never held decoded in memory
        assert sum(len(t.cache) for t in layer.tables.values()) == 2
        assert layer["damage_stats"]["P0"] == {"n": 0}  # evicted, read back from the store


def test_forgetting_partitions_drops_the_cache_and_writes_of_lost_partitions() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster))
    with layer.at("shipments", 0):
        layer["damage_stats"]["kept"] = {"n": 1}
    with layer.at("shipments", 1):
        layer["damage_stats"]["lost"] = {"n": 1}
    layer.forget({0})
    run(layer.flush())
    assert set(cluster.table("damage_stats")) == {"kept"}


# -- crash consistency, for any interleaving ---------------------------------------------------------------

PARTITIONS = 2
PRODUCTS = [f"P-{n:02d}" for n in range(12)]  # many, so that a crash often hits a product's last event


def partition_of(product: str) -> int:
    return PRODUCTS.index(product) % PARTITIONS


def event_bytes(product: str, kind: str, pack: str, event_id: str) -> bytes:
    contract = "shipment" if kind == "shipment" else "damage_report"
    return SERDE.encode(contract, {**SAMPLES[contract], "product_id": product, "package_type": pack,
                                   "event_id": event_id})


@st.composite
def histories(draw):
    """The input log (resends included) and the worker's life: how many events each step reads, where it
    flushes, commits, and dies (mid-flush after some changelog sends, or between sends and their
    acknowledgements), and whether its disk survives."""
    log: list[tuple[str, str, str, str]] = []  # product, kind, pack, event id
    for _ in range(draw(st.integers(1, 40))):
        if log and draw(st.integers(0, 5)) == 0:
            log.append(draw(st.sampled_from(log)))  # the exact same event again
        else:
            log.append((draw(st.sampled_from(PRODUCTS)), draw(st.sampled_from(["shipment", "damage"])),
                        draw(st.sampled_from(PACK_TYPES)).value, str(uuid.UUID(int=len(log)))))
    steps = draw(st.lists(st.one_of(
        st.tuples(st.just("read"), st.integers(1, 16)),
        st.tuples(st.just("flush"), st.none()),
        st.tuples(st.just("commit"), st.none()),
        st.tuples(st.just("crash_in_flush"), st.integers(0, 12)),
        st.tuples(st.just("crash_before_acks"), st.none()),
        st.tuples(st.just("crash"), st.none()),
    ), max_size=20))
    wipes = draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
    return log, steps, wipes


class Worker:
    """A worker's memory: the layer and the Processor over it, reading each partition from its committed
    offset."""

    def __init__(self, cluster: Cluster, inputs: dict[int, list[Incoming]]) -> None:
        self.cluster = cluster
        self.inputs = inputs
        self.released: list[Incoming] = []
        self.sender = Sender(cluster)
        self.layer = layer_for(cluster, self.sender, self.released)
        self.processor = Processor(Settings(), SERDE, DEFAULT_MARKETPLACES, Tables(**self.layer.tables),
                                   context=self.layer.at)

        async def decide_changed() -> None:
            cluster.outputs += self.processor.decide_changed()

        self.layer.before_flush = decide_changed
        self.position = {p: cluster.committed.get(p, 0) for p in range(PARTITIONS)}
        self.turn = 0

    def read(self, count: int) -> None:
        batch = []
        for _ in range(count):
            partition = self.turn % PARTITIONS
            self.turn += 1
            if self.position[partition] < len(self.inputs[partition]):
                batch.append(self.inputs[partition][self.position[partition]])
                self.position[partition] += 1
        self.cluster.outputs += self.processor.on_damage_events(batch)
        self.layer.hold(batch)

    def commit(self) -> None:
        """Faust commits the offset after the last released event (events are released in order)."""
        for message in self.released:
            self.cluster.committed[message.partition] = max(self.cluster.committed.get(message.partition, 0),
                                                            message.offset + 1)

    def drain(self) -> None:
        while any(self.position[p] < len(self.inputs[p]) for p in range(PARTITIONS)):
            self.read(8)
        run(self.layer.flush())
        self.commit()


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_state_after_any_crash_equals_the_fold_of_the_distinct_events(history) -> None:
    log, steps, wipes = history
    inputs: dict[int, list[Incoming]] = {p: [] for p in range(PARTITIONS)}
    for product, kind, pack, event_id in log:
        partition = partition_of(product)
        topic = "shipments" if kind == "shipment" else "damage-reports"
        inputs[partition].append(Incoming(topic, partition, len(inputs[partition]), product.encode(),
                                          event_bytes(product, kind, pack, event_id)))
    cluster = Cluster()
    worker = Worker(cluster, inputs)
    for (step, arg), wipe in zip(steps, wipes):
        if step == "read":
            worker.read(arg)
        elif step == "flush":
            run(worker.layer.flush())
        elif step == "commit":
            worker.commit()
        else:
            if step == "crash_in_flush":
                worker.sender.crash_at = arg
            elif step == "crash_before_acks":
                worker.sender.crash_before_acks = True
            if step != "crash":
                try:
                    run(worker.layer.flush())
                except Crash:
                    pass
            cluster.recover(wipe)
            worker = Worker(cluster, inputs)
    worker.drain()

    expected: dict[str, dict[str, list[int]]] = {}
    for product, kind, pack, _ in dict.fromkeys(log):  # each distinct event once
        counts = expected.setdefault(product, {"shipments": [0] * 4, "damages": [0] * 4})
        counts["shipments" if kind == "shipment" else "damages"][[p.value for p in PACK_TYPES].index(pack)] += 1

    def counts(table: dict[str, Any]) -> dict[str, dict[str, list[int]]]:  # the products table's evidence
        return {p: {"shipments": v["stats"]["shipments"], "damages": v["stats"]["damages"]}
                for p, v in table.items()}

    assert counts(cluster.table("products")) == expected
    cluster.recover(wipe=False)  # the worker's own disk, as a restart under the same name would see it
    local = {decode_key(k): json.loads(v) for store in [cluster.stores["products"]]
             for p in range(PARTITIONS) for k, v in store.items(p)}
    assert counts(local) == expected
    assert cluster.table("damage_stats") == {}  # read only, for what older workers kept there


def test_a_flush_writes_one_record_per_changed_product_whatever_changed_in_it() -> None:
    """Counts, the marketplace a shipment taught, the decision: one products record per product per flush (a
    second table for the counts cost a second record for every product)."""
    inputs: dict[int, list[Incoming]] = {p: [] for p in range(PARTITIONS)}
    products = PRODUCTS[:6]
    for round_ in range(3):
        for product in products:
            partition = partition_of(product)
            inputs[partition].append(Incoming("shipments", partition, len(inputs[partition]), product.encode(),
                                              event_bytes(product, "shipment", "box", f"{product}-{round_}")))
    cluster = Cluster()
    worker = Worker(cluster, inputs)
    worker.drain()
    written = Counter(table for (table, _), records in cluster.changelog.items() for _ in records)
    assert written == {"products": len(products)}
    for product, value in cluster.table("products").items():
        assert value["stats"]["shipments"][[p.value for p in PACK_TYPES].index("box")] == 3
        assert sum(value["stats"]["shipments"]) == 3 and value["decision"] and value["marketplace"]
    assert len(cluster.outputs) == len(products)  # one decision each


def test_the_cache_stays_within_its_bound_however_keys_are_rewritten() -> None:
    cluster = Cluster()
    layer = layer_for(cluster, Sender(cluster), cache_size=3)
    with layer.at("shipments", 0):
        for round_ in range(4):
            for n in range(6):
                layer["damage_stats"][f"P{n}"] = {"n": n, "round": round_}
                layer["products"].get(f"P{n}")  # a miss, remembered as missing
            run(layer.flush())
            sizes = sum(len(t.cache) for t in layer.tables.values())
            assert sizes == layer.cached <= 3
