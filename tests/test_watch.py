"""`packwise watch`: what an operator sees from the decisions, triggers and test requests published."""

from __future__ import annotations

import argparse
import datetime as dt
import io
from typing import Any

import pytest
from confluent_kafka import Producer
from rich.console import Console

from streams import watch
from streams.errors import PackwiseError
from streams.processor import TopicNames
from streams.serde import Serde
from streams.settings import Settings
from streams.topics import create_topics, producer_config
from streams.watch import FollowOptions, WatchFilter, WatchState, follow, render_text
from tests.samples import SAMPLES, T0


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def decision(product: str, second: float = 0, **fields: Any) -> dict[str, Any]:
    return {**SAMPLES["pack_type_decision"], "product_id": product, "decided_at": at(second), **fields}


def trigger(product: str, second: float = 0, **fields: Any) -> dict[str, Any]:
    return {**SAMPLES["relabel_trigger"], "product_id": product, "triggered_at": at(second), **fields}


def requested_test(product: str, second: float = 0, **fields: Any) -> dict[str, Any]:
    return {**SAMPLES["test_request"], "product_id": product, "requested_at": at(second), **fields}


def legacy_request(product: str, second: float = 0, **fields: Any) -> dict[str, Any]:
    """A request published before requests had a lifecycle, as the current contract reads it."""
    return requested_test(product, second, request_id=None, status="open", **fields)


def closed(request: dict[str, Any], status: str, second: float = 0, **fields: Any) -> dict[str, Any]:
    """The worker's record closing `request`."""
    return {**request, "event_id": f"{request['event_id']}/{status}", "status": status,
            "request_id": request["request_id"] or request["event_id"], "closed_at": at(second),
            "reason": f"{status} for a test", **fields}




def fold(state: WatchState, *events: tuple[str, dict[str, Any]]) -> WatchState:
    for contract, record in events:
        state.apply(contract, record["product_id"], record)
    return state


# -- the fold -------------------------------------------------------------------------------------------


def test_latest_decision_per_product_most_recent_first_within_limit() -> None:
    state = fold(WatchState(),
                 ("pack_type_decision", decision("P1", 1, package_type="box", status="needs_test")),
                 ("pack_type_decision", decision("P2", 2)),
                 ("pack_type_decision", decision("P3", 3)),
                 ("pack_type_decision", decision("P1", 4, package_type="poly_bag")))
    shown = state.latest_decisions(limit=2)
    assert [(d.product_id, d.package_type) for d in shown] == [("P1", "poly_bag"), ("P3", "padded_mailer")]
    assert len(state.latest_decisions(limit=10)) == 3


def test_equal_timestamps_show_the_later_message_first() -> None:
    state = fold(WatchState(), ("pack_type_decision", decision("P1")), ("pack_type_decision", decision("P2")))
    assert [d.product_id for d in state.latest_decisions(10)] == ["P2", "P1"]


def test_tombstone_removes_the_product_and_its_open_tests_from_before_the_lifecycle() -> None:
    state = fold(WatchState(), ("pack_type_decision", decision("P1", package_type="box", status="needs_test")),
                 ("test_request", legacy_request("P1")), ("pack_type_decision", decision("P2")))
    state.apply("pack_type_decision", "P1", None)
    assert [d.product_id for d in state.latest_decisions(10)] == ["P2"]
    assert state.open_tests(10) == []
    assert state.summary().deleted == 1
    fold(state, ("test_request", legacy_request("P1", 1)))  # read after the tombstone, from another topic
    assert state.open_tests(10) == []
    fold(state, ("pack_type_decision", decision("P1", 2)))  # back in the catalog
    assert state.summary().deleted == 0 and len(state.latest_decisions(10)) == 2


def test_test_requests_ordered_by_grams_saved() -> None:
    state = fold(WatchState(), ("test_request", requested_test("P1", weight_saved_g=40.0)),
                 ("test_request", requested_test("P2", weight_saved_g=230.0)),
                 ("test_request", requested_test("P3", weight_saved_g=95.5)))
    assert [t.product_id for t in state.open_tests(10)] == ["P2", "P3", "P1"]
    assert [t.product_id for t in state.open_tests(1)] == ["P2"]
    summary = state.summary()
    assert (summary.open_tests, summary.grams_saved) == (3, 365.5)


