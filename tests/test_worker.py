"""The worker against the real broker: exact counts end to end, through kill -9, scale-out, poison input,
operator mistakes, and the feedback loop that corrects a wrong model."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar

import psutil
import pytest
from confluent_kafka import Producer

from models.packtypes import PackType
from streams.inspect import read_stats, read_table, read_topic
from streams.serde import Serde
from streams.settings import Settings
from streams.simulator import SimulationConfig, SimulationResult, run_simulation
from streams.topics import create_topics, producer_config
from tests.harness import WorkerProcess, worker_settings, write_marketplaces
from tests.samples import SAMPLES

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
T = TypeVar("T")


@pytest.fixture
def base(kafka_settings: Settings) -> Settings:
    settings = kafka_settings.replace(session_timeout_s=6.0, catalog_wait_s=5.0)
    create_topics(settings)
    return settings


@pytest.fixture
def workers(tmp_path: Path):
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str, bundle: Path, **changes) -> WorkerProcess:
        worker = WorkerProcess(worker_settings(settings, tmp_path, name, bundle, **changes), tmp_path / f"{name}.log")
        started.append(worker)
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop()
        assert worker.gone()


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(1.0)


def count_mismatches(settings: Settings, result: SimulationResult) -> list[str]:
    stats = read_stats(settings)
    wrong = []
    for product in result.truth.shipments:
        expected = (result.truth.shipments[product], result.truth.damages.get(product, [0, 0, 0, 0]))
        got = stats.get(product)
        if got is None or (got["shipments"], got["damages"]) != expected:
            wrong.append(f"{product}: expected {expected}, got {got and (got['shipments'], got['damages'])}")
    return wrong


def undecided(settings: Settings, result: SimulationResult) -> list[str]:
    products = read_table(settings, "products")
    return [p.product_id for p in result.products if not (products.get(p.product_id) or {}).get("decision")]


def assert_converges(settings: Settings, result: SimulationResult, timeout_s: float = 90.0) -> None:
    mismatches = wait_until(lambda: count_mismatches(settings, result), lambda m: not m, timeout_s)
    assert mismatches == [], f"{len(mismatches)} products differ from ground truth, e.g. {mismatches[:3]}"
    missing = wait_until(lambda: undecided(settings, result), lambda m: not m, 30)
    assert missing == [], f"{len(missing)} products without a decision, e.g. {missing[:3]}"


def simulate_in_background(settings: Settings, config: SimulationConfig) -> tuple[threading.Thread, list]:
    box: list = []
    thread = threading.Thread(target=lambda: box.append(run_simulation(settings, config)), daemon=True)
    thread.start()
    return thread, box


SMALL = SimulationConfig(products=150, rounds=6, units_per_round=3, round_interval_s=1.0, captures_per_s=300,
                         duplicate_rate=0.05, report_delay_s_per_day=0.02, seed=7)


def test_end_to_end_every_product_decided_and_counts_exact(base: Settings, workers, trained_bundle: Path) -> None:
    """The simulated center with its test lab through one worker: counts equal the ground truth, every product
    is decided, and the lab's results steer the decisions (after the assertions on counts)."""
    worker = workers(base, "worker-0", trained_bundle)
    listening = {c.laddr.ip for p in [psutil.Process(worker.process.pid)] for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}  # the web server too (Faust binds 0.0.0.0 unless told otherwise)
    result = run_simulation(base, dataclasses.replace(SMALL, lab_tests_per_round=15))
    assert sum(map(sum, result.truth.shipments.values())) == 150 * 6 * 3
    assert sum(map(sum, result.truth.damages.values())) > 0  # the damage path is exercised
    assert_converges(base, result)
    metrics = scrape_metrics(worker.settings)
    shipments_seen = metrics[f'packwise_events_total{{topic="{base.topic_prefix}shipments"}}']
    assert shipments_seen >= 150 * 6 * 3  # duplicates included
    assert metrics['packwise_batch_seconds_count{agent="damage-evidence"}'] > 0
    assert sum(v for k, v in metrics.items() if k.startswith("packwise_decisions_total{")) >= 150
    assert_lab_results_steer_decisions(base, worker.settings, result)
    worker.stop()
    # its own changelog writes were never fetched back into its memory (Faust pauses active changelog partitions in
    # its bookkeeping only; streams/changelog.py pauses them in aiokafka too)
    stopped = [json.loads(line) for line in worker.log_path.read_text().splitlines() if '"deliveries"' in line]
    assert [line["changelog_partitions_buffered"] for line in stopped] == [0]


