"""A simulated fulfillment center: the catalog feed, the conveyor tunnel, shipping and the returns center as
confluent-kafka producers, closing the loop through the decisions topic.

Products come from the synthetic world (models/world.py) with their hidden damage probabilities. Each
product is listed in the catalog, rides the tunnel once, and is then shipped in rounds, every unit in the
package type the current decision says (the box while none has arrived). Damaged units are reported
with a delay (world days compressed to seconds) or never. The simulator keeps the ground truth the
worker must reproduce exactly: the shipments and damage reports it published, per product and type. With
a lab (lab_tests_per_round), a simulated test lab answers the most valuable open test requests each round.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
from confluent_kafka import Consumer, Producer

from models.packtypes import PACK_TYPES, PackType
from models.world import Product, World, WorldConfig, capture_record, catalog_record, event_uuid, ship
from streams.errors import PackwiseError
from streams.lab import SimulatedLab
from streams.processor import TopicNames
from streams.serde import Serde
from streams.settings import Settings
from streams.topics import admin_client, client_config, existing_partitions, producer_config

CONNECT_TIMEOUT_S = 10.0  # how long an unreachable broker is tried before the simulation is refused


@dataclass(frozen=True)
class SimulationConfig:
    products: int = 300
    seed: int = 7  # the world's seed: use one the model was not trained on
    rounds: int = 10  # shipping rounds after every product has been captured
    units_per_round: int = 3  # units of each product shipped per round
    round_interval_s: float = 1.0  # wall time between shipping rounds
    captures_per_s: float = 200.0  # conveyor pace
    report_rate: float = 0.7  # share of damages that are ever reported
    report_delay_s_per_day: float = 0.05  # world days of report delay, compressed to wall seconds
    duplicate_rate: float = 0.0  # share of shipments/reports the producer sends twice (same event id)
    sabotaged: int = 0  # products made far more fragile in light packaging than they look
    decision_wait_s: float = 0.0  # after the last round, how long to wait for decisions of every product
    lab_tests_per_round: int = 0  # open test requests the simulated lab answers per round (streams/lab.py); 0: none


@dataclass
class GroundTruth:
    """What the worker's damage_stats must equal: unique shipments and reports published."""

    shipments: dict[str, list[int]] = field(default_factory=dict)
    damages: dict[str, list[int]] = field(default_factory=dict)
    damaged_units: dict[str, list[int]] = field(default_factory=dict)  # incl. never reported
    log: list[tuple[int, str, PackType, bool]] = field(default_factory=list)  # (round, product, type, damaged)

    def count(self, table: dict[str, list[int]], product: str, pack: PackType) -> None:
        table.setdefault(product, [0] * len(PACK_TYPES))[pack.index] += 1


@dataclass
class SimulationResult:
    truth: GroundTruth
    decisions: dict[str, PackType]
    sabotaged: list[str]
    products: list[Product]
    events_sent: int
    test_results: list[tuple[str, PackType, bool]] = field(default_factory=list)  # the lab's (product, type, passed)


def sabotage(product: Product) -> Product:
    """The same look, text and size, but it breaks in anything lighter than a box: the model is wrong."""
    return dataclasses.replace(product, damage_probability=(0.30, 0.20, 0.15, 0.0005))


def world_config(config: SimulationConfig) -> WorldConfig:
    return WorldConfig(seed=config.seed, n_products=config.products, report_rate=config.report_rate)


def choose_world(config: SimulationConfig) -> tuple[list[Product], list[str]]:
    products = World.generate(world_config(config)).products
    # Sabotage products whose honest truth would let them ship light, so a light decision is likely.
    candidates = [i for i, p in enumerate(products) if p.damage_probability_of(PackType.POLY_BAG) < 0.002]
    chosen = set(candidates[: config.sabotaged])
    products = [sabotage(p) if i in chosen else p for i, p in enumerate(products)]
    return products, [products[i].product_id for i in sorted(chosen)]


