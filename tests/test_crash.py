"""kill -9 at the worst instants against the real broker, then a restart under the same name, a move of the
partitions to a worker with an empty disk, and to a scale-out pair: the counts in the changelog, in each
worker's own RocksDB and in the decisions' evidence equal ground truth exactly.

Each round gives every product exactly one shipment, so each is that product's *last* event: nothing later
rewrites a value a crash left wrong. The worker kills itself at a named point (streams/failpoints.py):
(a) a statistics batch applied, its outputs handed to the producer, no flush yet;
(b) a flush that has handed half of its changelog records to the producer;
(c) a flush that has handed all of them, none acknowledged yet."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from models.packtypes import PACK_TYPES
from streams.inspect import read_local_state, read_local_stats, read_stats, read_table, read_topic
from streams.serde import Serde
from streams.settings import Settings
from streams.topics import create_topics, producer_config
from tests.harness import WorkerProcess, worker_settings
from tests.samples import SAMPLES
from tests.test_worker import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PRODUCTS = 1000
SERDE = Serde()
Truth = dict[str, list[int]]


@pytest.fixture
def base(kafka_settings: Settings) -> Settings:
    settings = kafka_settings.replace(session_timeout_s=6.0, state_flush_interval_s=0.5)
    create_topics(settings)
    return settings


def ship_round(settings: Settings, round_number: int, truth: Truth) -> None:
    """One shipment for every product, in a package type that varies by product and round."""
    producer = Producer(producer_config(settings))
    for i in range(PRODUCTS):
        product = f"C{i:05d}"
        pack = PACK_TYPES[(i + round_number) % len(PACK_TYPES)]
        record = {**SAMPLES["shipment"], "event_id": str(uuid.uuid4()), "product_id": product,
                  "shipment_id": f"S{round_number}-{i}", "package_type": pack.value, "marketplace": "NA"}
        producer.produce(settings.topic_prefix + "shipments", key=product.encode(), value=SERDE.encode("shipment", record))
        truth.setdefault(product, [0] * len(PACK_TYPES))[pack.index] += 1
        producer.poll(0)
    assert producer.flush(30) == 0


def differences(values: dict[str, dict], truth: Truth) -> list[str]:
    wrong = [f"{p}: expected {shipments}, got {values.get(p, {}).get('shipments')}"
             for p, shipments in truth.items() if values.get(p, {}).get("shipments") != shipments]
    wrong += [f"{p}: damages {v['damages']}" for p, v in values.items() if any(v.get("damages", ()))]
    return wrong


def assert_changelog_converges(settings: Settings, truth: Truth) -> None:
    wrong = wait_until(lambda: differences(read_stats(settings), truth), lambda w: not w, 120)
    assert wrong == [], f"{len(wrong)} products differ from ground truth in the changelog, e.g. {wrong[:3]}"


def assert_local_state(workers: list[WorkerProcess], truth: Truth) -> None:
    """Every stopped worker's own store: never ahead of the truth; the owner of each product exact."""
    local = [read_local_stats(w.settings.worker_dir) for w in workers]
    ahead = [f"{p}: {v['shipments']}" for state in local for p, v in state.items()
             if any(a > b for a, b in zip(v["shipments"], truth[p]))]
    assert ahead == [], f"local state ahead of ground truth: {ahead[:3]}"
    best = {p: max((s[p] for s in local if p in s), key=lambda v: sum(v["shipments"]), default={})
            for p in truth}
    wrong = differences(best, truth)
    assert wrong == [], f"{len(wrong)} products differ from ground truth in the workers' stores, e.g. {wrong[:3]}"


def assert_decisions_match(settings: Settings, first_round: Truth, truth: Truth) -> None:
    """Each product's first decision was made on its first shipment, so its evidence is that shipment;
    a decision re-published after a crash (same event id) is the same decision; none counts more than
    happened."""
    decisions = read_topic(settings, settings.topic_prefix + "pack-type-decisions", "pack_type_decision")
    by_id: dict[str, tuple] = {}
    first: dict[str, list[int]] = {}
    for decision in decisions:
        shipments = [e["shipments"] for e in decision["evidence"]]
        content = (decision["package_type"], decision["status"], tuple(shipments))
        assert by_id.setdefault(decision["event_id"], content) == content, decision["product_id"]
        assert all(a <= b for a, b in zip(shipments, truth[decision["product_id"]])), decision
        first.setdefault(decision["product_id"], shipments)
    assert first == first_round


def await_self_kill(worker: WorkerProcess) -> None:
    assert worker.process.wait(180) == -9, "the worker did not reach its failpoint"


