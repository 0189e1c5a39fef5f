"""`packwise dataset build`: landing the topics (real broker) and the point-in-time labelled table (Parquet
written directly here, DuckDB, no Kafka)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from models.dataset import (CARD_JSON, CARD_MD, TABLE, TEST_RESULTS_TABLE, TableConfig, build_table, card,
                            card_markdown, table_from_landed)
from streams.landing import LANDED, Buffer, arrow_schema, land
from streams.serde import Serde
from tests.samples import SAMPLES

SERDE = Serde()
SCHEMAS = {base: arrow_schema(SERDE, contract) for base, contract in LANDED.items()}
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def catalog(product: str, at: datetime, title: str, locale: str = "de_DE") -> dict:
    return {**SAMPLES["catalog_update"], "event_id": str(uuid.uuid4()), "product_id": product, "updated_at": at,
            "title": title, "locale": locale}


def capture(product: str, at: datetime, length_mm: float) -> dict:
    return {**SAMPLES["tunnel_capture"], "event_id": str(uuid.uuid4()), "product_id": product, "captured_at": at,
            "measured_length_mm": length_mm}


def shipment(product: str, at: datetime, shipment_id: str, pack: str = "poly_bag", event_id: str | None = None) -> dict:
    return {**SAMPLES["shipment"], "event_id": event_id or str(uuid.uuid4()), "product_id": product,
            "shipment_id": shipment_id, "package_type": pack, "shipped_at": at}


def report(product: str, at: datetime, shipment_id: str | None, pack: str = "poly_bag") -> dict:
    return {**SAMPLES["damage_report"], "event_id": str(uuid.uuid4()), "product_id": product,
            "shipment_id": shipment_id, "package_type": pack, "reported_at": at}


def result(product: str, at: datetime, event_id: str, pack: str = "poly_bag", passed: int = 5, tested: int = 5,
           marketplace: str = "EU") -> dict:
    return {**SAMPLES["test_result"], "event_id": event_id, "product_id": product, "tested_at": at,
            "package_type": pack, "samples_tested": tested, "samples_passed": passed,
            "failure_codes": ["BROKEN"] * (tested - passed), "marketplace": marketplace}


def decision(product: str, at: datetime, pack: str, chosen_by: str, propensity: float | None = None) -> dict:
    return {**SAMPLES["pack_type_decision"], "event_id": str(uuid.uuid4()), "product_id": product, "decided_at": at,
            "package_type": pack, "chosen_by": chosen_by, "audit_propensity": propensity}


def write_landed(folder: Path, events: dict[str, list[dict]]) -> dict[str, list[Path]]:
    """Landed files as the lander writes them, one per topic, offsets in list order (the arrival order)."""
    files = {base: [] for base in LANDED}
    for base, records in events.items():
        buffer = Buffer(SCHEMAS[base])
        for offset, record in enumerate(records):
            buffer.add(record, 0, offset, int((T0 + offset * timedelta(seconds=1)).timestamp() * 1000), 0)
        path = folder / f"{base}.parquet"
        pq.write_table(buffer.table(), path)
        files[base].append(path)
    return files


def build(folder: Path, events: dict[str, list[dict]], **config) -> tuple[dict[str, dict], dict]:
    """(shipment id -> row, statistics) of the table built from `events`."""
    stats = build_table(write_landed(folder, events), SCHEMAS, folder / "labelled.parquet", TableConfig(**config))
    rows = pq.read_table(folder / "labelled.parquet").to_pylist()
    return {row["shipment_id"]: row for row in rows}, stats


def results_table(folder: Path) -> dict[str, dict]:
    """Test result event id -> row of the test-results table the last build() wrote."""
    return {row["test_result_event_id"]: row for row in pq.read_table(folder / "test_results.parquet").to_pylist()}


# -- point in time, without Kafka -------------------------------------------------------------------------


def test_a_catalog_change_or_capture_after_a_shipment_never_reaches_its_row(tmp_path: Path) -> None:
    rows, _ = build(tmp_path, {
        "catalog-updates": [catalog("P1", T0, "mug v1"), catalog("P1", T0 + 3 * DAY, "mug v2")],
        "tunnel-captures": [capture("P1", T0 + DAY, 100.0), capture("P1", T0 + 3 * DAY, 300.0)],
        "shipments": [shipment("P1", T0 + 2 * DAY, "S-before"), shipment("P1", T0 + 4 * DAY, "S-after"),
                      shipment("P1", T0 - DAY, "S-first")],
    }, as_of=T0 + 100 * DAY)
    assert (rows["S-before"]["title"], rows["S-before"]["measured_length_mm"]) == ("mug v1", 100.0)
    assert (rows["S-after"]["title"], rows["S-after"]["measured_length_mm"]) == ("mug v2", 300.0)
    # shipped before anything was known about the product: no catalog record, no capture, not a later one
    assert rows["S-first"]["catalog_event_id"] is None and rows["S-first"]["capture_event_id"] is None


def test_each_row_says_how_its_package_type_was_chosen_as_of_ship_time(tmp_path: Path) -> None:
    """The decision in force for a shipment is the product's latest decision in the type shipped, at or before the
    ship time (a later one never reaches the row); a product without any decision then was shipped by the policy
    before packwise, one with decisions but none in that type by someone else's choice."""
    rows, stats = build(tmp_path, {
        "pack-type-decisions": [decision("A", T0 + DAY, "poly_bag", "model_certified"),
                                decision("A", T0 + 3 * DAY, "sioc", "audit", 0.02),
                                decision("A", T0 + 5 * DAY, "poly_bag", "data_certified"),
                                decision("C", T0 + 10 * DAY, "box", "safe_default")],
        "shipments": [shipment("A", T0 + 2 * DAY, "poly-certified"), shipment("A", T0 + 2 * DAY, "box-off", "box"),
                      shipment("A", T0 + 4 * DAY, "sioc-audit", "sioc"),
                      shipment("A", T0 + 2.5 * DAY, "sioc-before-audit", "sioc"),
                      shipment("A", T0 + 6 * DAY, "poly-data", "poly_bag"),
                      shipment("B", T0 + 2 * DAY, "legacy"), shipment("C", T0 + DAY, "before-decision", "box")],
    }, as_of=T0 + 100 * DAY)
    assert {sid: row["choice"] for sid, row in rows.items()} == {
        "poly-certified": "model_certified", "box-off": "off_decision", "sioc-audit": "audit",
        "sioc-before-audit": "off_decision", "poly-data": "data_certified", "legacy": "before_packwise",
        "before-decision": "before_packwise"}
    assert rows["sioc-audit"]["audit_propensity"] == 0.02 and rows["sioc-audit"]["decided_at"] == T0 + 3 * DAY
    assert rows["legacy"]["decision_event_id"] is None
    assert stats["positives_by"]["choice"]["before_packwise"]["rows"] == 2


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(catalog_hours=st.lists(st.integers(0, 200), min_size=1, max_size=6),
       capture_hours=st.lists(st.integers(0, 200), max_size=6),
       ship_hours=st.lists(st.integers(0, 200), min_size=1, max_size=8),
       test_hours=st.lists(st.integers(0, 200), max_size=6))