def test_a_test_from_before_the_lifecycle_closes_when_the_decision_reaches_the_tested_type() -> None:
    state = fold(WatchState(), ("pack_type_decision", decision("P1", package_type="box", status="needs_test")),
                 ("test_request", legacy_request("P1", package_type="poly_bag")),
                 ("pack_type_decision", decision("P1", 1, package_type="padded_mailer")))
    assert [t.product_id for t in state.open_tests(10)] == ["P1"]  # padded_mailer is still heavier than poly_bag
    fold(state, ("pack_type_decision", decision("P1", 2, package_type="sioc")))
    assert state.open_tests(10) == []


def test_a_test_request_from_before_the_lifecycle_read_after_its_decision_already_passed_stays_closed() -> None:
    """Topics are read in no set order: the decision that closed a test can arrive before the request."""
    state = fold(WatchState(), ("pack_type_decision", decision("P1", 5, package_type="poly_bag")),
                 ("test_request", legacy_request("P1", package_type="poly_bag")))
    assert state.open_tests(10) == []


def test_only_open_requests_count_in_the_queue_and_the_grams_saved_if_all_pass() -> None:
    p1, p2 = requested_test("P1", weight_saved_g=40.0), requested_test("P2", weight_saved_g=230.0)
    p3_first = requested_test("P3", package_type="sioc", weight_saved_g=95.5, event_id="r3-1", request_id="r3-1")
    p3_next = requested_test("P3", 1, package_type="poly_bag", weight_saved_g=80.0, event_id="r3-2", request_id="r3-2")
    state = fold(WatchState(), ("test_request", p1), ("test_request", p2), ("test_request", p3_first))
    assert (state.summary().open_tests, state.summary().grams_saved) == (3, 365.5)
    fold(state, ("test_request", closed(p2, "answered")), ("test_request", closed(p3_first, "superseded")),
         ("test_request", p3_next))
    assert [(t.product_id, t.package_type) for t in state.open_tests(10)] == [("P3", "poly_bag"), ("P1", "poly_bag")]
    assert (state.summary().open_tests, state.summary().grams_saved) == (2, 120.0)
    fold(state, ("test_request", closed(p1, "withdrawn")), ("test_request", closed(p3_next, "withdrawn")))
    assert (state.summary().open_tests, state.summary().grams_saved) == (0, 0.0)
    assert "0 open test requests, 0 g/unit saved if all pass" in render_text(state, width=200)


def test_open_requests_are_the_workers_whatever_order_the_topics_are_read_in() -> None:
    """The worker opens and closes its requests on one topic, so their order is fixed; decisions, read from
    another topic ahead of them or behind, close nothing (before the lifecycle they did, and the same events
    gave another total in each run)."""
    first = requested_test("P1", package_type="poly_bag", event_id="r1", request_id="r1")
    again = requested_test("P1", 2, package_type="poly_bag", event_id="r2", request_id="r2")
    decisions = [("pack_type_decision", decision("P1", 0, package_type="box", status="needs_test")),
                 ("pack_type_decision", decision("P1", 1, package_type="poly_bag")),
                 ("pack_type_decision", decision("P1", 2, package_type="box", status="needs_test"))]
    requests = [("test_request", first), ("test_request", closed(first, "withdrawn", 1)), ("test_request", again)]
    orders = [decisions + requests, requests + decisions, [decisions[0], *requests, *decisions[1:]],
              [*decisions[:2], *requests]]
    views = [[t.request_id for t in fold(WatchState(), *order).open_tests(10)] for order in orders]
    assert views == [["r2"]] * len(orders)


def test_a_closing_record_names_a_request_from_before_the_lifecycle_by_its_event_id() -> None:
    old = legacy_request("P1", package_type="sioc", event_id="old-1")
    state = fold(WatchState(), ("test_request", old), ("test_request", requested_test("P2")))
    fold(state, ("test_request", closed(old, "withdrawn")))
    assert [t.product_id for t in state.open_tests(10)] == ["P2"]