@pytest.mark.parametrize("failpoint", ["stats.applied", "flush.sending", "flush.sent"])
def test_kill_9_at_the_worst_instant_loses_and_double_counts_nothing(base: Settings, tmp_path: Path,
                                                                      trained_bundle: Path, failpoint: str) -> None:
    started: list[WorkerProcess] = []

    def start(name: str, **changes) -> WorkerProcess:
        worker = WorkerProcess(worker_settings(base, tmp_path, name, trained_bundle, **changes), tmp_path / f"{name}.log")
        started.append(worker)
        worker.start()
        return worker

    try:
        truth: Truth = {}
        crashing = start("worker-0", failpoint=failpoint)
        ship_round(base, 0, truth)
        first_round = {p: list(v) for p, v in truth.items()}
        await_self_kill(crashing)

        restarted = start("worker-0")  # the same disk, as a restarted pod
        assert_changelog_converges(base, truth)
        restarted.stop()
        assert_local_state([restarted], truth)

        moved = start("worker-1")  # an empty disk: everything restored from the changelog
        ship_round(base, 1, truth)
        assert_changelog_converges(base, truth)
        moved.stop()
        assert_local_state([moved], truth)

        pair = [start("worker-2"), start("worker-3")]  # scale-out onto two more empty disks
        ship_round(base, 2, truth)
        assert_changelog_converges(base, truth)
        time.sleep(1.0)  # the standby of each partition catches up with the changelog
        for worker in pair:
            worker.stop()
        assert_local_state(pair, truth)
        assert_decisions_match(base, first_round, truth)
    finally:
        for worker in started:
            worker.stop()
            assert worker.gone()


def noise_png(side: int, seed: int) -> bytes:
    """A PNG that does not compress: random pixels."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_inputs_near_the_broker_limit_are_processed_or_dead_lettered_without_a_restart(
        base: Settings, tmp_path: Path, trained_bundle: Path) -> None:
    """A valid 900 KB capture and a 900 KB catalog record (under the broker's 1 MiB default) go through
    state and its changelog; a 1,040,000-byte garbage message becomes a dead letter that fits its topic;
    the good events around them are processed; the worker never restarts."""
    worker = WorkerProcess(worker_settings(base, tmp_path, "worker-0", trained_bundle), tmp_path / "worker-0.log")
    worker.start()
    try:
        big, small = "BIG-0001", "SMALL-0001"
        views = [{"view": view, "media_type": "image/png", "image": noise_png(272, seed)}
                 for seed, view in enumerate(["top", "front", "side", "oblique"])]
        capture = SERDE.encode("tunnel_capture", {**SAMPLES["tunnel_capture"], "product_id": big, "views": views})
        catalog = SERDE.encode("catalog_update", {**SAMPLES["catalog_update"], "product_id": big,
                                                  "description": "Steinzeug, handbemalt. " * 39_000})
        assert 880_000 < len(capture) < 1_000_000 and 880_000 < len(catalog) < 1_000_000
        garbage = b"{" + b"\x13" * 1_039_999
        producer = Producer(producer_config(base, **{"message.max.bytes": 2_000_000}))
        topic = base.topic_prefix
        placed: dict[str, tuple[int, int]] = {}

        def remember(label: str):
            return lambda error, msg: placed.__setitem__(label, (msg.partition(), msg.offset()))

        def ship(product: str, n: int) -> None:
            record = {**SAMPLES["shipment"], "event_id": str(uuid.uuid4()), "product_id": product,
                      "shipment_id": f"S-{n}", "package_type": "box", "marketplace": "EU"}
            producer.produce(topic + "shipments", key=product.encode(), value=SERDE.encode("shipment", record))

        ship(small, 1)
        producer.produce(topic + "catalog-updates", key=big.encode(), value=catalog, on_delivery=remember("catalog"))
        producer.produce(topic + "tunnel-captures", key=big.encode(), value=capture, on_delivery=remember("capture"))
        producer.produce(topic + "shipments", key=small.encode(), value=garbage, on_delivery=remember("garbage"))
        ship(small, 2)
        ship(big, 3)
        assert producer.flush(30) == 0 and len(placed) == 3

        stats = wait_until(lambda: read_stats(base),
                           lambda s: sum(s.get(small, {}).get("shipments", [])) == 2 and big in s, 90)
        assert sum(stats[small]["shipments"]) == 2 and sum(stats[big]["shipments"]) == 1
        products = wait_until(lambda: read_table(base, "products"), lambda p: "model" in p.get(big, {}), 90)
        assert products[big]["model"]["version"]  # scored on its 900 KB capture and catalog record
        assert read_table(base, "captures")[big] == capture and read_table(base, "catalog")[big] == catalog
        letters = read_topic(base, topic + "shipments.dlq", "dead_letter")
        [letter] = [l for l in letters if (l["partition"], l["offset"]) == placed["garbage"]]
        assert "wrong magic byte" in letter["reason"] and letter["original_size"] == len(garbage)
        assert garbage.startswith(letter["original_value"])
        assert worker.process.poll() is None and worker.log_path.read_text().count("=== start") == 1
    finally:
        worker.stop()
        assert worker.gone()
