"""`packwise watch`: a live terminal view of the decisions, relabel triggers and test requests being published.

The thinking has no Kafka in it: `WatchState.apply` folds decoded events into the latest view, the
`WatchState` queries filter and order it, and `render` turns it into a rich renderable. Only `follow` reads
the three output topics, with a consumer that joins no group and commits nothing, so watching never moves
anyone's offsets.
"""

from __future__ import annotations

import argparse
import enum
import heapq
import io
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from models.packtypes import PACK_TYPES, PackType
from streams.errors import PackwiseError
from streams.settings import Settings

STATUSES = ("auto_certified", "needs_test")  # the Avro enum DecisionStatus
REASON_WIDTH = 48
WRAPPED_WIDTH = 16  # the narrowest a wrapping column (a reason) gets before columns are left out
TRIGGERS_KEPT = 10_000  # the triggers topic keeps 30 days; the view only ever shows the latest few
REFRESH_S = 0.5
DEFAULT_LIMIT = 10  # three tables of ten rows fit a 50-line terminal; a live view cuts off what does not fit
PLAIN_WIDTH = 1000  # output to a file or a pipe: wider than any row, so nothing is wrapped or left out


class Contract(str, enum.Enum):
    """The output contracts the view reads (streams.serde.CONTRACTS names)."""

    DECISION = "pack_type_decision"
    RELABEL = "relabel_trigger"
    TEST_REQUEST = "test_request"


# -- what the view remembers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRow:
    product_id: str
    marketplace: str
    package_type: str
    status: str
    reason: str
    model_version: str | None
    decided_at: datetime
    arrival: int  # breaks ties between equal timestamps: the later message is the more recent


@dataclass(frozen=True)
class TriggerRow:
    product_id: str
    marketplace: str
    from_package_type: str
    to_package_type: str
    cause: str
    reason: str
    triggered_at: datetime


@dataclass(frozen=True)
class RequestedTest:
    product_id: str
    marketplace: str
    package_type: str
    current_package_type: str
    weight_saved_g: float
    model_version: str | None
    requested_at: datetime
    request_id: str
    legacy: bool = False  # published before requests had a lifecycle: the decisions say when it closed


@dataclass(frozen=True)
class WatchFilter:
    """What the operator asked to see; an empty set admits everything.

    Every event is matched on the fields it has: the marketplace on all three; the package type on a
    decision's type, either side of a trigger, or either type of a test request; the status on decisions
    only (triggers and test requests have none)."""

    marketplaces: frozenset[str] = frozenset()
    package_types: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()

    def admits(self, marketplace: str, package_types: Iterable[str], status: str | None = None) -> bool:
        return ((not self.marketplaces or marketplace in self.marketplaces)
                and (not self.package_types or any(p in self.package_types for p in package_types))
                and (not self.statuses or status is None or status in self.statuses))


@dataclass(frozen=True)
class Summary:
    products_decided: int
    auto_certified: dict[str, tuple[int, int]]  # package type -> (auto-certified, decided), lightest first
    triggers_by_cause: dict[str, int]
    open_tests: int
    grams_saved: float  # per unit, summed over the open test requests, if every one passed
    deleted: int
    undecodable: int


def _lighter_or_same(package_type: str, than: str) -> bool:
    return PackType(package_type).index <= PackType(than).index