def test_every_row_sees_the_latest_record_at_or_before_its_ship_time(
        tmp_path_factory: pytest.TempPathFactory, catalog_hours: list[int], capture_hours: list[int],
        ship_hours: list[int], test_hours: list[int]) -> None:
    """Against a brute-force oracle: for any interleaving, the as-of record is the newest one not after the
    shipment, or the test result (ties at the same instant: the last written)."""
    hour = timedelta(hours=1)
    catalogs = [catalog("P1", T0 + h * hour, f"v{i}") for i, h in enumerate(catalog_hours)]
    captures = [capture("P1", T0 + h * hour, float(i + 1)) for i, h in enumerate(capture_hours)]
    shipments = [shipment("P1", T0 + h * hour, f"S{i}") for i, h in enumerate(ship_hours)]
    results = [result("P1", T0 + h * hour, f"T{i}") for i, h in enumerate(test_hours)]
    folder = tmp_path_factory.mktemp("asof")
    rows, _ = build(folder, {"catalog-updates": catalogs, "tunnel-captures": captures, "shipments": shipments,
                             "test-results": results}, as_of=T0 + 1000 * hour)
    test_rows = results_table(folder)

    def as_of(records: list[dict], field: str, at: datetime) -> dict | None:
        before = [(r[field], i, r) for i, r in enumerate(records) if r[field] <= at]
        return max(before, key=lambda t: (t[0], t[1]))[2] if before else None

    for s in shipments:
        row = rows[s["shipment_id"]]
        expected_catalog, expected_capture = as_of(catalogs, "updated_at", s["shipped_at"]), as_of(
            captures, "captured_at", s["shipped_at"])
        assert row["catalog_event_id"] == (expected_catalog["event_id"] if expected_catalog else None)
        assert row["capture_event_id"] == (expected_capture["event_id"] if expected_capture else None)
    assert len(test_rows) == len(results)
    for r in results:
        row = test_rows[r["event_id"]]
        expected_catalog, expected_capture = as_of(catalogs, "updated_at", r["tested_at"]), as_of(
            captures, "captured_at", r["tested_at"])
        assert row["catalog_event_id"] == (expected_catalog["event_id"] if expected_catalog else None)
        assert row["capture_event_id"] == (expected_capture["event_id"] if expected_capture else None)