def test_summary_counts_auto_certified_share_per_type_and_triggers_by_cause() -> None:
    state = fold(WatchState(),
                 ("pack_type_decision", decision("P1", package_type="poly_bag")),
                 ("pack_type_decision", decision("P2", package_type="poly_bag", status="needs_test")),
                 ("pack_type_decision", decision("P3", package_type="box", status="needs_test")),
                 ("relabel_trigger", trigger("P1")), ("relabel_trigger", trigger("P2")),
                 ("relabel_trigger", trigger("P3", cause="rescored")))
    summary = state.summary()
    assert summary.products_decided == 3
    assert summary.auto_certified == {"poly_bag": (1, 2), "box": (0, 1)}
    assert summary.triggers_by_cause == {"damage_exceeds_target": 2, "rescored": 1}


def test_recent_triggers_most_recent_first() -> None:
    state = fold(WatchState(), ("relabel_trigger", trigger("P1", 3)), ("relabel_trigger", trigger("P2", 1)),
                 ("relabel_trigger", trigger("P3", 2)))
    assert [t.product_id for t in state.recent_triggers(2)] == ["P1", "P3"]


# -- filters --------------------------------------------------------------------------------------------


def mixed_state(chosen: WatchFilter) -> WatchState:
    return fold(WatchState(filter=chosen),
                ("pack_type_decision", decision("EU-1", marketplace="EU")),
                ("pack_type_decision", decision("NA-1", marketplace="NA", package_type="box", status="needs_test")),
                ("pack_type_decision", decision("JP-1", marketplace="JP", package_type="poly_bag")),
                ("relabel_trigger", trigger("EU-1", marketplace="EU")),
                ("relabel_trigger", trigger("NA-1", marketplace="NA", from_package_type="padded_mailer",
                                            to_package_type="box")),
                ("test_request", requested_test("NA-1", marketplace="NA", package_type="padded_mailer")),
                ("test_request", requested_test("EU-1", marketplace="EU", package_type="sioc")))


def shown(state: WatchState) -> tuple[set[str], set[str], set[str]]:
    return ({d.product_id for d in state.latest_decisions(10)}, {t.product_id for t in state.recent_triggers(10)},
            {t.product_id for t in state.open_tests(10)})


def test_marketplace_filter_applies_to_all_three_tables() -> None:
    assert shown(mixed_state(WatchFilter(marketplaces=frozenset({"NA", "JP"})))) == (
        {"NA-1", "JP-1"}, {"NA-1"}, {"NA-1"})
    assert shown(mixed_state(WatchFilter())) == ({"EU-1", "NA-1", "JP-1"}, {"EU-1", "NA-1"}, {"NA-1", "EU-1"})


def test_package_type_filter_matches_either_side_of_triggers_and_tests() -> None:
    state = mixed_state(WatchFilter(package_types=frozenset({"box"})))
    # NA-1's test is for padded_mailer but it ships in a box now (SAMPLES' current_package_type).
    assert shown(state) == ({"NA-1"}, {"NA-1"}, {"NA-1", "EU-1"})
    assert shown(mixed_state(WatchFilter(package_types=frozenset({"poly_bag"})))) == ({"JP-1"}, {"EU-1"}, set())


def test_status_filter_applies_to_decisions_and_the_header() -> None:
    state = mixed_state(WatchFilter(statuses=frozenset({"needs_test"})))
    assert {d.product_id for d in state.latest_decisions(10)} == {"NA-1"}
    assert state.summary().auto_certified == {"box": (0, 1)}
    assert len(state.recent_triggers(10)) == 2  # triggers carry no status


# -- rendering ------------------------------------------------------------------------------------------


