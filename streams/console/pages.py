"""The console's pages as HTML strings, from what the store and the pollers hold. No I/O beyond the store's
queries; every value from the topics is escaped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, urlencode

from scipy.special import betaincinv

from models.packtypes import PACK_TYPES
from streams.console import charts
from streams.console.reader import PartitionLag, WorkerScrape
from streams.console.store import ConsoleStore, evidence_rows, moment

COHORT_LEVEL = 0.95  # the one-sided level of the upper bound shown beside each certified cohort's observed rate
QUEUE_PAGE = 100


@dataclass(frozen=True)
class Live:
    """What the pollers know, handed to the pages."""

    caught_up: bool
    folded: int
    reader_failure: str | None
    lags: Sequence[PartitionLag]
    lag_error: str | None
    workers: Sequence[WorkerScrape]
    targets: Mapping[str, float]  # marketplace -> target damage rate (the marketplaces' configuration)


def _t(ms: int | None) -> str:
    value = moment(ms)
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _pct(rate: float | None, digits: int = 2) -> str:
    return "-" if rate is None else f"{rate * 100:.{digits}f}%"


def _num(value: float | int | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _product_link(product: str) -> str:
    return f'<a href="/products/{quote(product, safe="")}">{escape(product)}</a>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", empty: str = "nothing yet") -> str:
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def layout(title: str, body: str, active: str = "") -> str:
    nav = "".join(f'<a href="{href}" class="{"on" if key == active else ""}">{label}</a>'
                  for key, href, label in (("overview", "/", "Overview"), ("tests", "/tests", "Test queue"),
                                           ("dead", "/dead-letters", "Dead letters")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · packwise console</title><link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script></head>
<body><header><span class="brand">packwise</span><nav>{nav}</nav>
<form action="/products" method="get" class="search"><input name="q" placeholder="product id" aria-label="product id">
</form><span id="live" class="live" title="live updates">●</span></header>
<main id="main">{body}</main></body></html>"""


def _status_badge(ok: bool, yes: str, no: str) -> str:
    return f'<span class="badge {"ok" if ok else "bad"}">{escape(yes if ok else no)}</span>'


def _cohort_bounds(damages: int, shipments: int) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds at COHORT_LEVEL on the cohort's damage rate."""
    if shipments <= 0:
        return 0.0, 1.0
    lower = 0.0 if damages == 0 else float(betaincinv(damages, shipments - damages + 1, 1 - COHORT_LEVEL))
    upper = 1.0 if damages >= shipments else float(betaincinv(damages + 1, shipments - damages, COHORT_LEVEL))
    return lower, upper


def _promise(rate: float | None, lower: float, target: float | None) -> str:
    """Within target; above it but not proven (the lower bound is still within: more shipments will tell);
    or proven above it."""
    if rate is None or target is None:
        return "-"
    if rate <= target:
        return '<span class="badge ok">within target</span>'
    if lower <= target:
        return '<span class="badge warn">above target, not proven</span>'
    return '<span class="badge bad">ABOVE TARGET</span>'