def test_a_catalog_change_or_capture_after_a_test_never_reaches_its_row(tmp_path: Path) -> None:
    events = {
        "catalog-updates": [catalog("P1", T0, "mug v1"), catalog("P1", T0 + 3 * DAY, "mug v2")],
        "tunnel-captures": [capture("P1", T0 + DAY, 100.0), capture("P1", T0 + 3 * DAY, 300.0)],
        "test-results": [result("P1", T0 + 2 * DAY, "T-before"),
                         result("P1", T0 + 3 * DAY, "T-same-instant", pack="box", marketplace="JP"),
                         result("P1", T0 + 4 * DAY, "T-after", pack="box", passed=3),
                         result("P1", T0 - DAY, "T-first", passed=0, tested=1)],
    }
    _, stats = build(tmp_path, events, as_of=T0 + 100 * DAY)
    rows = results_table(tmp_path)
    assert {key: (row["title"], row["measured_length_mm"], row["passed"]) for key, row in rows.items()} == {
        "T-before": ("mug v1", 100.0, True), "T-same-instant": ("mug v2", 300.0, True),
        "T-after": ("mug v2", 300.0, False), "T-first": (None, None, False)}
    assert rows["T-after"]["failure_codes"] == ["BROKEN", "BROKEN"] and rows["T-after"]["samples_passed"] == 3
    assert rows["T-first"]["catalog_event_id"] is None and rows["T-first"]["capture_event_id"] is None
    assert [row["test_result_event_id"] for row in pq.read_table(tmp_path / "test_results.parquet").to_pylist()] == [
        "T-first", "T-before", "T-same-instant", "T-after"]  # by test time
    figures = stats["test_results"]
    assert (figures["rows"], figures["passed"], figures["failed"]) == (4, 2, 2)
    assert figures["by"] == {
        "package_type": {"box": {"rows": 2, "passed": 1, "failed": 1},
                         "poly_bag": {"rows": 2, "passed": 1, "failed": 1}},
        "marketplace": {"EU": {"rows": 3, "passed": 1, "failed": 2}, "JP": {"rows": 1, "passed": 1, "failed": 0}}}
    markdown = card_markdown(card(stats, {"offsets": {}, "topic_prefix": ""}))
    assert "| box | 1 | 1 | 2 |" in markdown and "| JP | 1 | 0 | 1 |" in markdown
    assert "physical test results: 4 rows, 2 passed, 2 failed" in markdown
    # labels judged at an earlier time: a result tested after it was not known then
    build(tmp_path, events, as_of=T0 + 3 * DAY)
    assert set(results_table(tmp_path)) == {"T-first", "T-before", "T-same-instant"}