def test_render_shows_header_and_the_three_tables() -> None:
    long_reason = "damage bounds exceed the target in every lighter type after forty shipments were counted"
    state = fold(WatchState(), ("pack_type_decision", decision("B07XJ8C8F5", reason=long_reason)),
                 ("relabel_trigger", trigger("B07XJ8C8F5")), ("test_request", requested_test("B07XJ8C8F5")))
    text = render_text(state, width=200)
    lines = text.splitlines()
    assert lines[0] == ("1 product decided · auto-certified: padded_mailer 100% of 1 · 1 relabel trigger "
                        "(damage_exceeds_target 1) · 1 open test request, 230 g/unit saved if all pass")
    row = next(line for line in lines if "B07XJ8C8F5" in line and "auto_certified" in line)
    assert "pw-20261129-ab12cd" in row and "11-29 12:30:15" in row
    assert long_reason[:47] + "…" in row and long_reason not in text
    assert any("poly_bag → padded_mailer" in line and "3 damages in 40 shipments" in line for line in lines)
    assert any("poly_bag" in line and "box" in line and "230.0" in line for line in lines)


def test_a_narrow_terminal_leaves_out_columns_instead_of_cutting_product_ids() -> None:
    state = fold(WatchState(), ("pack_type_decision", decision("B07XJ8C8F5")))
    wide, narrow = render_text(state, width=200), render_text(state, width=80)
    assert "pw-20261129-ab12cd" in wide and "model certifies padded_mailer at the 0.5% target" in wide
    assert "pw-20261129-ab12cd" not in narrow and "…" not in narrow
    row = next(line for line in narrow.splitlines() if "B07XJ8C8F5" in line)
    assert row.split() == ["B07XJ8C8F5", "EU", "padded_mailer", "auto_certified", "11-29", "12:30:15"]
    assert max(len(line.rstrip()) for line in narrow.splitlines()) <= 80


def test_render_respects_the_row_limit_and_reports_skipped_messages() -> None:
    state = fold(WatchState(), *[("pack_type_decision", decision(f"P{i}", i)) for i in range(5)])
    state.count_undecodable()
    text = render_text(state, limit=2, width=300)
    assert "P4" in text and "P3" in text and "P2" not in text
    assert "1 undecodable message skipped" in text.splitlines()[0]


# -- the command line -----------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="packwise")
    watch.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["watch", *argv])


def test_cli_collects_filters_from_repeats_and_comma_lists() -> None:
    args = parse("--marketplace", "eu,NA", "--marketplace", "JP", "--package-type", "poly_bag",
                 "--status", "needs_test", "--limit", "5", "--once")
    assert args.handler is watch.cmd_watch
    assert watch.watch_filter(args, Settings()) == WatchFilter(
        frozenset({"EU", "NA", "JP"}), frozenset({"poly_bag"}), frozenset({"needs_test"}))
    assert (args.limit, args.once, args.live_only, args.duration) == (5, True, False, None)
    assert parse("--live-only").live_only is True
    assert parse("--from-beginning").live_only is False  # the old flag, now the default, still parses


@pytest.mark.parametrize("argv", [("--package-type", "crate"), ("--status", "certified"), ("--limit", "0"),
                                  ("--duration", "-3")])