def overview(store: ConsoleStore, live: Live) -> str:
    counts = store.decision_counts()
    markets = sorted({r["marketplace"] for r in counts})
    decided = sum(r["products"] for r in counts)
    certified = sum(r["products"] for r in counts if r["status"] == "auto_certified")
    packaging = sum(r["packaging_g"] for r in counts)
    box = sum(r["box_g"] for r in counts)
    tests = store.test_totals()
    open_tests, open_grams = sum(r["open"] for r in tests), sum(r["grams"] for r in tests)
    dead = store.dead_letter_counts()
    workers_up = sum(w.up for w in live.workers)
    total_lag = sum(p.lag for p in live.lags)
    kpis = [("products decided", _num(decided)),
            ("auto-certified", _pct(certified / decided if decided else None, 1)),
            ("packaging saved vs all-box", f"{_pct((box - packaging) / box if box else None, 1)}"
             f"<small>{_num(box - packaging)} g per unit of each</small>"),
            ("open test requests", f"{_num(open_tests)}<small>{_num(open_grams)} g/unit if all pass</small>"),
            ("dead letters", _num(sum(r["dead_letters"] for r in dead))),
            ("worker lag", _num(total_lag) if live.lags else "-"),
            ("workers up", f"{workers_up} of {len(live.workers)}" if live.workers else "-")]
    parts = ['<h1>Overview</h1>', _reader_banner(live),
             '<section class="kpis">' + "".join(f'<div class="kpi"><b>{value}</b><span>{escape(label)}</span></div>'
                                                for label, value in kpis) + "</section>"]
    parts.append('<section><h2>The promise: damage among auto-certified products, against each target</h2>'
                 '<p class="note">Shipments in the type a product is auto-certified for at the time, and the damage '
                 f'reports of those shipments; bounds at {COHORT_LEVEL:.0%} each side (Clopper-Pearson): above the target '
                 'is proven when even the lower bound is above it.</p>'
                 + _cohort_table(store, live) + "</section>")
    parts.append("<section><h2>Decisions by package type and marketplace</h2>" + _decision_matrix(counts, markets)
                 + "</section>")
    parts.append('<section class="half"><h2>Packaging saved against all-box</h2>' + charts.line_chart(
        "share of packaging weight saved against the smallest fitting box, over time",
        [(at, 100 * (box_g - packaging_g) / box_g) for at, packaging_g, box_g in store.saved_series() if box_g], "%")
        + "</section>")
    buckets, by_cause = store.trigger_series()
    parts.append('<section class="half"><h2>Relabel triggers over time, by cause</h2>' + charts.stacked_bars(
        "relabel triggers per time bucket", buckets, by_cause) + "</section>")
    parts.append('<section class="half"><h2>Open test queue</h2>' + _table(
        ("marketplace", "open requests", "g/unit saved if all pass"),
        ((f'<a href="/tests?marketplace={quote(r["marketplace"])}">{escape(r["marketplace"])}</a>', _num(r["open"]),
          _num(r["grams"])) for r in tests), empty="no open test request") + "</section>")
    parts.append('<section class="half"><h2>Dead letters by topic and reason</h2>' + _table(
        ("input topic", "reason", "messages"),
        ((escape(r["source_topic"]), f'<a href="/dead-letters?topic={quote(r["source_topic"])}&reason='
          f'{quote(r["reason_code"])}">{escape(r["reason_code"])}</a>', _num(r["dead_letters"])) for r in dead),
        empty="no dead letters") + "</section>")
    parts.append('<section class="half"><h2>Workers\' consumer lag per partition</h2>' + _lag_table(live) + "</section>")
    parts.append('<section class="half"><h2>Model versions</h2>' + _models(store, live) + "</section>")
    parts.append("<section><h2>Latest decisions</h2>" + _table(
        ("product", "mkt", "type", "status", "reason", "model", "decided (UTC)"),
        ((_product_link(d["product_id"]), escape(d["marketplace"]), escape(d["package_type"]),
          _decision_status(d["status"], d["provisional"]), escape(d["reason"]), escape(d["model_version"] or "-"),
          _t(d["decided_at"])) for d in store.latest_decisions(10))) + "</section>")
    parts.append("<section><h2>Recent relabel triggers</h2>" + _triggers(store.recent_triggers(10), product=True)
                 + "</section>")
    return layout("Overview", "".join(parts), "overview")


def _reader_banner(live: Live) -> str:
    if live.reader_failure:
        return f'<p class="banner bad">The console stopped reading Kafka: {escape(live.reader_failure)}</p>'
    if not live.caught_up:
        return (f'<p class="banner">Catching up with the topics: {live.folded:,} messages read so far; figures '
                "grow until then.</p>")
    return ""


def _decision_status(status: str, provisional: int | bool) -> str:
    label = "provisional" if provisional else status
    return f'<span class="status {escape(label)}">{escape(label)}</span>'


def _cohort_table(store: ConsoleStore, live: Live) -> str:
    rows = []
    for r in store.cohort():
        rate = r["damages"] / r["shipments"] if r["shipments"] else None
        lower, upper = _cohort_bounds(r["damages"], r["shipments"])
        target = live.targets.get(r["marketplace"])
        # the verdict first: on a phone the table scrolls, and the verdict is what must show without scrolling
        rows.append((escape(r["marketplace"]), escape(r["package_type"]), _promise(rate, lower, target), _pct(rate),
                     _pct(target), f"{_pct(lower)}–{_pct(upper)}", _num(r["shipments"]), _num(r["damages"])))
    return _table(("marketplace", "type", "", "observed rate", "target", "bounds", "shipments", "damaged"),
                  rows, "cohort", empty="no shipment in an auto-certified type yet")