def test_labels_by_shipment_id_else_product_and_type_within_the_window(tmp_path: Path) -> None:
    rows, stats = build(tmp_path, {
        "shipments": [shipment("P1", T0, "S1"), shipment("P1", T0 + DAY, "S2"),
                      shipment("P1", T0 + 2 * DAY, "S3", pack="box"), shipment("P2", T0, "S4"),
                      shipment("P3", T0, "S5")],
        "damage-reports": [
            report("P1", T0 + 5 * DAY, "S1"),  # names S1: S1, although S2 is later and the same type
            report("P1", T0 + 6 * DAY, None, pack="box"),  # no id: the latest box shipment of P1 before it (S3)
            report("P2", T0 + 45 * DAY, "S4"),  # names S4, but 45 days after it: outside a 30-day window
            report("P3", T0 - DAY, "S5"),  # stamped before its shipment (clock skew), names it: counts
        ],
    }, as_of=T0 + 100 * DAY, window=timedelta(days=30))
    assert {sid for sid, row in rows.items() if row["damaged"]} == {"S1", "S3", "S5"}
    assert stats["damage_reports"] == {"attributed_by_shipment_id": 2, "attributed_by_product_and_type": 1,
                                       "unattributed": 1}
    assert stats["positives_by"]["package_type"] == {"box": {"rows": 1, "positives": 1},
                                                     "poly_bag": {"rows": 4, "positives": 2}}


def test_shipments_younger_than_the_window_are_held_back(tmp_path: Path) -> None:
    as_of = T0 + 60 * DAY
    events = {"shipments": [shipment("P1", as_of - 31 * DAY, "old"), shipment("P1", as_of - 29 * DAY, "young"),
                            shipment("P1", as_of - 2 * DAY, "damaged-but-young")],
              "damage-reports": [report("P1", as_of - DAY, "damaged-but-young")]}
    rows, stats = build(tmp_path, events, as_of=as_of, window=timedelta(days=30))
    assert set(rows) == {"old"} and stats["held_back_immature"] == 2
    # by default labels are judged at the latest event time landed, not the clock: the same in every build
    rows, stats = build(tmp_path, events, window=timedelta(days=30))
    assert stats["as_of"] == (as_of - DAY).isoformat() and set(rows) == {"old"}


def test_a_resent_event_id_appears_once_and_is_counted(tmp_path: Path) -> None:
    first = shipment("P1", T0, "S1")
    resent_report = report("P1", T0 + DAY, "S1")
    rows, stats = build(tmp_path, {"shipments": [first, shipment("P1", T0, "S2"), dict(first)],
                                   "damage-reports": [resent_report, dict(resent_report)]}, as_of=T0 + 99 * DAY)
    assert sorted(rows) == ["S1", "S2"] and rows["S1"]["damage_reports"] == 1
    assert stats["duplicates_dropped"]["shipments"] == 1 and stats["duplicates_dropped"]["damage-reports"] == 1


def test_a_resent_test_result_appears_once_and_is_counted(tmp_path: Path) -> None:
    first = result("P1", T0, "T1")
    # the same id again, resent, and once more with other contents: the first written counts, as in the worker
    _, stats = build(tmp_path, {"test-results": [first, result("P1", T0, "T2", passed=4), dict(first),
                                                 {**first, "samples_passed": 0}]}, as_of=T0 + DAY)
    rows = results_table(tmp_path)
    assert sorted(rows) == ["T1", "T2"] and rows["T1"]["passed"] and not rows["T2"]["passed"]
    assert stats["duplicates_dropped"]["test-results"] == 2 and stats["test_results"]["rows"] == 2


# -- landing from the broker ------------------------------------------------------------------------------