def test_cli_rejects_bad_values(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2
    assert f"{argv[1]!r} is not valid" in capsys.readouterr().err


def test_unknown_marketplace_is_a_clear_error() -> None:
    with pytest.raises(PackwiseError, match=r"--marketplace XX is not a known marketplace; known: NA, EU, JP"):
        watch.watch_filter(parse("--marketplace", "XX"), Settings())


def test_ctrl_c_ends_the_live_view_with_exit_code_0(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(settings: Settings, state: WatchState, options: FollowOptions, on_change: Any = None) -> None:
        state.apply("pack_type_decision", "P1", decision("P1"))
        on_change(state)
        raise KeyboardInterrupt

    monkeypatch.setattr(watch, "follow", interrupted)
    monkeypatch.setattr(watch, "output_console", lambda: Console(file=io.StringIO(), force_terminal=True))
    args = parse("--duration", "5")
    args.settings = Settings()
    assert watch.cmd_watch(args) == 0


def test_once_prints_the_view_a_single_time(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def read_to_end(settings: Settings, state: WatchState, options: FollowOptions) -> WatchState:
        assert options == FollowOptions(once=True, duration_s=None)  # the current state, not only what comes next
        return fold(state, ("pack_type_decision", decision("P1", marketplace="JP")),
                    ("pack_type_decision", decision("P2", marketplace="EU")))

    monkeypatch.setattr(watch, "follow", read_to_end)
    args = parse("--once", "--marketplace", "jp")
    args.settings = Settings()
    assert watch.cmd_watch(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 product decided") and out.count("Latest decisions") == 1
    assert "P1" in out and "P2" not in out


def test_once_into_a_file_keeps_every_column(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Redirected output has no terminal width to fit: rows stay whole and no column is left out."""
    monkeypatch.delenv("COLUMNS", raising=False)
    long_reason = "damage bounds exceed the target in every lighter type after forty shipments were counted"
    monkeypatch.setattr(watch, "follow", lambda settings, state, options: fold(
        state, ("pack_type_decision", decision("B07XJ8C8F5", reason=long_reason)),
        ("relabel_trigger", trigger("B07XJ8C8F5")), ("test_request", requested_test("B07XJ8C8F5"))))
    args = parse("--once")
    args.settings = Settings()
    assert watch.cmd_watch(args) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.lstrip().startswith("B07XJ8C8F5") and "auto_certified" in line)
    assert row.split()[:4] == ["B07XJ8C8F5", "EU", "padded_mailer", "auto_certified"]
    assert "pw-20261129-ab12cd" in row and row.rstrip().endswith("11-29 12:30:15")  # model and time kept
    assert lines[0].endswith("230 g/unit saved if all pass")  # the header is one line, not wrapped


def test_live_view_into_a_pipe_prints_the_view_once_then_a_line_per_event(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A log or a pipe gets plain lines it can grep, not redraws of the whole view."""
    def follow_along(settings: Settings, state: WatchState, options: FollowOptions, on_change: Any = lambda s: None,
                     on_caught_up: Any = None, on_event: Any = None) -> WatchState:
        fold(state, ("pack_type_decision", decision("P1", marketplace="EU")))
        on_change(state)
        on_caught_up(state)
        for contract, record in [("pack_type_decision", decision("P2", 1, marketplace="NA", package_type="box",
                                                                  status="needs_test", reason="no type meets")),
                                 ("pack_type_decision", decision("P3", 2, marketplace="EU")),
                                 ("relabel_trigger", trigger("P1", 3, marketplace="EU")),
                                 ("test_request", requested_test("P2", 4, marketplace="NA"))]:
            on_event(contract, record["product_id"], record)
            state.apply(contract, record["product_id"], record)
            on_change(state)
        on_event("pack_type_decision", "P2", None)  # P2 left the catalog
        state.apply("pack_type_decision", "P2", None)
        withdrawn = closed(requested_test("P2", 4, marketplace="NA"), "withdrawn", 5,
                           reason="the product left the catalog")
        on_event("test_request", "P2", withdrawn)
        state.apply("test_request", "P2", withdrawn)
        on_change(state)
        return state

    monkeypatch.setattr(watch, "follow", follow_along)
    args = parse("--marketplace", "NA")
    args.settings = Settings()
    assert watch.cmd_watch(args) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out and out.count("Latest decisions") == 1
    assert out.startswith("0 products decided")  # P1 is in EU: the view of the state read so far
    events = out.split("Open test requests, biggest saving first")[1].strip().splitlines()[-4:]
    assert events == [
        "2026-11-29 12:30:16 decision P2 NA box needs_test: no type meets",
        "2026-11-29 12:30:19 test P2 NA poly_bag (ships in box now) saves 230.0 g/unit",
        "deleted P2 (left the catalog)",
        "2026-11-29 12:30:20 test withdrawn P2 NA poly_bag: the product left the catalog"]


def test_unreachable_broker_names_the_address() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(PackwiseError, match=r"^cannot reach Kafka at 127\.0\.0\.1:1 within 1s"):
        follow(settings, WatchState(), FollowOptions(once=True, connect_timeout_s=1.0))


# -- against the broker ---------------------------------------------------------------------------------


@pytest.mark.kafka
def test_watch_reads_what_the_workers_published(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    names = TopicNames.for_settings(kafka_settings)
    serde = Serde()
    producer = Producer(producer_config(kafka_settings))
    published = [
        (names.decisions, "pack_type_decision", decision("P1", 1, package_type="box", status="needs_test",
                                                          marketplace="NA")),
        (names.decisions, "pack_type_decision", decision("P2", 2, marketplace="EU")),
        (names.decisions, "pack_type_decision", decision("P3", 3, marketplace="JP")),
        (names.relabels, "relabel_trigger", trigger("P2", 2, marketplace="EU")),
        (names.tests, "test_request", requested_test("P1", 1, marketplace="NA", weight_saved_g=80.0)),
        (names.tests, "test_request", requested_test("P2", 2, marketplace="EU", weight_saved_g=400.0)),
    ]
    for topic, contract, record in published:
        producer.produce(topic, key=record["product_id"].encode(), value=serde.encode(contract, record))
    producer.produce(names.decisions, key=b"P3", value=None)  # P3 left the catalog
    producer.produce(names.decisions, key=b"P4", value=b'{"not": "avro"}')
    assert producer.flush(30) == 0

    refreshed: list[int] = []
    state = follow(kafka_settings, WatchState(), FollowOptions(once=True, duration_s=30),
                   on_change=lambda s: refreshed.append(s.events))

    assert state.events == len(published) + 2 and refreshed[-1] == state.events  # read to the end, then stopped
    assert [d.product_id for d in state.latest_decisions(10)] == ["P2", "P1"]
    assert [(t.product_id, t.weight_saved_g) for t in state.open_tests(10)] == [("P2", 400.0), ("P1", 80.0)]
    text = render_text(state, width=300)
    assert text.splitlines()[0] == (
        "2 products decided · auto-certified: padded_mailer 100% of 1, box 0% of 1 · 1 relabel trigger "
        "(damage_exceeds_target 1) · 2 open test requests, 480 g/unit saved if all pass · 1 deleted · "
        "1 undecodable message skipped")
    assert "poly_bag → padded_mailer" in text


@pytest.mark.kafka
def test_watch_shows_the_current_state_by_default_then_follows_what_comes(
        kafka_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """Decisions are compacted: what is on the topic is the current state, so a plain `watch` starts there,
    as the README's `watch --marketplace EU --status needs_test` after a simulation expects."""
    create_topics(kafka_settings)
    names = TopicNames.for_settings(kafka_settings)
    serde = Serde()
    producer = Producer(producer_config(kafka_settings))

    def publish(topic: str, contract: str, record: dict[str, Any]) -> None:
        producer.produce(topic, key=record["product_id"].encode(), value=serde.encode(contract, record))
        assert producer.flush(30) == 0

    publish(names.decisions, "pack_type_decision", decision("P1", 1, marketplace="EU"))
    publish(names.decisions, "pack_type_decision", decision("P2", 2, marketplace="EU", package_type="box",
                                                            status="needs_test"))
    publish(names.decisions, "pack_type_decision", decision("P3", 3, marketplace="NA", package_type="box",
                                                            status="needs_test"))
    publish(names.tests, "test_request", requested_test("P2", 2, marketplace="EU", weight_saved_g=120.0))

    args = parse("--once", "--marketplace", "EU", "--status", "needs_test")
    args.settings = kafka_settings
    assert watch.cmd_watch(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 product decided · auto-certified: box 0% of 1")
    assert "1 open test request, 120 g/unit saved" in out
    assert [line.split()[0] for line in out.splitlines() if "needs_test" in line] == ["P2"]

    # --live-only: only what is published from now on
    assert follow(kafka_settings, WatchState(), FollowOptions(live_only=True, once=True, duration_s=30)).events == 0

    # without --once the view reads the current state, then follows: events after it arrive one by one
    caught_up: list[int] = []
    new: list[str | None] = []
    state = follow(kafka_settings, WatchState(), FollowOptions(duration_s=30, until=lambda: bool(new)),
                   on_caught_up=lambda s: (caught_up.append(s.events),
                                           publish(names.decisions, "pack_type_decision", decision("P4", 4))),
                   on_event=lambda contract, key, record: new.append(key))
    assert caught_up == [4] and new == ["P4"] and state.events == 5