class TopicFollower:
    """Reads one topic from its start in the background and folds each message (`fold`, under a lock); the
    simulator follows the decisions with one, its test lab the test requests."""

    def __init__(self, settings: Settings, serde: Serde, topic: str, group: str) -> None:
        self._lock = threading.Lock()
        self._consumer = Consumer(client_config(settings, **{"group.id": group, "auto.offset.reset": "earliest",
                                                             "enable.auto.commit": False}))
        self._consumer.subscribe([topic])
        self._serde = serde
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    def fold(self, key: str, value: bytes | None) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is None or message.error() or message.key() is None:
                continue
            with self._lock:
                self.fold(message.key().decode(), message.value())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


class DecisionFollower(TopicFollower):
    """The package type the warehouse ships each product in: its current decision."""

    def __init__(self, *args) -> None:
        self.current: dict[str, PackType] = {}
        super().__init__(*args)

    def fold(self, product: str, value: bytes | None) -> None:
        if value is None:
            self.current.pop(product, None)
        else:
            self.current[product] = PackType(self._serde.decode("pack_type_decision", value)["package_type"])


class RequestFollower(TopicFollower):
    """The test requests open now, by request id (a lifecycle record that closes one removes it)."""

    def __init__(self, *args) -> None:
        self.open: dict[str, dict] = {}
        super().__init__(*args)

    def fold(self, _product: str, value: bytes | None) -> None:
        if value is None:
            return
        request = self._serde.decode("test_request", value)
        request_id = request.get("request_id") or request["event_id"]
        if request.get("status", "open") == "open":
            self.open[request_id] = request
        else:
            self.open.pop(request_id, None)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.open.values())


def produce_keyed(producer: Producer, topic: str, product_id: str | None, value: bytes,
                  on_delivery: Callable | None = None) -> None:
    """Queue one record keyed by its product id, as every packwise topic is keyed. A record without one is
    refused before anything is sent: on catalog-updates, which is compacted, the broker rejects a null key
    and librdkafka then fails the whole batch to that partition, good records with it."""
    if not product_id:
        raise PackwiseError(f"refusing to send a record without a product id to {topic}: packwise topics are "
                            f"keyed by product id (got {product_id!r})")
    while True:
        try:
            producer.produce(topic, key=product_id.encode(), value=value, on_delivery=on_delivery)
            return
        except BufferError:  # local queue full: let librdkafka drain it
            producer.poll(0.1)


def _now() -> datetime:
    return datetime.fromtimestamp(round(time.time(), 3), tz=timezone.utc)