def produce(settings, events: list[tuple[str, str, bytes | None]]) -> None:
    from confluent_kafka import Producer

    from streams.topics import producer_config

    producer = Producer(producer_config(settings))
    for base, key, value in events:
        producer.produce(settings.topic_prefix + base, key=key.encode(), value=value)
    assert producer.flush(30) == 0


def encoded(base: str, record: dict) -> tuple[str, str, bytes]:
    return base, record["product_id"], SERDE.encode(LANDED[base], record)


def table_rows(folder: Path) -> list[dict]:
    return sorted(pq.read_table(folder / TABLE).to_pylist(), key=lambda r: r["shipment_event_id"])


def result_rows(folder: Path) -> list[dict]:
    return sorted(pq.read_table(folder / TEST_RESULTS_TABLE).to_pylist(), key=lambda r: r["test_result_event_id"])


@pytest.mark.kafka
def test_build_lands_once_appends_only_new_events_and_never_dead_letters(
        kafka_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka.admin import AdminClient

    from streams.cli import main
    from streams.topics import create_topics

    create_topics(kafka_settings)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    t = now - 90 * DAY
    resent = shipment("P1", t + 2 * DAY, "S1", event_id="resent-id")
    produce(kafka_settings, [
        # the damage report is written before its shipment: it still labels it
        encoded("damage-reports", report("P1", t + 3 * DAY, "S1")),
        encoded("catalog-updates", catalog("P1", t, "Becher")),
        encoded("tunnel-captures", capture("P1", t + DAY, 120.0)),
        encoded("shipments", resent), encoded("shipments", resent),
        encoded("shipments", shipment("P2", t + 2 * DAY, "S2")),
        # the worker's decision P2 shipped under, and a product's decision deleted (a tombstone)
        encoded("pack-type-decisions", decision("P2", t + DAY, "poly_bag", "model_certified")),
        ("pack-type-decisions", "P7", None),
        # what the worker dead-letters: an unknown marketplace, an image that is not one, bytes that are not Avro
        encoded("shipments", {**shipment("P3", t + 2 * DAY, "S-bad"), "marketplace": "XX"}),
        encoded("tunnel-captures", {**capture("P1", t + DAY, 1.0),
                                    "views": [{"view": "top", "media_type": "image/png", "image": b"not a png"}]}),
        ("damage-reports", "P1", b"{not avro}"),
        ("catalog-updates", "P9", None),  # a tombstone
        encoded("catalog-updates", catalog("P8", now, "today")),  # the data reach today: t's shipments are mature
        # test results: a pass resent, a fail, and one the worker dead-letters (more samples passed than tested)
        encoded("test-results", result("P1", t + 2 * DAY, "T1")),
        encoded("test-results", result("P1", t + 2 * DAY, "T1")),
        encoded("test-results", result("P2", t + 2 * DAY, "T2", pack="box", passed=4)),
        encoded("test-results", result("P3", t + 2 * DAY, "T-bad", passed=6)),
    ])
    out = tmp_path / "ds"
    for name, value in {"BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
                        "TOPIC_PREFIX": kafka_settings.topic_prefix, "APP_ID": kafka_settings.app_id,
                        "PARTITIONS": "3"}.items():
        monkeypatch.setenv("PACKWISE_" + name, value)
    assert main(["dataset", "build", "--out", str(out), "--window-days", "30"]) == 0

    rows = table_rows(out)
    assert [(r["shipment_id"], r["damaged"], r["title"], r["measured_length_mm"], r["choice"]) for r in rows] == [
        ("S2", False, None, None, "model_certified"),  # by event id: P2's is a uuid, P1's "resent-id"
        ("S1", True, "Becher", 120.0, "before_packwise")]
    tests = result_rows(out)
    assert [(r["test_result_event_id"], r["passed"], r["title"], r["measured_length_mm"]) for r in tests] == [
        ("T1", True, "Becher", 120.0), ("T2", False, None, None)]
    card = json.loads((out / CARD_JSON).read_text())
    assert card["duplicates_dropped"]["shipments"] == 1 and card["duplicates_dropped"]["test-results"] == 1
    assert card["dead_letters_skipped"] == {"shipments": 1, "tunnel-captures": 1, "damage-reports": 1,
                                            "test-results": 1}
    assert card["tombstones"] == 2  # a catalog record's and a decision's
    assert card["test_results"]["by"]["package_type"] == {"box": {"rows": 1, "passed": 0, "failed": 1},
                                                          "poly_bag": {"rows": 1, "passed": 1, "failed": 0}}
    assert "## Test results per marketplace" in (out / CARD_MD).read_text()
    landed = {base: pq.read_table(out / "landed" / base).num_rows for base in LANDED}
    assert landed == {"catalog-updates": 2, "tunnel-captures": 1, "shipments": 3, "damage-reports": 1,
                      "test-results": 3, "pack-type-decisions": 1}

    # again, nothing new: the same rows, no file added
    files_before = sorted(p for p in (out / "landed").rglob("*.parquet"))
    report_again = land(kafka_settings, out, show_progress=False)
    assert report_again.events == 0 and sorted((out / "landed").rglob("*.parquet")) == files_before
    table_from_landed(out, TableConfig(window=timedelta(days=30)))
    assert table_rows(out) == rows and result_rows(out) == tests

    # more events: exactly those land; a crashed run's stray file is removed, never read
    stray = out / "landed" / "shipments" / "event_date=2000-01-01" / "part-crashed.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes((out / "landed" / "shipments").rglob("*.parquet").__next__().read_bytes())
    produce(kafka_settings, [encoded("shipments", shipment("P1", t + 5 * DAY, "S3")),
                             encoded("shipments", resent),  # a late resend of an event already landed
                             encoded("test-results", result("P1", t + 5 * DAY, "T3", passed=0)),
                             encoded("test-results", result("P1", t + 2 * DAY, "T1"))])
    report_more = land(kafka_settings, out, show_progress=False)
    assert report_more.landed == {"shipments": 2, "test-results": 2}
    assert report_more.orphans_removed == 1 and not stray.exists()
    table_from_landed(out, TableConfig(window=timedelta(days=30)))
    new_rows = table_rows(out)
    assert [r for r in new_rows if r not in rows] == [r for r in new_rows if r["shipment_id"] == "S3"]
    assert len(new_rows) == len(rows) + 1
    assert [r["test_result_event_id"] for r in result_rows(out)] == ["T1", "T2", "T3"]

    # its own consumer commits nothing: no group of this app holds offsets
    admin = AdminClient({"bootstrap.servers": kafka_settings.bootstrap_servers})
    groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid]
    assert not [g for g in groups if g.startswith(kafka_settings.app_id)]