def assert_lab_results_steer_decisions(settings: Settings, worker: Settings, result: SimulationResult) -> None:
    """A pass moves a product to the tested type with test_passed; a fail rules out the type and every lighter
    one; and no request stays open for a type that is not lighter than its product's decision."""
    assert result.test_results and any(passed for _, _, passed in result.test_results)
    def applied() -> float:
        return sum(v for k, v in scrape_metrics(worker).items() if k.startswith("packwise_test_results_total{"))

    assert wait_until(applied, lambda n: n >= len(result.test_results), 30) == len(result.test_results)
    decisions = {d["product_id"]: d for d in read_topic(settings, settings.topic_prefix + "pack-type-decisions",
                                                         "pack_type_decision")}  # the latest per product
    assert any(d["reason"].startswith("test_passed") for d in decisions.values())
    for product, pack, passed in result.test_results:
        if not passed:
            assert PackType(decisions[product]["package_type"]).index > pack.index, (product, pack)
    still_open: dict[str, dict] = {}
    for request in read_topic(settings, settings.topic_prefix + "test-requests", "test_request"):
        if request["status"] == "open":
            still_open[request["request_id"]] = request
        else:
            still_open.pop(request["request_id"], None)
    for request in still_open.values():
        decided = PackType(decisions[request["product_id"]]["package_type"])
        assert PackType(request["package_type"]).index < decided.index, request


def metrics_page(settings: Settings) -> str:
    """The worker's GET /metrics, as served."""
    from urllib.request import urlopen

    with urlopen(f"http://{settings.web_host}:{settings.web_port}/metrics", timeout=10) as response:
        return response.read().decode()


def scrape_metrics(settings: Settings) -> dict[str, float]:
    """The worker's GET /metrics as {name{labels}: value}."""
    samples = {}
    for line in metrics_page(settings).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_kill_9_mid_stream_loses_and_double_counts_nothing(base: Settings, workers, trained_bundle: Path) -> None:
    worker = workers(base, "worker-0", trained_bundle)
    thread, box = simulate_in_background(base, SMALL)
    time.sleep(5.0)  # the tunnel has passed and shipping has begun
    worker.kill()
    worker.start()  # same name: same RocksDB folder, as a restarted pod
    thread.join(300)
    assert_converges(base, box[0])


def test_a_worker_joins_and_another_leaves_mid_stream(base: Settings, workers, trained_bundle: Path) -> None:
    first = workers(base, "worker-0", trained_bundle)
    thread, box = simulate_in_background(base, SMALL)
    time.sleep(3.0)
    workers(base, "worker-1", trained_bundle)
    time.sleep(3.0)
    first.stop()
    thread.join(300)
    assert_converges(base, box[0])


def test_hostile_input_goes_to_dead_letters_with_coordinates(base: Settings, workers, trained_bundle: Path) -> None:
    """The hostile corpus (tests/hostile.py), each message between two good ones, through a real worker: every bad
    message lands in its topic's DLQ with its coordinates and reason, every good one is applied exactly once
    (an exact resend is silent, a conflicting one a dead letter), and the worker never stops."""
    from tests.hostile import BASES, conflicting_duplicate, corpus

    worker = workers(base, "worker-0", trained_bundle)
    serde = Serde()
    producer = Producer(producer_config(base))
    placed: dict[tuple[str, int], tuple[str, int, int]] = {}  # (topic, index) -> reason, partition, offset
    good = {contract: 0 for contract in BASES}

    def send(topic: str, key: bytes | None, value: bytes | None, label=None) -> None:
        def remember(error, msg) -> None:
            assert error is None, error
            if label is not None:
                placed[label[:2]] = (label[2], msg.partition(), msg.offset())
        producer.produce(topic, key=key, value=value, on_delivery=remember)

    def send_good(contract: str) -> None:
        send(base.topic_prefix + BASES[contract], SAMPLES[contract]["product_id"].encode(),
             serde.encode(contract, {**SAMPLES[contract], "event_id": str(uuid.uuid4())}))
        good[contract] += 1

    for index, item in enumerate(corpus(serde)):
        send_good(item.contract)
        send(base.topic_prefix + BASES[item.contract], item.key, item.value,
             (base.topic_prefix + BASES[item.contract], index, item.reason))
    for contract in ("shipment", "damage_report"):
        first, conflicting = conflicting_duplicate(serde, contract)
        topic = base.topic_prefix + BASES[contract]
        key = SAMPLES[contract]["product_id"].encode()
        send(topic, key, first)
        send(topic, key, first)  # an exact resend: silent, not counted
        send(topic, key, conflicting, (topic, -1, "conflicting_duplicate"))
        good[contract] += 1
    for contract in BASES:
        send_good(contract)
    assert producer.flush(30) == 0

    def dead_letters() -> dict[tuple[str, int, int], dict]:
        letters = {}
        for topic_base in BASES.values():
            for record in read_topic(base, base.topic_prefix + topic_base + ".dlq", "dead_letter"):
                letters[(record["topic"], record["partition"], record["offset"])] = record
        return letters

    letters = wait_until(dead_letters, lambda found: len(found) >= len(placed), 90)
    assert len(letters) == len(placed) > 80
    for (topic, _), (reason, partition, offset) in placed.items():
        assert reason in letters[(topic, partition, offset)]["reason"]
    product = SAMPLES["shipment"]["product_id"]
    stats = wait_until(lambda: read_stats(base).get(product),
                       lambda s: s is not None and sum(s["damages"]) >= good["damage_report"]
                       and sum(s["shipments"]) >= good["shipment"], 30)
    assert (sum(stats["shipments"]), sum(stats["damages"])) == (good["shipment"], good["damage_report"])
    assert worker.process.poll() is None and worker.starts == 1