def _decision_matrix(counts: Sequence[Mapping[str, Any]], markets: list[str]) -> str:
    cells: dict[tuple[str, str], list[int]] = {}
    for r in counts:
        cell = cells.setdefault((r["marketplace"], r["package_type"]), [0, 0])
        cell[0] += r["products"]
        cell[1] += r["products"] if r["status"] == "auto_certified" else 0
    types = [p.value for p in PACK_TYPES if any((m, p.value) in cells for m in markets)]
    rows = []
    for market in markets:
        row = [escape(market)]
        for pack in types:
            n, ok = cells.get((market, pack), (0, 0))
            bar = f'<span class="bar"><i style="width:{100 * ok / n:.0f}%"></i></span>' if n else ""
            row.append(f"{_num(n)} {bar}<small>{_pct(ok / n if n else None, 0)} auto</small>" if n else "-")
        rows.append(row)
    return _table(["marketplace", *types], rows, "matrix", empty="no decision yet")


def _lag_table(live: Live) -> str:
    """One row per input topic, each partition's lag in it: a glance finds the partition that falls behind."""
    if live.lag_error:
        return f'<p class="banner bad">Lag unknown: {escape(live.lag_error)}</p>'
    by_topic: dict[str, list[PartitionLag]] = {}
    for p in live.lags:
        by_topic.setdefault(p.topic, []).append(p)

    def cell(p: PartitionLag) -> str:
        title = f"committed {_num(p.committed)} of {_num(p.end)}"
        return f'<span class="lagp{" warn" if p.lag > 1000 else ""}" title="{title}">{p.partition}: {_num(p.lag)}</span>'

    rows = ((escape(topic), " ".join(cell(p) for p in sorted(parts, key=lambda p: p.partition)),
             _num(sum(p.lag for p in parts))) for topic, parts in sorted(by_topic.items()))
    return _table(("input topic", "lag per partition (partition: messages)", "total"), rows, "lag",
                  empty="no input partition found yet")


def _models(store: ConsoleStore, live: Live) -> str:
    decided = _table(("model version", "products decided"),
                     ((escape(r["model_version"] or "(no model verdict)"), _num(r["products"]))
                      for r in store.model_versions()), empty="no decision yet")
    workers = _table(("worker /metrics", "up", "model in use", "events", "dead letters", "scoring failures"),
                     ((escape(w.url), _status_badge(w.up, "up", "down"), escape(", ".join(w.model_versions) or "-"),
                       _num(w.events), _num(w.dead_letters), _num(w.scoring_failures)) for w in live.workers),
                     empty="no worker /metrics configured (PACKWISE_CONSOLE_METRICS_URLS)")
    return decided + workers


def _triggers(rows: Iterable[Mapping[str, Any]], product: bool = False) -> str:
    return _table(
        (("product",) if product else ()) + ("mkt", "from → to", "cause", "shipments", "damages", "bounds", "reason",
                                             "triggered (UTC)"),
        (((_product_link(t["product_id"]),) if product else ()) + (
            escape(t["marketplace"]), f'{escape(t["from_type"])} → {escape(t["to_type"])}', escape(t["cause"]),
            _num(t["shipments"]), _num(t["damages"]),
            f'{_pct(t["damage_rate_lower"])}–{_pct(t["damage_rate_upper"])}', escape(t["reason"]),
            _t(t["triggered_at"])) for t in rows), empty="no relabel trigger")


def _evidence_table(evidence_json: str) -> str:
    return _table(("type", "model p(damage)", "model certifies", "shipments", "damages", "damage rate bounds"),
                  ((escape(e["package_type"]), _pct(e.get("model_probability")),
                    "yes" if e.get("model_certified") else "no", _num(e.get("shipments")), _num(e.get("damages")),
                    f'{_pct(e.get("damage_rate_lower"))}–{_pct(e.get("damage_rate_upper"))}')
                   for e in evidence_rows(evidence_json)), "evidence")