@pytest.mark.kafka
def test_a_dataset_landed_before_test_results_lands_them_from_the_start(kafka_settings, tmp_path: Path) -> None:
    """A manifest written when test-results and the decisions were not landed (no offsets, no files for them)
    still builds; the next landing reads them from their first offsets and only the new events of the other
    topics."""
    from streams.topics import create_topics

    create_topics(kafka_settings)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    t = now - 90 * DAY
    produce(kafka_settings, [encoded("catalog-updates", catalog("P1", t, "Becher")),
                             encoded("catalog-updates", catalog("P8", now, "today")),  # t's shipments are mature
                             encoded("shipments", shipment("P1", t + DAY, "S1")),
                             encoded("test-results", result("P1", t + DAY, "T1")),
                             encoded("test-results", result("P2", t + DAY, "T2", passed=1))])
    out = tmp_path / "ds"
    before = {base: contract for base, contract in LANDED.items()
              if base not in ("test-results", "pack-type-decisions")}
    assert land(kafka_settings, out, show_progress=False, topics=before).landed == {"catalog-updates": 2,
                                                                                   "shipments": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert "test-results" not in manifest["offsets"] and "test-results" not in manifest["files"]
    assert "pack-type-decisions" not in manifest["offsets"]
    data = table_from_landed(out, TableConfig(window=timedelta(days=30)))  # the old dataset builds as it is
    assert data["rows"] == 1 and data["test_results"]["rows"] == 0 and result_rows(out) == []

    produce(kafka_settings, [encoded("shipments", shipment("P1", t + 2 * DAY, "S2")),
                             encoded("test-results", result("P1", t + 3 * DAY, "T3", passed=0)),
                             encoded("pack-type-decisions", decision("P1", t + 1.5 * DAY, "poly_bag", "audit", 0.1))])
    report_next = land(kafka_settings, out, show_progress=False)
    assert report_next.landed == {"shipments": 1, "test-results": 3, "pack-type-decisions": 1}
    assert not report_next.lost_to_retention
    data = table_from_landed(out, TableConfig(window=timedelta(days=30)))
    assert sorted((r["shipment_id"], r["choice"]) for r in table_rows(out)) == [
        ("S1", "before_packwise"), ("S2", "audit")]
    assert data["duplicates_dropped"] == {"catalog-updates": 0, "tunnel-captures": 0, "shipments": 0,
                                          "damage-reports": 0, "test-results": 0, "pack-type-decisions": 0}
    assert [(r["test_result_event_id"], r["passed"], r["title"]) for r in result_rows(out)] == [
        ("T1", True, "Becher"), ("T2", False, None), ("T3", False, "Becher")]
    assert sum(json.loads((out / "manifest.json").read_text())["offsets"]["test-results"].values()) == 3


def landed_rows(folder: Path) -> dict[str, list[dict]]:
    """Per topic, every landed row of the files the manifest lists, in (partition, offset) order."""
    from streams.landing import landed_files

    return {base: sorted((row for path in paths for row in pq.read_table(path).to_pylist()),
                         key=lambda r: (r["kafka_partition"], r["kafka_offset"]))
            for base, paths in landed_files(folder).items()}


def mixed_history(t: datetime, batch: str, days: int = 3) -> list[tuple[str, str, bytes | None]]:
    """Events of every input topic under many product keys (so every partition holds some), over `days` days,
    with what the worker dead-letters and a tombstone among them."""
    events = []
    for i in range(24):
        product, at = f"P{batch}{i}", t + (i % days) * DAY
        events += [encoded("catalog-updates", catalog(product, at, f"title {i}")),
                   encoded("tunnel-captures", capture(product, at, 100.0 + i)),
                   encoded("shipments", shipment(product, at, f"S{batch}{i}")),
                   encoded("damage-reports", report(product, at + DAY, f"S{batch}{i}")),
                   encoded("test-results", result(product, at, f"T{batch}{i}", passed=i % 6)),
                   encoded("pack-type-decisions", decision(product, at, "box", "safe_default"))]
    events += [encoded("shipments", {**shipment(f"P{batch}x", t, f"S{batch}-bad"), "marketplace": "XX"}),
               ("damage-reports", f"P{batch}y", b"{not avro}"), ("catalog-updates", f"P{batch}z", None)]
    return events


@pytest.mark.kafka
def test_a_parallel_build_lands_exactly_what_a_single_process_build_lands(
        kafka_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Partitions shared out among processes: the same rows, offsets and counts as one process, first and
    incrementally (also from the command line); every file name distinct; nothing committed to any group."""
    from confluent_kafka.admin import AdminClient

    from streams.cli import main
    from streams.topics import create_topics

    create_topics(kafka_settings)
    t = datetime.now(timezone.utc).replace(microsecond=0) - 40 * DAY
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    written = 0
    for batch, days in (("a", 3), ("b", 5)):
        produce(kafka_settings, mixed_history(t, batch, days))
        one = land(kafka_settings, single, show_progress=False)
        many = land(kafka_settings, parallel, show_progress=False, processes=4)
        assert many.landed == one.landed and many.dead_letters == one.dead_letters
        assert many.reasons == one.reasons and many.tombstones == one.tombstones == 1
        assert sum(many.landed.values()) == 144  # each run lands only its batch
        assert landed_rows(parallel) == landed_rows(single)
        manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (single, parallel)]
        for key in ("offsets", "landed", "dead_letters", "tombstones", "lost_to_retention"):
            assert manifests[1][key] == manifests[0][key], key
        files = [p for paths in manifests[1]["files"].values() for p in paths]
        written += many.files
        assert len(files) == len(set(files)) == written and all((parallel / p).is_file() for p in files)
        assert sorted(p.relative_to(parallel).as_posix() for p in (parallel / "landed").rglob("*")
                      if p.is_file()) == sorted(files)  # no stray file of a process left behind
    assert {p.split("-p")[-1].split("-")[0] for p in files} == {"0", "1", "2", "3"}  # four processes wrote
    assert land(kafka_settings, parallel, show_progress=False, processes=4).events == 0  # nothing new

    produce(kafka_settings, mixed_history(t, "c", 2))
    for name, value in {"BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
                        "TOPIC_PREFIX": kafka_settings.topic_prefix, "APP_ID": kafka_settings.app_id,
                        "PARTITIONS": "3"}.items():
        monkeypatch.setenv("PACKWISE_" + name, value)
    assert main(["dataset", "build", "--out", str(parallel), "--processes", "3", "--no-table"]) == 0
    land(kafka_settings, single, show_progress=False)
    assert landed_rows(parallel) == landed_rows(single)
    assert json.loads((parallel / "manifest.json").read_text())["offsets"] == json.loads(
        (single / "manifest.json").read_text())["offsets"]
    latest = json.loads((parallel / "manifest.json").read_text())["runs"][-1]
    assert latest["landed"] == {base: 24 for base in LANDED} and "-p2-" in " ".join(
        p for paths in json.loads((parallel / "manifest.json").read_text())["files"].values() for p in paths
        if latest["run"] in p)
    admin = AdminClient({"bootstrap.servers": kafka_settings.bootstrap_servers})
    groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid]
    assert not [g for g in groups if g.startswith(kafka_settings.app_id)]


@pytest.mark.kafka
def test_an_interrupted_parallel_build_leaves_the_previous_manifest(kafka_settings, tmp_path: Path) -> None:
    """A landing process that fails fails the run: the manifest stays as it was, and the next build removes
    what the run left and lands the same events as a build that was never interrupted."""
    from streams.errors import PackwiseError
    from streams.topics import create_topics

    create_topics(kafka_settings)
    t = datetime.now(timezone.utc).replace(microsecond=0) - 40 * DAY
    out, reference = tmp_path / "ds", tmp_path / "reference"
    produce(kafka_settings, mixed_history(t, "a"))
    land(kafka_settings, out, show_progress=False, processes=3)
    before = (out / "manifest.json").read_bytes()
    produce(kafka_settings, mixed_history(t + 10 * DAY, "b"))
    # a dangling link where the processes landing the new shipments must create their folder (a landing never
    # removes a link): they fail, in whichever process lands each shipments partition; the others land their
    # share into files that no manifest lists
    blocker = out / "landed" / "shipments" / f"event_date={(t + 10 * DAY).date().isoformat()}"
    blocker.symlink_to(tmp_path / "nowhere")
    with pytest.raises((PackwiseError, OSError)):
        land(kafka_settings, out, show_progress=False, processes=6)
    assert (out / "manifest.json").read_bytes() == before
    listed = {p for paths in json.loads(before)["files"].values() for p in paths}
    left = [p for p in (out / "landed").rglob("*") if p.is_file() and p.relative_to(out).as_posix() not in listed]
    assert {r["shipment_id"][1] for r in landed_rows(out)["shipments"]} == {"a"}

    blocker.unlink()
    again = land(kafka_settings, out, show_progress=False, processes=3)
    assert again.orphans_removed == len(left) and not any(p.exists() for p in left)
    assert sum(again.landed.values()) == 144
    land(kafka_settings, reference, show_progress=False)
    assert landed_rows(out) == landed_rows(reference)
    assert json.loads((out / "manifest.json").read_text())["offsets"] == json.loads(
        (reference / "manifest.json").read_text())["offsets"]
