"""The console's store without Kafka: what each page reads after any order of events, and that a crash or a
restart resumes exactly where the state is."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from models.packtypes import PackType
from streams.console import pages
from streams.console.store import ConsoleStore, Folded, Kind, millis, reason_code
from streams.demo import certified_outcomes
from tests.samples import SAMPLES, T0


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def decision(product: str, second: float, pack: str, status: str = "auto_certified", market: str = "NA",
             **extra: Any) -> dict[str, Any]:
    return {**SAMPLES["pack_type_decision"], "event_id": f"d-{product}-{second}", "product_id": product,
            "marketplace": market, "package_type": pack, "status": status, "decided_at": at(second), **extra}


def shipment(product: str, second: float, pack: str, market: str = "NA", site: str = "FC-1") -> dict[str, Any]:
    sid = f"{product}-{second}"
    return {**SAMPLES["shipment"], "event_id": f"s-{sid}", "shipment_id": sid, "product_id": product,
            "package_type": pack, "marketplace": market, "fulfillment_center": site, "shipped_at": at(second)}


def report(s: dict[str, Any]) -> dict[str, Any]:
    return {**SAMPLES["damage_report"], "event_id": f"r-{s['shipment_id']}", "product_id": s["product_id"],
            "shipment_id": s["shipment_id"], "package_type": s["package_type"]}


def request(product: str, second: float, pack: str, current: str, grams: float, market: str = "NA",
            **extra: Any) -> dict[str, Any]:
    return {**SAMPLES["test_request"], "event_id": f"t-{product}-{pack}-{second}", "product_id": product,
            "marketplace": market, "package_type": pack, "current_package_type": current, "weight_saved_g": grams,
            "requested_at": at(second), "request_id": None, **extra}  # a request from before the lifecycle


TOPIC = {Kind.DECISION: "pack-type-decisions", Kind.SHIPMENT: "shipments", Kind.DAMAGE_REPORT: "damage-reports",
         Kind.TEST_REQUEST: "test-requests", Kind.RELABEL: "relabel-triggers", Kind.TEST_RESULT: "test-results",
         Kind.DEAD_LETTER: "shipments.dlq"}


class Feed:
    """Hands records to the store as the reader would: per topic, offsets in order."""

    def __init__(self, store: ConsoleStore) -> None:
        self.store = store
        self.next: dict[str, int] = {}

    def message(self, kind: str, record: dict[str, Any] | None, key: str | None = None) -> Folded:
        topic = TOPIC[kind]
        offset = self.next.get(topic, 0)
        self.next[topic] = offset + 1
        return Folded(topic, 0, offset, kind, key or (record or {}).get("product_id"), record)

    def __call__(self, *items: tuple[str, dict[str, Any] | None]) -> None:
        self.store.apply([self.message(kind, record) for kind, record in items])


@pytest.fixture
def store(tmp_path: Path):
    store = ConsoleStore(tmp_path / "console.sqlite3")
    yield store
    store.close()


def counts(store: ConsoleStore) -> dict[tuple[str, str, str], int]:
    return {(r["marketplace"], r["package_type"], r["status"]): r["products"] for r in store.decision_counts()}


def test_the_current_decision_per_product_is_counted_once_and_its_history_kept(store: ConsoleStore) -> None:
    feed = Feed(store)
    feed((Kind.DECISION, decision("p1", 1, "box", "needs_test", packaging_weight_g=180.0, all_box_weight_g=180.0)),
         (Kind.DECISION, decision("p2", 2, "poly_bag", market="EU", packaging_weight_g=20.0, all_box_weight_g=150.0)))
    feed((Kind.DECISION, decision("p1", 3, "poly_bag", packaging_weight_g=20.0, all_box_weight_g=180.0)))
    assert counts(store) == {("NA", "poly_bag", "auto_certified"): 1, ("EU", "poly_bag", "auto_certified"): 1}
    assert [h["package_type"] for h in store.decision_history("p1")] == ["poly_bag", "box"]
    # the running all-box baseline and packaging follow the current decisions only
    (_, packaging, box), = store.saved_series()
    assert (packaging, box) == (40.0, 330.0)
    # a decision read late (older than the current one) joins the history, not the count
    feed((Kind.DECISION, decision("p2", 1, "box", "needs_test", market="EU")))
    assert counts(store)[("EU", "poly_bag", "auto_certified")] == 1
    assert len(store.decision_history("p2")) == 2
    # a tombstone: the product left the catalog
    store.apply([feed.message(Kind.DECISION, None, key="p1")])
    assert ("NA", "poly_bag", "auto_certified") not in counts(store)
    assert store.decision("p1") is None and store.meta()["deleted"] >= 1


def test_open_test_totals_count_open_requests_only(store: ConsoleStore) -> None:
    feed = Feed(store)
    feed((Kind.DECISION, decision("p1", 1, "box", "needs_test")),
         (Kind.TEST_REQUEST, request("p1", 1, "poly_bag", "box", 150.0)),
         (Kind.DECISION, decision("p2", 1, "box", "needs_test", market="EU")),
         (Kind.TEST_REQUEST, request("p2", 1, "padded_mailer", "box", 90.0, market="EU")),
         (Kind.TEST_REQUEST, request("p2", 1, "sioc", "box", 170.0, market="EU")))
    assert {r["marketplace"]: (r["open"], r["grams"]) for r in store.test_totals()} == {
        "NA": (1, 150.0), "EU": (2, 260.0)}
    # p1 now ships in the tested type: the request is moot; a result answers p2's sioc request
    result = {**SAMPLES["test_result"], "event_id": "res-1", "product_id": "p2", "package_type": "sioc"}
    feed((Kind.DECISION, decision("p1", 5, "poly_bag")), (Kind.TEST_RESULT, result))
    assert {r["marketplace"]: (r["open"], r["grams"]) for r in store.test_totals()} == {"EU": (1, 90.0)}
    assert {t["package_type"]: t["status"] for t in store.product_tests("p2")} == {
        "sioc": "answered", "padded_mailer": "open"}
    # a lifecycle record from the worker closes a request too
    feed((Kind.TEST_REQUEST, request("p2", 6, "padded_mailer", "box", 90.0, market="EU", status="superseded")))
    assert store.test_totals() == []
    # a request read after the decision that made it moot never opens
    feed((Kind.TEST_REQUEST, request("p1", 0.5, "padded_mailer", "box", 80.0)))
    assert store.test_totals() == [] and [r for r in store.test_queue()] == []


def test_requests_with_a_lifecycle_close_on_the_workers_record_whatever_order_topics_are_read_in(
        store: ConsoleStore) -> None:
    feed = Feed(store)
    opened = request("p1", 1, "poly_bag", "box", 150.0, request_id="req-1")
    # the decision that moved the product is read before the request's closing record (another topic)
    feed((Kind.TEST_REQUEST, opened), (Kind.DECISION, decision("p1", 2, "poly_bag")))
    assert [(r["marketplace"], r["open"]) for r in store.test_totals()] == [("NA", 1)]
    feed((Kind.TEST_REQUEST, {**opened, "event_id": "close-1", "status": "answered", "closed_at": at(2)}))
    assert store.test_totals() == []
    assert [(t["status"], t["closed_at"]) for t in store.product_tests("p1")] == [("answered", millis(at(2)))]


def test_the_test_queue_is_ranked_by_saving_and_filtered_by_marketplace_and_site(store: ConsoleStore) -> None:
    feed = Feed(store)
    for i, (market, site, grams) in enumerate([("NA", "FC-1", 10.0), ("NA", "FC-2", 30.0), ("EU", "FC-9", 20.0)]):
        product = f"p{i}"
        feed((Kind.DECISION, decision(product, 1, "box", "needs_test", market=market)),
             (Kind.SHIPMENT, shipment(product, 2, "box", market=market, site=site)),
             (Kind.TEST_REQUEST, request(product, 1, "poly_bag", "box", grams, market=market)))
    assert [r["product_id"] for r in store.test_queue()] == ["p1", "p2", "p0"]
    assert [r["product_id"] for r in store.test_queue(marketplace="NA")] == ["p1", "p0"]
    assert [r["product_id"] for r in store.test_queue(site="FC-9")] == ["p2"]
    assert store.test_sites() == ["FC-1", "FC-2", "FC-9"]


def test_dead_letters_are_counted_by_topic_and_reason_code_once(store: ConsoleStore) -> None:
    feed = Feed(store)
    letter = {**SAMPLES["dead_letter"], "topic": "shipments", "reason": "event_time: shipped_at 2100-01-01 is ..."}
    feed((Kind.DEAD_LETTER, letter), (Kind.DEAD_LETTER, {**letter, "reason": "no_views: a capture without views"}))
    # the same dead letter read again (a replay recorded it first, or a redelivery) counts once
    store.record_dead_letter(Folded(TOPIC[Kind.DEAD_LETTER], 0, 0, Kind.DEAD_LETTER, None, letter))
    assert {(r["source_topic"], r["reason_code"]): r["dead_letters"] for r in store.dead_letter_counts()} == {
        ("shipments", "event_time"): 1, ("shipments", "no_views"): 1}
    assert store.claim_replay("shipments.dlq", 0, 0, 1) and not store.claim_replay("shipments.dlq", 0, 0, 2)
    assert reason_code("Avro body is corrupt") == "other"


def test_a_batch_that_fails_leaves_neither_state_nor_offsets_behind(store: ConsoleStore) -> None:
    feed = Feed(store)
    feed((Kind.DECISION, decision("p1", 1, "box", "needs_test")))
    before = (store.offsets(), counts(store))
    broken = {**decision("p2", 2, "poly_bag"), "decided_at": "not a time"}
    with pytest.raises(Exception):
        feed((Kind.DECISION, decision("p3", 2, "poly_bag")), (Kind.DECISION, broken))
    assert (store.offsets(), counts(store)) == before


def test_a_reopened_store_resumes_at_the_offsets_of_its_state(tmp_path: Path) -> None:
    store = ConsoleStore(tmp_path / "c.sqlite3")
    Feed(store)((Kind.DECISION, decision("p1", 1, "box", "needs_test")), (Kind.DECISION, decision("p2", 1, "sioc")))
    store.close()
    again = ConsoleStore(tmp_path / "c.sqlite3")
    try:
        assert again.offsets() == {(TOPIC[Kind.DECISION], 0): 2}
        assert sum(counts(again).values()) == 2
    finally:
        again.close()


def test_a_store_of_another_layout_is_read_again_from_the_topics(tmp_path: Path) -> None:
    store = ConsoleStore(tmp_path / "c.sqlite3")
    Feed(store)((Kind.DECISION, decision("p1", 1, "box", "needs_test")))
    store._write.execute("PRAGMA user_version = 99")  # as a console of another version left it
    store.close()
    again = ConsoleStore(tmp_path / "c.sqlite3")
    try:
        assert again.rebuilt and again.offsets() == {} and counts(again) == {}  # read again from offset 0
    finally:
        again.close()
    assert not ConsoleStore(tmp_path / "c.sqlite3").rebuilt


# -- the certified cohort: the same figures as the demo's batch computation, whatever order the topics are read in

PACKS = [p.value for p in PackType]
event = st.tuples(st.sampled_from(["p1", "p2", "p3"]), st.integers(0, 40), st.sampled_from(PACKS))


@st.composite
def histories(draw):
    decisions = {}
    for product, second, pack in draw(st.lists(event, max_size=12)):
        decisions[(product, second)] = decision(product, second, pack,
                                                draw(st.sampled_from(["auto_certified", "needs_test"])),
                                                market={"p1": "NA", "p2": "EU", "p3": "JP"}[product])
    ships = {}
    for product, second, pack in draw(st.lists(event, max_size=25)):
        ships[(product, second)] = shipment(product, second, pack, market={"p1": "NA", "p2": "EU", "p3": "JP"}[product])
    ship_list = sorted(ships.values(), key=lambda s: s["shipped_at"])
    damaged = draw(st.lists(st.sampled_from(ship_list), max_size=10)) if ship_list else []
    reports = [report(s) for s in damaged]  # a shipment reported twice is one event sent twice: counted once
    decision_list = sorted(decisions.values(), key=lambda d: d["decided_at"])
    # a redelivered shipment (same event id) counts once
    resent = draw(st.lists(st.sampled_from(ship_list), max_size=3)) if ship_list else []
    streams = {Kind.DECISION: decision_list, Kind.SHIPMENT: ship_list + resent, Kind.DAMAGE_REPORT: reports}
    order = draw(st.permutations([k for k, items in streams.items() for _ in items]))
    batch = draw(st.integers(1, 7))
    return decision_list, ship_list, reports, streams, order, batch


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories())
def test_the_certified_cohort_matches_the_batch_computation_in_any_read_order(tmp_path_factory, history) -> None:
    decisions, ships, reports, streams, order, batch = history
    store = ConsoleStore(tmp_path_factory.mktemp("cohort") / "c.sqlite3")
    try:
        feed = Feed(store)
        cursors = {kind: iter(items) for kind, items in streams.items()}
        messages = [feed.message(kind, next(cursors[kind])) for kind in order]  # each topic in its own order
        for start in range(0, len(messages), batch):
            store.apply(messages[start:start + batch])
        expected = {(market, pack.value): (o.shipments, o.reported)
                    for (market, pack), o in certified_outcomes(decisions, ships, reports).items()}
        got = {(r["marketplace"], r["package_type"]): (r["shipments"], r["damages"]) for r in store.cohort()}
        assert {k: v for k, v in got.items() if v != (0, 0)} == expected
    finally:
        store.close()


# -- pages: what a reader sees is escaped, and each page renders from an empty store too


def live(**changes: Any) -> pages.Live:
    base = pages.Live(caught_up=True, folded=0, reader_failure=None, lags=[], lag_error=None, workers=[],
                      targets={"NA": 0.005, "EU": 0.004, "JP": 0.003})
    return dataclasses.replace(base, **changes)


def test_every_page_renders_from_an_empty_store(store: ConsoleStore) -> None:
    assert "no decision yet" in pages.overview(store, live())
    assert "no open test request matches" in pages.test_queue(store, None, None, 0, ["NA"])
    assert "no dead letter matches" in pages.dead_letters(store, None, None, ["shipments"])
    assert pages.product(store, "nobody") is None


def test_text_from_the_topics_is_escaped(store: ConsoleStore) -> None:
    hostile = '<script>alert("x")</script>'
    Feed(store)((Kind.DECISION, decision(hostile, 1, "box", "needs_test", reason=hostile)))
    overview = pages.overview(store, live())
    product = pages.product(store, hostile)
    assert hostile not in overview and hostile not in product
    assert "&lt;script&gt;" in product


def test_the_promise_is_flagged_when_a_certified_cohort_exceeds_its_target(store: ConsoleStore) -> None:
    feed = Feed(store)
    feed((Kind.DECISION, decision("p1", 0, "poly_bag", market="JP")))
    ships = [shipment("p1", 1 + i, "poly_bag", market="JP") for i in range(100)]
    feed(*[(Kind.SHIPMENT, s) for s in ships], (Kind.DAMAGE_REPORT, report(ships[0])))
    html = pages.overview(store, live())
    # 1.00% observed against JP's 0.30%, but one damage in 100 proves little: the lower bound is 0.05%
    assert "above target, not proven" in html and "ABOVE TARGET" not in html
    feed(*[(Kind.DAMAGE_REPORT, report(s)) for s in ships[1:5]])
    assert "ABOVE TARGET" in pages.overview(store, live())  # 5 in 100: even the lower bound (1.9%) is above
    feed(*[(Kind.SHIPMENT, shipment("p1", 200 + i, "poly_bag", market="JP")) for i in range(3000)])
    html = pages.overview(store, live())  # 5 in 3,100: 0.16%
    assert "within target" in html and "above target" not in html.lower()
