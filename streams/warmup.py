"""The simulated center's history: what a network adopting packwise already has in Kafka before its first worker.

`packwise demo` starts with it (DESIGN.md, "the learning loop"): the history of a warm-up period streams into the
run's input topics, `packwise dataset build` lands and tables it, `packwise train --data` learns from it, and only
then does the worker go live. The history is that of products shipped by a legacy policy before packwise: each
product arrives on a day of the period (its catalog record and its tunnel capture), then ships in package types
drawn uniformly, so every type has outcomes that no model chose; damages follow the world's hidden truth and are
reported late or never, as the world's customers report them.

The worker goes live at the end of the history: its consumer group's offsets are set there before it starts
(`start_group_at_end`), so it decides the products that arrive from then on, with the model trained on the
history. A production roll-out would rather let it read the history to build its evidence; at this size that is a
few minutes of the demo spent on products nobody watches.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator

import numpy as np

from models.packtypes import PACK_TYPES
from models.world import Product, World, WorldConfig, capture_record, catalog_record, event_uuid, ship
from streams.settings import Settings
from streams.validation import EVENT_TIME_FIELDS

CONTRACTS = {"catalog-updates": "catalog_update", "tunnel-captures": "tunnel_capture", "shipments": "shipment",
             "damage-reports": "damage_report"}

TIME_FIELDS = {base: EVENT_TIME_FIELDS[contract] for base, contract in CONTRACTS.items()}  # each topic's order


@dataclass(frozen=True)
class HistoryConfig:
    """A warm-up period of the simulated center (its products are the world's; the period ends where the caller
    says)."""

    seed: int = 1  # of the world: product ids P0001..., apart from a simulation's of another seed
    days: float = 150.0
    arrivals_days: float = 60.0  # products arrive over the first days of the period
    shipments_per_product: float = 50.0  # over the whole period; a product ships from its arrival on
    site: str = "FC-SEA1"


def report_share(world: WorldConfig, window_days: float) -> float:
    """The share of damaged units whose report arrives within `window_days` of the shipment in `world`: what
    `packwise train --data --report-share` takes for a dataset built with that attribution window."""
    return world.report_rate * (1.0 - math.exp(-window_days / world.report_delay_days))


def history_events(world: World, config: HistoryConfig, end: datetime, reports_until: datetime | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, list[dict]]:
    """The input topics' events of the period ending at `end`, per topic base, in product order: the damage
    reports of its shipments too, or only those sent by `reports_until` (a live run's present)."""
    rng = np.random.default_rng([config.seed, 40])
    start = end - timedelta(days=config.days)
    events: dict[str, list[dict]] = {base: [] for base in CONTRACTS}
    captures = _captures(world)
    for i, product in enumerate(world.products):
        arrival = start + timedelta(days=float(rng.uniform(0, config.arrivals_days)))
        events["catalog-updates"].append({**catalog_record(product), "updated_at": arrival})
        events["tunnel-captures"].append({**next(captures), "captured_at": arrival + timedelta(hours=1)})
        span = (end - arrival).total_seconds()
        for _ in range(rng.poisson(config.shipments_per_product * span / (config.days * 86400))):
            shipped_at = arrival + timedelta(hours=2, seconds=float(rng.uniform(0, span - 7200)))
            pack = PACK_TYPES[int(rng.integers(len(PACK_TYPES)))]
            shipment = {"event_id": event_uuid(rng), "product_id": product.product_id,
                        "shipment_id": f"S-{event_uuid(rng)[:13]}", "package_type": pack.value,
                        "marketplace": product.marketplace, "fulfillment_center": config.site,
                        "shipped_at": shipped_at}
            events["shipments"].append(shipment)
            outcome = ship(product, pack, rng, world.config)
            if outcome.reported:
                report = {"event_id": event_uuid(rng), "product_id": product.product_id,
                          "shipment_id": shipment["shipment_id"], "package_type": pack.value, "source": outcome.source,
                          "reason_code": outcome.reason_code, "comment": None,
                          "reported_at": shipped_at + outcome.report_delay}
                if reports_until is None or report["reported_at"] <= reports_until:  # the same draws either way
                    events["damage-reports"].append(report)
        if progress is not None:
            progress(i + 1, len(world.products))
    return events


PARALLEL_FROM = 2000  # products: below this, rendering the captures in this process is quicker than a pool


def _capture(product: Product, missing_view_rate: float, image_size: int) -> dict:
    return capture_record(product, np.random.default_rng([product.seed, 20]), missing_view_rate, image_size)


def _captures(world: World) -> Iterator[dict]:
    """Each product's tunnel capture, in product order: rendering the views is most of the history's cost, and
    each capture draws from its product's own generator, so a pool of processes renders the same captures."""
    render = functools.partial(_capture, missing_view_rate=world.config.missing_view_rate,
                               image_size=world.config.image_size)
    workers = min(os.cpu_count() or 1, 8)
    if len(world.products) < PARALLEL_FROM or workers < 2:
        yield from map(render, world.products)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(render, world.products, chunksize=200)


def stream_history(settings: Settings, events: dict[str, list[dict]],
                   progress: Callable[[int, int], None] | None = None) -> int:
    """Produce `events` to the input topics of `settings` in time order, keyed by product, as the network's
    producers would; returns how many, once the broker has acknowledged every one (PackwiseError otherwise)."""
    from confluent_kafka import Producer

    from streams.errors import PackwiseError
    from streams.processor import TopicNames
    from streams.serde import Serde
    from streams.simulator import produce_keyed
    from streams.topics import producer_config

    serde = Serde.for_settings(settings)
    serde.require_registered(tuple(CONTRACTS.values()), "the warm-up")
    names = TopicNames.for_settings(settings)
    topics = {"catalog-updates": names.catalog, "tunnel-captures": names.captures, "shipments": names.shipments,
              "damage-reports": names.damage_reports}
    producer = Producer(producer_config(settings, **{"linger.ms": 50, "batch.size": 1_000_000}))
    failures: list[str] = []

    def delivered(error, message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error.str()}")

    total, sent = sum(len(records) for records in events.values()), 0
    for base, records in events.items():
        for record in sorted(records, key=lambda r: r[TIME_FIELDS[base]]):
            produce_keyed(producer, topics[base], record["product_id"], serde.encode(CONTRACTS[base], record),
                          delivered)
            sent += 1
            if progress is not None and sent % 10_000 == 0:
                progress(sent, total)
    left = producer.flush(120)
    if left or failures:
        raise PackwiseError(f"the warm-up history was not fully written to Kafka: {left} messages unacknowledged, "
                            f"{len(failures)} failed ({'; '.join(failures[:3])})")
    if progress is not None:
        progress(total, total)
    return total


def start_group_at_end(settings: Settings, topics: list[str]) -> int:
    """Commit the worker group's offsets at the current end of every partition of `topics`, before any worker
    of the group runs: it starts there. Returns the partitions set."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.topics import client_config

    consumer = Consumer(client_config(settings, **{"group.id": settings.app_id, "enable.auto.commit": False}))
    try:
        offsets = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=30).topics[topic]
            for partition in metadata.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                offsets.append(TopicPartition(topic, partition, high))
        consumer.commit(offsets=offsets, asynchronous=False)
        return len(offsets)
    finally:
        consumer.close()


def printer(what: str, every_s: float = 2.0) -> Callable[[int, int], None]:
    """A progress callback that prints `what: N% in S s` to stderr every few seconds and at the end."""
    started, shown = time.monotonic(), [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - shown[0] >= every_s:
            shown[0] = now
            print(f"{what}: {done / max(total, 1):.0%} in {now - started:.0f} s", file=sys.stderr, flush=True)
    return show