def test_feedback_loop_moves_a_misjudged_group_to_a_safe_package(base: Settings, workers, trained_bundle: Path,
                                                                 tmp_path: Path) -> None:
    target = 0.05
    settings = base.replace(marketplaces_file=str(write_marketplaces(tmp_path / "markets.json", target)))
    workers(settings, "worker-0", trained_bundle)
    config = SimulationConfig(products=120, rounds=14, units_per_round=6, round_interval_s=1.0, captures_per_s=300,
                              report_rate=1.0, report_delay_s_per_day=0.02, sabotaged=12, seed=21)
    result = run_simulation(settings, config)
    sabotaged = set(result.sabotaged)
    first_round = [(p, pack) for r, p, pack, _ in result.truth.log if r == 0 and p in sabotaged]
    shipped_light = {p for p, pack in first_round if pack.index < PackType.BOX.index}
    assert shipped_light, "the model sent none of the misjudged products light: nothing for the loop to correct"
    late = [(pack, damaged) for r, p, pack, damaged in result.truth.log if r >= config.rounds - 4 and p in shipped_light]
    late_rate = sum(d for _, d in late) / len(late)
    early = [d for r, p, _, d in result.truth.log if r == 0 and p in shipped_light]
    assert sum(early) / len(early) > target  # they really were breaking
    assert late_rate <= target, f"damage rate of the misjudged group stayed at {late_rate:.1%}"
    triggers = [t for t in read_topic(settings, settings.topic_prefix + "relabel-triggers", "relabel_trigger")
                if t["product_id"] in shipped_light]
    assert {t["cause"] for t in triggers} >= {"damage_exceeds_target"}
    moved = {t["product_id"] for t in triggers
             if PackType(t["to_package_type"]).index > PackType(t["from_package_type"]).index}
    assert moved == shipped_light