def run_simulation(settings: Settings, config: SimulationConfig,
                   progress: Callable[[str, int, int], None] | None = None) -> SimulationResult:
    """Run the fulfillment center against the topics in `settings`; returns the ground truth."""
    # An unreachable broker is refused up front, as `topics` and `watch` refuse it: the producer alone would
    # queue every event and report the failure minutes later, after its flush timeouts.
    existing_partitions(admin_client(settings), settings, CONNECT_TIMEOUT_S)
    serde = Serde.for_settings(settings)
    serde.require_registered(("tunnel_capture", "catalog_update", "shipment", "damage_report")
                             + (("test_result",) if config.lab_tests_per_round else ()), "the simulator")
    names = TopicNames.for_settings(settings)
    products, sabotaged = choose_world(config)
    outcomes = world_config(config)  # reporting rate and delay of damage reports
    rng = np.random.default_rng([config.seed, 99])
    truth = GroundTruth()
    producer = Producer(producer_config(settings))
    sent = 0
    failures: list[str] = []

    def delivered(error, message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error.str()}")

    def send(topic: str, key: str, contract: str, record: dict, copies: int = 1) -> None:
        nonlocal sent
        value = serde.encode(contract, record)
        for _ in range(copies):
            produce_keyed(producer, topic, key, value, delivered)
            sent += 1
        producer.poll(0)

    def copies() -> int:
        return 2 if rng.random() < config.duplicate_rate else 1

    follower = DecisionFollower(settings, serde, names.decisions, f"{settings.app_id}-simulator-{config.seed}")
    requests = lab = None
    if config.lab_tests_per_round:
        requests = RequestFollower(settings, serde, names.tests, f"{settings.app_id}-lab-{config.seed}")
        lab = SimulatedLab({p.product_id: p for p in products}, config.lab_tests_per_round,
                      np.random.default_rng([config.seed, 77]),
                      lambda product, record: send(names.test_results, product, "test_result", record))
    try:
        for i, product in enumerate(products):
            send(names.catalog, product.product_id, "catalog_update", {**catalog_record(product), "updated_at": _now()})
        producer.flush(30)
        pace = 1.0 / config.captures_per_s
        for i, product in enumerate(products):
            started = time.monotonic()
            capture = {**capture_record(product, rng), "captured_at": _now()}
            send(names.captures, product.product_id, "tunnel_capture", capture)
            if progress:
                progress("captures", i + 1, len(products))
            time.sleep(max(0.0, pace - (time.monotonic() - started)))
        producer.flush(30)

        reports: list[tuple[float, int, Product, dict]] = []  # due time, tie-breaker, product, record
        for round_number in range(config.rounds):
            round_started = time.monotonic()
            for product in products:
                pack = follower.current.get(product.product_id, PackType.BOX)
                for _ in range(config.units_per_round):
                    shipment_id = event_uuid(rng)
                    record = {"event_id": event_uuid(rng), "product_id": product.product_id,
                              "shipment_id": shipment_id, "package_type": pack.value,
                              "marketplace": product.marketplace, "fulfillment_center": "FC-SEA1",
                              "shipped_at": _now()}
                    send(names.shipments, product.product_id, "shipment", record, copies())
                    truth.count(truth.shipments, product.product_id, pack)
                    outcome = ship(product, pack, rng, outcomes)
                    truth.log.append((round_number, product.product_id, pack, outcome.damaged))
                    if outcome.damaged:
                        truth.count(truth.damaged_units, product.product_id, pack)
                    if outcome.reported:
                        report = {"event_id": event_uuid(rng), "product_id": product.product_id,
                                  "shipment_id": shipment_id, "package_type": pack.value, "source": outcome.source,
                                  "reason_code": outcome.reason_code, "comment": None}
                        due = time.monotonic() + outcome.report_delay.days * config.report_delay_s_per_day
                        heapq.heappush(reports, (due, len(reports) + sent, product, report))
            _send_due_reports(reports, time.monotonic(), send, names, truth, copies)
            if lab is not None:
                lab.round(requests.snapshot())
            producer.flush(30)
            if progress:
                progress("shipping rounds", round_number + 1, config.rounds)
            time.sleep(max(0.0, config.round_interval_s - (time.monotonic() - round_started)))
        _send_due_reports(reports, float("inf"), send, names, truth, copies)
        undelivered = producer.flush(60)
        if undelivered or failures:
            raise PackwiseError(f"the simulator could not deliver {len(failures) + undelivered} events to "
                                f"{settings.bootstrap_servers}: "
                                + ("; ".join(failures[:3]) if failures else "still queued after 60 s"))
        deadline = time.monotonic() + config.decision_wait_s
        while time.monotonic() < deadline and len(follower.current) < len(products):
            time.sleep(0.2)
        return SimulationResult(truth, dict(follower.current), sabotaged, products, sent,
                                lab.results if lab is not None else [])
    finally:
        follower.close()
        if requests is not None:
            requests.close()


def _send_due_reports(reports: list, now: float, send: Callable, names: TopicNames, truth: GroundTruth,
                      copies: Callable[[], int]) -> None:
    while reports and reports[0][0] <= now:
        _, _, product, report = heapq.heappop(reports)
        send(names.damage_reports, product.product_id, "damage_report", {**report, "reported_at": _now()}, copies())
        truth.count(truth.damages, product.product_id, PackType(report["package_type"]))