def product(store: ConsoleStore, product_id: str) -> str | None:
    decision = store.decision(product_id)
    history = store.decision_history(product_id)
    if decision is None and not history:
        return None
    parts = [f"<h1>Product {escape(product_id)}</h1>"]
    site = store.site(product_id)
    if decision is None:
        parts.append('<p class="banner">This product left the catalog: no current decision.</p>')
    else:
        saved = (decision["box_g"] - decision["packaging_g"]) if decision["box_g"] is not None else None
        parts.append(
            f'<section class="kpis"><div class="kpi"><b>{escape(decision["package_type"])}</b><span>decided type</span>'
            f'</div><div class="kpi"><b>{_decision_status(decision["status"], decision["provisional"])}</b>'
            f'<span>status</span></div><div class="kpi"><b>{escape(decision["marketplace"])}</b><span>marketplace · '
            f'target {_pct(decision["target"])}</span></div><div class="kpi"><b>{_num(saved, 1)} g</b><span>saved per '
            f'unit vs all-box</span></div><div class="kpi"><b>{escape(site or "-")}</b><span>ships from</span></div>'
            "</section>")
        parts.append(f'<section><h2>Current decision</h2><p>{escape(decision["reason"])}</p><p class="note">model '
                     f'{escape(decision["model_version"] or "-")} · decided {_t(decision["decided_at"])} UTC</p>'
                     + _evidence_table(decision["evidence"]) + "</section>")
    items = []
    for h in history:
        items.append(f'<details><summary>{_t(h["decided_at"])} · <b>{escape(h["package_type"])}</b> '
                     f'{_decision_status(h["status"], h["provisional"])} · {escape(h["reason"])}</summary>'
                     f'{_evidence_table(h["evidence"])}</details>')
    parts.append("<section><h2>Decision history</h2>" + ("".join(items) or '<p class="empty">none</p>') + "</section>")
    parts.append("<section><h2>Relabel triggers</h2>" + _triggers(store.product_triggers(product_id)) + "</section>")
    parts.append("<section><h2>Test requests</h2>" + _table(
        ("test", "ships in then", "saves g/unit", "model p(damage)", "status", "requested (UTC)", "closed (UTC)"),
        ((escape(t["package_type"]), escape(t["current_type"]), _num(t["weight_saved_g"], 1),
          _pct(t["model_probability"]), f'<span class="status {escape(t["status"])}">{escape(t["status"])}</span>',
          _t(t["requested_at"]), _t(t["closed_at"])) for t in store.product_tests(product_id)),
        empty="no test requested") + "</section>")
    parts.append("<section><h2>Test results</h2>" + _table(
        ("type", "protocol", "passed / tested", "failure codes", "lab", "tested (UTC)", "answers request"),
        ((escape(r["package_type"]), escape(r["protocol"] or "-"), f'{r["samples_passed"]} / {r["samples_tested"]}',
          escape(r["failure_codes"] or "-"), escape(r["lab"] or "-"), _t(r["tested_at"]),
          escape(r["request_id"] or "-")) for r in store.product_results(product_id)),
        empty="no test result") + "</section>")
    return layout(f"Product {product_id}", "".join(parts))


def search_results(query: str, products: list[str]) -> str:
    body = (f"<h1>Products starting with {escape(query)}</h1>"
            + ("<ul>" + "".join(f"<li>{_product_link(p)}</li>" for p in products) + "</ul>" if products
               else f'<p class="empty">No decided product starts with {escape(query)}.</p>'))
    return layout("Search", body)


def _options(name: str, values: Iterable[str], chosen: str | None, label: str) -> str:
    options = [f'<option value="">all</option>'] + [
        f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values]
    return f'<label>{escape(label)} <select name="{name}">{"".join(options)}</select></label>'


def test_queue(store: ConsoleStore, marketplace: str | None, site: str | None, page: int,
               markets: Sequence[str]) -> str:
    rows = list(store.test_queue(marketplace, site, QUEUE_PAGE + 1, page * QUEUE_PAGE))
    more = len(rows) > QUEUE_PAGE
    query = {k: v for k, v in (("marketplace", marketplace), ("site", site)) if v}
    form = (f'<form class="filters" method="get" action="/tests">{_options("marketplace", markets, marketplace, "marketplace")}'
            f'{_options("site", store.test_sites(), site, "site")}<noscript><button>filter</button></noscript>'
            f'<a class="button" id="csv" href="/tests.csv?{urlencode(query)}">export CSV</a></form>')
    table = _table(("#", "product", "mkt", "site", "test", "ships in now", "saves g/unit", "model p(damage)",
                    "requested (UTC)"),
                   ((str(page * QUEUE_PAGE + i + 1), _product_link(r["product_id"]), escape(r["marketplace"]),
                     escape(r["site"] or "-"), escape(r["package_type"]), escape(r["current_type"]),
                     _num(r["weight_saved_g"], 1), _pct(r["model_probability"]), _t(r["requested_at"]))
                    for i, r in enumerate(rows[:QUEUE_PAGE])), "queue", empty="no open test request matches")
    pager = ""
    if page > 0:
        pager += f'<a href="/tests?{urlencode({**query, "page": page - 1})}">← previous</a> '
    if more:
        pager += f'<a href="/tests?{urlencode({**query, "page": page + 1})}">next →</a>'
    return layout("Test queue", "<h1>Test queue</h1><p class=\"note\">Open requests for a physical test, biggest "
                  "packaging saving first.</p>" + form + table + f'<p class="pager">{pager}</p>', "tests")