@dataclass
class WatchState:
    """The latest decision per product, the recent triggers and the open test requests.

    A test request is open from its `open` record until the record that closes it (answered, withdrawn,
    superseded), which the worker publishes on the same topic under the same key, so in order: the open
    requests are the worker's, whatever order the three topics are read in. A request published before
    requests had a lifecycle (no request_id) gets no closing record: it closes when its product's decision
    reaches the tested type or the product leaves the catalog.

    Decisions and test requests are kept for every product and filtered when asked, because such a request
    closes on its product's decision whatever the filter; triggers are filtered as they arrive and only
    the latest TRIGGERS_KEPT are kept."""

    filter: WatchFilter = field(default_factory=WatchFilter)
    decisions: dict[str, DecisionRow] = field(default_factory=dict)
    triggers: deque[TriggerRow] = field(default_factory=lambda: deque(maxlen=TRIGGERS_KEPT))
    trigger_causes: Counter[str] = field(default_factory=Counter)
    tests: dict[str, dict[str, RequestedTest]] = field(default_factory=dict)  # product -> request id -> open
    deleted: set[str] = field(default_factory=set)  # products whose latest decision is a tombstone
    undecodable: int = 0
    events: int = 0

    def apply(self, contract: Contract | str, key: str | None, record: Mapping[str, Any] | None) -> None:
        """Fold one decoded event; `record` None on the decisions topic is a tombstone: the product left."""
        self.events += 1
        contract = Contract(contract)
        if contract is Contract.DECISION:
            if record is None:
                self._forget(key)
            else:
                self._on_decision(record)
        elif contract is Contract.RELABEL and record is not None:
            self._on_trigger(record)
        elif contract is Contract.TEST_REQUEST and record is not None:
            self._on_test_request(record)

    def count_undecodable(self) -> None:
        self.events += 1
        self.undecodable += 1

    def _forget(self, product: str | None) -> None:
        if product is None:
            return
        self.decisions.pop(product, None)
        self._close_legacy(product, lambda test: True)  # the worker withdraws the others on its own
        self.deleted.add(product)

    def _close_legacy(self, product: str, closes: Callable[[RequestedTest], bool]) -> None:
        open_tests = self.tests.get(product, {})
        for request_id in [i for i, test in open_tests.items() if test.legacy and closes(test)]:
            del open_tests[request_id]
        if not open_tests:
            self.tests.pop(product, None)

    def _on_decision(self, r: Mapping[str, Any]) -> None:
        product = r["product_id"]
        self.deleted.discard(product)
        self.decisions[product] = DecisionRow(product, r["marketplace"], r["package_type"], r["status"], r["reason"],
                                              r.get("model_version"), r["decided_at"], self.events)
        # Shipping in the tested type (or a lighter one) means the test passed or is no longer needed.
        self._close_legacy(product, lambda test: _lighter_or_same(r["package_type"], test.package_type))

    def _on_trigger(self, r: Mapping[str, Any]) -> None:
        if not self.filter.admits(r["marketplace"], (r["from_package_type"], r["to_package_type"])):
            return
        self.triggers.append(TriggerRow(r["product_id"], r["marketplace"], r["from_package_type"],
                                        r["to_package_type"], r["cause"], r["reason"], r["triggered_at"]))
        self.trigger_causes[r["cause"]] += 1

    def _on_test_request(self, r: Mapping[str, Any]) -> None:
        product, request_id = r["product_id"], r.get("request_id")
        if r.get("status", "open") != "open":
            open_tests = self.tests.get(product, {})
            open_tests.pop(request_id, None)
            if not open_tests:
                self.tests.pop(product, None)
            return
        legacy = request_id is None
        if legacy:
            if product in self.deleted:
                return  # read after its product's tombstone (topics are read in no set order): nothing to test
            decided = self.decisions.get(product)
            if decided is not None and _lighter_or_same(decided.package_type, r["package_type"]):
                return  # the decision already reached the tested type: nothing left to test
        self.tests.setdefault(product, {})[request_id or r["event_id"]] = RequestedTest(
            product, r["marketplace"], r["package_type"], r["current_package_type"], r["weight_saved_g"],
            r.get("model_version"), r["requested_at"], request_id or r["event_id"], legacy)

    # -- queries ---------------------------------------------------------------------------------------

    def _shown_decisions(self) -> Iterable[DecisionRow]:
        return (d for d in self.decisions.values()
                if self.filter.admits(d.marketplace, (d.package_type,), d.status))

    def _shown_tests(self) -> Iterable[RequestedTest]:
        return (t for by_type in self.tests.values() for t in by_type.values()
                if self.filter.admits(t.marketplace, (t.package_type, t.current_package_type)))

    def latest_decisions(self, limit: int) -> list[DecisionRow]:
        """The `limit` most recent decisions that pass the filter, most recent first."""
        return heapq.nlargest(limit, self._shown_decisions(), key=lambda d: (d.decided_at, d.arrival))

    def recent_triggers(self, limit: int) -> list[TriggerRow]:
        """The `limit` most recent triggers that passed the filter, most recent first."""
        latest = heapq.nlargest(limit, enumerate(self.triggers), key=lambda seen: (seen[1].triggered_at, seen[0]))
        return [trigger for _, trigger in latest]

    def open_tests(self, limit: int) -> list[RequestedTest]:
        """The `limit` open test requests that save the most packaging, heaviest saving first."""
        return heapq.nlargest(limit, self._shown_tests(), key=lambda t: (t.weight_saved_g, t.requested_at))

    def summary(self) -> Summary:
        decided: Counter[str] = Counter()
        certified: Counter[str] = Counter()
        for d in self._shown_decisions():
            decided[d.package_type] += 1
            certified[d.package_type] += d.status == "auto_certified"
        tests = list(self._shown_tests())
        return Summary(
            products_decided=sum(decided.values()),
            auto_certified={p.value: (certified[p.value], decided[p.value]) for p in PACK_TYPES if decided[p.value]},
            triggers_by_cause=dict(self.trigger_causes.most_common()),
            open_tests=len(tests), grams_saved=sum(t.weight_saved_g for t in tests),
            deleted=len(self.deleted), undecodable=self.undecodable)