def test_customer_text_stays_in_damage_reports_and_their_dead_letters(base: Settings, workers, trained_bundle: Path,
                                                                      tmp_path: Path) -> None:
    """A damage report's comment is the customer's own words: through a worker logging at DEBUG, comments on
    valid reports and on reports that become dead letters (empty reason code, a key of another product, an
    event time in the future, a conflicting duplicate, a comment that is not UTF-8) appear nowhere but in
    damage-reports and its DLQ: not in a log line, the metrics page, a dead letter's reason, or any other
    topic (outputs, changelogs, other DLQs). The DLQ keeps them (replay needs the original bytes)."""
    from confluent_kafka.admin import AdminClient

    from streams.inspect import _read_all
    from streams.topics import client_config

    marker = "KUNDENTEXT-7f3a"  # in every comment: what must not escape
    worker = workers(base.replace(log_level="DEBUG"), "worker-0", trained_bundle)
    serde = Serde()
    producer = Producer(producer_config(base))
    product = "B0CUSTOMER1"
    reports = base.topic_prefix + "damage-reports"

    def report(n: int, **changes) -> dict:
        return {**SAMPLES["damage_report"], "event_id": str(uuid.uuid4()), "product_id": product,
                "comment": f"{marker} Griff #{n} abgebrochen, bitte melden Sie sich unter 0171 5551234", **changes}

    for n in range(5):  # shipments, so the product has statistics to decide on
        producer.produce(base.topic_prefix + "shipments", key=product.encode(), value=serde.encode(
            "shipment", {**SAMPLES["shipment"], "event_id": str(uuid.uuid4()), "product_id": product}))
    valid = [report(n) for n in range(3)]
    for record in valid:
        producer.produce(reports, key=product.encode(), value=serde.encode("damage_report", record))
    first = report(10)
    invalid = [  # (key, value): each a dead letter
        (product, serde.encode("damage_report", report(11, reason_code=" "), validate=False)),
        ("B0SOMEONE-ELSE", serde.encode("damage_report", report(12))),
        (product, serde.encode("damage_report", report(13, reported_at=SAMPLES["damage_report"]["reported_at"]
                                                       .replace(year=2999)))),
        (product, serde.encode("damage_report", {**first, "comment": first["comment"] + " (zweite Fassung)"})),
        (product, serde.encode("damage_report", report(14)).replace(b"Griff", b"Gr\xffff")),
    ]
    producer.produce(reports, key=product.encode(), value=serde.encode("damage_report", first))
    for key, value in invalid:
        producer.produce(reports, key=key.encode(), value=value)
    assert producer.flush(30) == 0

    dlq = reports + ".dlq"
    letters = wait_until(lambda: read_topic(base, dlq, "dead_letter"), lambda found: len(found) >= len(invalid), 90)
    assert len(letters) == len(invalid)
    assert all(marker.encode() in letter["original_value"] for letter in letters)  # kept for replay
    assert [letter["reason"] for letter in letters if marker in letter["reason"]] == []
    stats = wait_until(lambda: read_stats(base).get(product),
                       lambda s: s is not None and sum(s["damages"]) == len(valid) + 1 and sum(s["shipments"]) == 5, 60)
    assert (sum(stats["shipments"]), sum(stats["damages"])) == (5, len(valid) + 1)
    decisions = wait_until(lambda: read_topic(base, base.topic_prefix + "pack-type-decisions", "pack_type_decision"),
                           lambda found: any(d["product_id"] == product for d in found), 60)
    assert any(d["product_id"] == product for d in decisions)  # the outputs were written, and can be searched

    page = metrics_page(worker.settings)
    assert "packwise_dead_letters_total" in page and marker not in page
    worker.stop()  # every line flushed
    log = worker.log_path.read_bytes()
    assert b'"dead_letter"' in log and b'"level": "debug"' in log  # it did log the dead letters, at DEBUG
    assert marker.encode() not in log
    admin = AdminClient(client_config(base))
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith((base.topic_prefix, base.app_id))]
    assert len(topics) >= 16
    holding = sorted(t for t in topics if any(marker.encode() in (value or b"") or marker.encode() in (key or b"")
                                              for key, value in _read_all(base, t, 30)))
    assert holding == sorted([reports, dlq])



@pytest.mark.parametrize("max_dirty_bytes", [1, 256 << 20])
def test_captures_and_catalog_records_flush_once_their_bytes_reach_the_bound(base: Settings, workers,
                                                                             trained_bundle: Path,
                                                                             max_dirty_bytes: int) -> None:
    """PACKWISE_STATE_MAX_DIRTY_BYTES reaches the worker's state layer: with flushes ten minutes apart, a catalog
    record is in its changelog within seconds once its bytes reach the bound, and not before the interval when
    they do not (the control that shows the interval alone would hold it)."""
    worker = workers(base, "worker-0", trained_bundle, state_flush_interval_s=600.0,
                     state_max_dirty_bytes=max_dirty_bytes)
    product = "B0FLUSHBYTES"
    producer = Producer(producer_config(base))
    producer.produce(base.topic_prefix + "catalog-updates", key=product.encode(), value=Serde().encode(
        "catalog_update", {**SAMPLES["catalog_update"], "event_id": str(uuid.uuid4()), "product_id": product}))
    producer.flush(10)
    events = f'packwise_events_total{{topic="{base.topic_prefix}catalog-updates"}}'

    def applied() -> float:
        try:
            return scrape_metrics(worker.settings).get(events, 0.0)
        except OSError:  # the web server is not up yet
            return 0.0

    assert wait_until(applied, lambda n: n >= 1, 90.0) >= 1, "the worker applied the catalog record"
    flushed = wait_until(lambda: product in read_table(base, "catalog"), bool, 20.0)
    assert flushed == (max_dirty_bytes == 1)
