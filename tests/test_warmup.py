"""The demo's warm-up (streams/warmup.py) on the real broker: a simulated center's history written to the input
topics, every event landed by `packwise dataset build`'s lander, and the worker group set to start after it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from models.world import World, WorldConfig
from streams.landing import land
from streams.processor import TopicNames
from streams.settings import Settings
from streams.topics import client_config, create_topics
from streams.warmup import HistoryConfig, history_events, report_share, start_group_at_end, stream_history

pytestmark = pytest.mark.kafka


def test_a_warm_up_history_lands_whole_and_the_worker_group_starts_after_it(kafka_settings: Settings,
                                                                              tmp_path: Path) -> None:
    create_topics(kafka_settings)
    config, products = HistoryConfig(seed=3), 150
    now = datetime.now(timezone.utc)
    world = World.generate(WorldConfig(seed=config.seed, n_products=products))
    events = history_events(world, config, end=now, reports_until=now)
    assert all(r["reported_at"] <= now for r in events["damage-reports"])
    earlier = history_events(world, config, end=now, reports_until=now - timedelta(days=60))
    assert earlier["shipments"] == events["shipments"]  # the same draws; the reports not sent by then left out
    assert 0 < len(earlier["damage-reports"]) < len(events["damage-reports"])
    shipped = [s["shipped_at"] for s in events["shipments"]]
    assert now - timedelta(days=config.days) < min(shipped) and max(shipped) < now
    assert len({s["product_id"] for s in events["shipments"]}) == products
    assert {s["package_type"] for s in events["shipments"]} == {"box", "sioc", "poly_bag", "padded_mailer"}

    written = stream_history(kafka_settings, events)
    assert written == sum(len(records) for records in events.values())
    report = land(kafka_settings, tmp_path / "data", show_progress=False)
    assert dict(report.landed) == {base: len(records) for base, records in events.items() if records}
    assert not report.dead_letters

    names = TopicNames.for_settings(kafka_settings)
    topics = [names.catalog, names.captures, names.shipments, names.damage_reports]
    assert start_group_at_end(kafka_settings, topics) == 4 * kafka_settings.partitions
    consumer = Consumer(client_config(kafka_settings, **{"group.id": kafka_settings.app_id}))
    try:
        wanted = [TopicPartition(t, p) for t in topics for p in range(kafka_settings.partitions)]
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(wanted, timeout=30)}
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in wanted}
    finally:
        consumer.close()
    assert committed == ends and sum(ends.values()) == written


def test_the_report_share_is_the_reports_that_arrive_within_the_window() -> None:
    world = WorldConfig(report_rate=0.7, report_delay_days=7.0)
    assert report_share(world, 30.0) == pytest.approx(0.7 * 0.98623, rel=1e-4)
    assert report_share(world, 1e9) == pytest.approx(0.7)