# -- rendering ------------------------------------------------------------------------------------------


def _truncate(text: str, width: int = REASON_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _time(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:%M:%S")  # a live view: the year goes without saying


def header(summary: Summary) -> Text:
    """One line of counts: products decided, auto-certified share per type, triggers, open tests."""
    shares = ", ".join(f"{pack} {ok / n:.0%} of {n:,}" for pack, (ok, n) in summary.auto_certified.items())
    causes = ", ".join(f"{cause} {n}" for cause, n in summary.triggers_by_cause.items())
    line = Text()
    line.append(f"{_count(summary.products_decided, 'product')} decided", style="bold")
    line.append(f" · auto-certified: {shares or 'none yet'}")
    line.append(f" · {_count(sum(summary.triggers_by_cause.values()), 'relabel trigger')}"
                + (f" ({causes})" if causes else ""))
    line.append(f" · {_count(summary.open_tests, 'open test request')}, {summary.grams_saved:,.0f} g/unit saved "
                "if all pass", style="bold")
    if summary.deleted:
        line.append(f" · {summary.deleted} deleted")
    if summary.undecodable:
        line.append(f" · {_count(summary.undecodable, 'undecodable message')} skipped", style="red")
    return line


@dataclass(frozen=True)
class Column:
    name: str
    keep: int  # when the terminal is too narrow, the column with the lowest `keep` goes first
    wraps: bool = False  # free text wraps; ids, types, times and numbers never do
    justify: JustifyMethod = "left"


@dataclass(frozen=True)
class TableView:
    title: str
    columns: tuple[Column, ...]
    rows: list[dict[str, str | Text]]  # column name -> cell

    def fitted(self, console: Console, options: ConsoleOptions) -> Table:
        """The table with as many columns as the width holds uncut: rich would otherwise cut every column
        short, product ids included, where leaving out the model version keeps the rest readable."""
        shown = list(self.columns)
        while len(shown) > 1 and self._width(shown) > options.max_width:
            shown.remove(min(shown, key=lambda column: column.keep))
        table = Table(title=self.title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                      show_edge=False)
        for column in shown:
            table.add_column(column.name, no_wrap=not column.wraps, min_width=WRAPPED_WIDTH if column.wraps else None,
                             justify=column.justify)
        for row in self.rows:
            table.add_row(*(row[column.name] for column in shown))
        return table

    def _width(self, columns: list[Column]) -> int:
        """Cells needed to show `columns` uncut: their widest cell (wrapping ones at WRAPPED_WIDTH), one space
        of padding either side and one between columns."""
        def widest(column: Column) -> int:
            cells = [Text(column.name), *(Text(c) if isinstance(c, str) else c for c in
                                          (row[column.name] for row in self.rows))]
            width = max(cell.cell_len for cell in cells)
            return min(width, WRAPPED_WIDTH) if column.wraps else width

        return sum(widest(column) + 2 for column in columns) + len(columns) - 1


DECISION_COLUMNS = (Column("product", 9), Column("mkt", 5), Column("type", 8), Column("status", 7),
                    Column("reason", 2, wraps=True), Column("model", 1), Column("decided (UTC)", 3))
TRIGGER_COLUMNS = (Column("product", 9), Column("mkt", 5), Column("from → to", 8), Column("cause", 7),
                   Column("reason", 3, wraps=True), Column("triggered (UTC)", 2))
TEST_COLUMNS = (Column("product", 9), Column("mkt", 5), Column("test", 8), Column("ships in now", 4),
                Column("saves g/unit", 7, justify="right"), Column("requested (UTC)", 3))


class WatchView:
    """A snapshot of the view: the header and the rows of the three tables, taken once from the state (which
    may hold every product) and laid out for the terminal's width each time it is drawn."""

    def __init__(self, state: WatchState, limit: int = DEFAULT_LIMIT) -> None:
        self.header = header(state.summary())
        self.tables = (
            TableView("Latest decisions", DECISION_COLUMNS, [
                {"product": d.product_id, "mkt": d.marketplace, "type": d.package_type,
                 "status": Text(d.status, style="green" if d.status == "auto_certified" else "yellow"),
                 "reason": _truncate(d.reason), "model": d.model_version or "-", "decided (UTC)": _time(d.decided_at)}
                for d in state.latest_decisions(limit)]),
            TableView("Recent relabel triggers", TRIGGER_COLUMNS, [
                {"product": t.product_id, "mkt": t.marketplace, "from → to": f"{t.from_package_type} → "
                 f"{t.to_package_type}", "cause": t.cause, "reason": _truncate(t.reason),
                 "triggered (UTC)": _time(t.triggered_at)}
                for t in state.recent_triggers(limit)]),
            TableView("Open test requests, biggest saving first", TEST_COLUMNS, [
                {"product": r.product_id, "mkt": r.marketplace, "test": r.package_type,
                 "ships in now": r.current_package_type, "saves g/unit": f"{r.weight_saved_g:,.1f}",
                 "requested (UTC)": _time(r.requested_at)}
                for r in state.open_tests(limit)]),
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.header
        for table in self.tables:
            yield Text()
            yield table.fitted(console, options)


def render(state: WatchState, limit: int = DEFAULT_LIMIT) -> WatchView:
    """The whole view: the header line, then latest decisions, recent triggers and the test queue."""
    return WatchView(state, limit)


def render_text(state: WatchState, limit: int = DEFAULT_LIMIT, width: int = 160) -> str:
    """The view as plain text, e.g. for a log or a test."""
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(render(state, limit))
    return console.export_text()


def output_console() -> Console:
    """A console for standard output. A terminal gets its own width; a file or a pipe has none to fit, so
    rows are laid out whole (no column left out, no wrapped header) for whoever reads or greps them."""
    console = Console()
    return console if console.is_terminal else Console(width=PLAIN_WIDTH)


def event_line(state: WatchState, contract: Contract | str, key: str | None,
               record: Mapping[str, Any] | None) -> str | None:
    """One plain line for an event the filter admits, for a log or a pipe; `state` is the view before the
    event (a tombstone is shown when the product's last decision was)."""
    shown = state.filter.admits
    contract = Contract(contract)
    if record is None:
        last = state.decisions.get(key or "")
        if contract is Contract.DECISION and last is not None and shown(last.marketplace, (last.package_type,),
                                                                        last.status):
            return f"deleted {key} (left the catalog)"
        return None
    r = record
    if contract is Contract.DECISION and shown(r["marketplace"], (r["package_type"],), r["status"]):
        return (f"{r['decided_at']:%Y-%m-%d %H:%M:%S} decision {r['product_id']} {r['marketplace']} "
                f"{r['package_type']} {r['status']}: {r['reason']}")
    if contract is Contract.RELABEL and shown(r["marketplace"], (r["from_package_type"], r["to_package_type"])):
        return (f"{r['triggered_at']:%Y-%m-%d %H:%M:%S} relabel {r['product_id']} {r['marketplace']} "
                f"{r['from_package_type']} → {r['to_package_type']} {r['cause']}: {r['reason']}")
    if contract is Contract.TEST_REQUEST and shown(r["marketplace"], (r["package_type"], r["current_package_type"])):
        status = r.get("status", "open")
        if status != "open":
            return (f"{r.get('closed_at') or r['requested_at']:%Y-%m-%d %H:%M:%S} test {status} {r['product_id']} "
                    f"{r['marketplace']} {r['package_type']}: {r.get('reason') or ''}")
        return (f"{r['requested_at']:%Y-%m-%d %H:%M:%S} test {r['product_id']} {r['marketplace']} "
                f"{r['package_type']} (ships in {r['current_package_type']} now) "
                f"saves {r['weight_saved_g']:,.1f} g/unit")
    return None


# -- reading the topics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowOptions:
    # Decisions are compacted, so reading from the start loads the current state; the two other topics keep
    # 30 days, which is what the open test requests and the recent triggers are made of.
    live_only: bool = False  # start at the end: only what is published from now on
    once: bool = False  # stop when every partition has been read to its end
    duration_s: float | None = None  # stop after this long; None: until interrupted
    connect_timeout_s: float = 10.0
    until: Callable[[], bool] | None = None  # stop once this says so (the demo: when the simulation is done)


def _output_topics(settings: Settings) -> dict[str, Contract]:
    from streams.processor import TopicNames

    names = TopicNames.for_settings(settings)
    return {names.decisions: Contract.DECISION, names.relabels: Contract.RELABEL, names.tests: Contract.TEST_REQUEST}


def follow(settings: Settings, state: WatchState, options: FollowOptions = FollowOptions(),
           on_change: Callable[[WatchState], None] = lambda state: None,
           on_caught_up: Callable[[WatchState], None] = lambda state: None,
           on_event: Callable[[Contract, str | None, Mapping[str, Any] | None], None] | None = None) -> WatchState:
    """Read the three output topics into `state` until `options` say stop, calling `on_change` at most every
    REFRESH_S while events arrive, `on_caught_up` once every partition has been read to the end it had, and
    then `on_event` with each later event before it is applied. An unreachable broker or missing topics are
    a PackwiseError."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

    from streams.serde import Serde, SerdeError
    from streams.topics import admin_client, client_config, existing_partitions

    topics = _output_topics(settings)
    present = existing_partitions(admin_client(settings), settings, options.connect_timeout_s)
    missing = [name for name in topics if name not in present]
    if missing:
        raise PackwiseError(f"topics missing on {settings.bootstrap_servers}: {', '.join(missing)}; "
                            "create them with `packwise topics create`")
    serde = Serde.for_settings(settings)
    # Every partition is assigned at an explicit start offset: the group coordinator is never asked (no
    # membership, no rebalance, no committed offsets to fetch), so the unique group id only names this
    # reader. auto.offset.reset says where to resume should retention delete what a slow watcher is at.
    consumer = Consumer(client_config(settings, **{
        "group.id": f"packwise-watch-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
        "enable.auto.offset.store": False, "enable.partition.eof": True,
        "auto.offset.reset": "latest" if options.live_only else "earliest"}))
    start = OFFSET_END if options.live_only else OFFSET_BEGINNING
    partitions = [TopicPartition(name, p, start) for name in topics for p in range(present[name])]
    at_end: set[tuple[str, int]] = set()
    caught_up = False
    deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
    next_refresh, changed = 0.0, False
    try:
        consumer.assign(partitions)
        while deadline is None or time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add((message.topic(), message.partition()))
                    elif error.fatal():
                        raise PackwiseError(f"reading from Kafka at {settings.bootstrap_servers} failed: {error.str()}")
                    continue
                contract = topics[message.topic()]
                key = message.key().decode("utf-8", errors="replace") if message.key() is not None else None
                value = message.value()
                changed = True
                try:
                    record = None if value is None else serde.decode(contract.value, value)
                except SerdeError:
                    state.count_undecodable()  # a watcher reports a bad message and goes on
                    continue
                if caught_up and on_event is not None:
                    on_event(contract, key, record)
                state.apply(contract, key, record)
            if not caught_up and len(at_end) == len(partitions):
                caught_up = True
                on_caught_up(state)
            if changed and time.monotonic() >= next_refresh:
                began = time.monotonic()
                on_change(state)
                # A big view takes long to draw: space the refreshes so drawing never starves reading.
                next_refresh, changed = time.monotonic() + max(REFRESH_S, 4 * (time.monotonic() - began)), False
            if options.once and caught_up:
                break
            if options.until is not None and options.until():
                break
    finally:
        consumer.close()
    if changed:
        on_change(state)
    return state


# -- the command ----------------------------------------------------------------------------------------


def _comma_list(choices: Iterable[str] | None = None, upper: bool = False) -> Callable[[str], list[str]]:
    allowed = list(choices) if choices is not None else None

    def parse(text: str) -> list[str]:
        values = [v.strip().upper() if upper else v.strip() for v in text.split(",") if v.strip()]
        wrong = [v for v in values if allowed is not None and v not in allowed]
        if wrong or not values:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not valid: expected {', '.join(allowed or ['a value'])}, or a comma list of them")
        return values

    return parse


def _flatten(lists: list[list[str]] | None) -> frozenset[str]:
    return frozenset(v for values in lists or [] for v in values)


def watch_filter(args: argparse.Namespace, settings: Settings) -> WatchFilter:
    """The filter the command line asked for; an unknown marketplace is a PackwiseError naming the known ones."""
    from streams.marketplaces import load_marketplaces

    marketplaces = _flatten(args.marketplace)
    known = load_marketplaces(settings.marketplaces_file)
    unknown = sorted(marketplaces - set(known))
    if unknown:
        raise PackwiseError(f"--marketplace {', '.join(unknown)} is not a known marketplace; known: "
                            f"{', '.join(known)}")
    return WatchFilter(marketplaces, _flatten(args.package_type), _flatten(args.status))


def cmd_watch(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    state = WatchState(filter=watch_filter(args, settings))
    options = FollowOptions(live_only=args.live_only, once=args.once, duration_s=args.duration)
    console = output_console()
    try:
        if args.once:
            follow(settings, state, options)
            console.print(render(state, args.limit))
            return 0
        if not console.is_terminal:  # a log or a pipe: the view once, then a plain line per event
            def log(contract: Contract, key: str | None, record: Mapping[str, Any] | None) -> None:
                line = event_line(state, contract, key, record)
                if line is not None:
                    print(line, flush=True)

            follow(settings, state, options, on_caught_up=lambda s: console.print(render(s, args.limit)),
                   on_event=log)
            return 0
        with Live(render(state, args.limit), console=console, refresh_per_second=4) as live:
            follow(settings, state, options, on_change=lambda s: live.update(render(s, args.limit)))
    except KeyboardInterrupt:  # Ctrl-C is how a live view ends
        pass
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: expected an integer >= 1")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: expected a number of seconds > 0")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `packwise watch` on the main CLI's subcommands."""
    watch = subparsers.add_parser(
        "watch", help="live table of decisions, relabel triggers and test requests as they are published",
        description="A live view of the output topics: the current state first (decisions are compacted, so "
                    "reading them from the start gives the latest decision of every product; open test requests "
                    "and recent triggers come from the 30 days the other two topics keep), then what is "
                    "published. Into a file or a pipe: the view once, then one plain line per new event. "
                    "Filters match each event on the fields it has; --status applies to decisions only.")
    watch.add_argument("--marketplace", action="append", type=_comma_list(upper=True), metavar="CODE",
                       help="only these marketplaces, e.g. EU or NA,JP (repeatable)")
    watch.add_argument("--package-type", action="append", type=_comma_list(p.value for p in PACK_TYPES),
                       metavar="TYPE", help=f"only these package types: {', '.join(p.value for p in PACK_TYPES)}")
    watch.add_argument("--status", action="append", type=_comma_list(STATUSES), metavar="STATUS",
                       help=f"only decisions with this status: {', '.join(STATUSES)}")
    watch.add_argument("--limit", type=_positive_int, default=DEFAULT_LIMIT, metavar="N", help="rows per table")
    watch.add_argument("--live-only", action="store_true",
                       help="skip the current state: show only what is published from now on")
    # What --from-beginning asked for is the default now; the flag stays accepted so scripts keep running.
    watch.add_argument("--from-beginning", action="store_true", help=argparse.SUPPRESS)
    watch.add_argument("--once", action="store_true",
                       help="read up to the end of every topic, print the view once and exit")
    watch.add_argument("--duration", type=_positive_float, metavar="SECONDS",
                       help="exit after this long (default: run until Ctrl-C)")
    watch.set_defaults(handler=cmd_watch)
    return watch