CSV_COLUMNS = ("product_id", "marketplace", "site", "package_type", "current_package_type", "weight_saved_g",
               "model_probability", "model_version", "requested_at", "request_id")


def csv_row(r: Mapping[str, Any]) -> list[Any]:
    requested = moment(r["requested_at"])
    return [r["product_id"], r["marketplace"], r["site"] or "", r["package_type"], r["current_type"],
            r["weight_saved_g"], "" if r["model_probability"] is None else r["model_probability"],
            r["model_version"] or "", requested.isoformat() if requested else "", r["event_id"]]


def dead_letters(store: ConsoleStore, topic: str | None, reason: str | None, topics: Sequence[str]) -> str:
    rows = store.dead_letters(topic, reason)
    codes = sorted({r["reason_code"] for r in store.dead_letter_counts()})
    form = (f'<form class="filters" method="get" action="/dead-letters">{_options("topic", topics, topic, "input topic")}'
            f'{_options("reason", codes, reason, "reason")}<noscript><button>filter</button></noscript></form>')
    replay = ('<p><button id="replay" type="button" disabled>Replay selected</button> <span id="replay-result" '
              'role="status"></span></p><p class="note">Replay sends the original message back to its input topic '
              'after a fix, once per dead letter (a second replay of the same one is refused).</p>')

    def state(r: Mapping[str, Any]) -> str:
        return {None: "", "sending": "replay unconfirmed", "sent": "replayed", "unavailable": "original not kept"}.get(
            r["replay_state"], r["replay_state"])

    table = _table(("", "failed (UTC)", "input topic", "at", "reason", "size", "replay"),
                   ((f'<input type="checkbox" class="pick" value="{escape(r["dlq_topic"])}/{r["partition"]}/'
                     f'{r["offset"]}" aria-label="select"{" disabled" if r["replay_state"] else ""}>',
                     _t(r["failed_at"]), escape(r["source_topic"]),
                     f'<a href="/dead-letters/{quote(r["dlq_topic"], safe="")}/{r["partition"]}/{r["offset"]}">'
                     f'{r["source_partition"]}@{r["source_offset"]}</a>', escape(r["reason"]),
                     _num(r["original_size"]), escape(state(r))) for r in rows), "dead",
                   empty="no dead letter matches")
    return layout("Dead letters", "<h1>Dead letters</h1>" + form + replay + table, "dead")


def dead_letter(row: Mapping[str, Any], decoded: Mapping[str, Any] | None, decode_error: str | None) -> str:
    facts = _table(("", ""), [
        ("dead-letter topic", escape(f'{row["dlq_topic"]} partition {row["partition"]} offset {row["offset"]}')),
        ("input topic", escape(f'{row["source_topic"]} partition {row["source_partition"]} offset '
                               f'{row["source_offset"]}')),
        ("reason", escape(row["reason"])), ("error type", escape(row["error_type"])),
        ("failed at (UTC)", _t(row["failed_at"])), ("size", _num(row["original_size"])),
        ("sha256", escape(row["original_sha256"] or "-")),
        ("key", escape((row["original_key"] or b"").decode("utf-8", errors="replace")))], "facts")
    if decoded is not None:
        record = f"<pre>{escape(json.dumps(_printable(decoded), indent=2, ensure_ascii=False, default=str))}</pre>"
    else:
        record = f'<p class="empty">The record does not decode: {escape(decode_error or "no original kept")}</p>'
    return layout("Dead letter", "<h1>Dead letter</h1>" + facts + "<h2>The record, decoded where possible</h2>"
                  + record, "dead")


def _printable(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value):,} bytes>"
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return value


def login(error: str = "") -> str:
    return layout("Sign in", '<h1>Sign in</h1><form method="post" action="/login" class="login"><label>Console '
                  'token <input type="password" name="token" autocomplete="current-password" autofocus></label> '
                  '<button>Sign in</button></form>' + (f'<p class="banner bad">{escape(error)}</p>' if error else ""))


def not_found(what: str) -> str:
    return layout("Not found", f'<h1>Not found</h1><p class="empty">{escape(what)}</p>')
