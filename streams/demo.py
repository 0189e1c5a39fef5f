"""`packwise demo`: the whole system on one machine, end to end.

It starts the local broker unless one answers, creates a fresh set of topics for this run, trains a
small bundle once (kept under the state folder for later runs), starts a worker process, runs the
simulated fulfillment center while the live view shows decisions streaming out, then prints a summary
and stops the worker (and the broker, if the demo started it) by pid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table

from models.dataset import DEFAULT_WINDOW_DAYS
from models.packtypes import PACK_TYPES, PackType
from streams.errors import PackwiseError
from streams.marketplaces import Marketplace, load_marketplaces, targets_of
from streams.settings import Settings
from streams.workers import WorkerProcess, settings_env


@dataclass(frozen=True)
class CertifiedOutcome:
    """Shipments made while the product's decision was auto-certified in the type shipped, and their damage:
    what the promise (damage among auto-certified products within the target) is about."""

    shipments: int
    reported: int  # damage reports the worker received for them
    damaged: int | None  # damaged units, reported or not (the simulator's truth); None when not known


@dataclass(frozen=True)
class DemoSummary:
    products: int
    decided: int
    by_type: dict[PackType, tuple[int, int]]  # decided, auto-certified
    weight_g: float  # packaging of one unit of every decided product, as decided
    box_weight_g: float  # the same products, each in its smallest fitting box
    certified: dict[tuple[str, PackType], CertifiedOutcome]  # per marketplace and package type
    certified_unsabotaged: dict[tuple[str, PackType], CertifiedOutcome]  # the same, the sabotaged products left out
    triggers: Mapping[str, int]
    open_tests: int
    grams_saved: float  # per unit, if every open test passed
    lab_results: tuple[int, int] = (0, 0)  # tests the simulated lab ran: passed, failed
    audited: int = 0  # products whose latest decision is an audit (chosen_by audit)

    @property
    def weight_saved_share(self) -> float:
        return 1.0 - self.weight_g / self.box_weight_g if self.box_weight_g else 0.0


def certified_outcomes(decisions: list[Mapping[str, Any]], shipments: list[Mapping[str, Any]],
                       reports: list[Mapping[str, Any]], truth_log: list[tuple[int, str, PackType, bool]] | None = None,
                       leave_out: Collection[str] = ()) -> dict[tuple[str, PackType], CertifiedOutcome]:
    """Per marketplace and package type, the shipments made under an auto-certified decision in their type, with
    their damage reports and, when the simulator's log lines up with the shipments topic, every damaged unit.

    A shipment was made under the latest decision in its type decided before it: the warehouse may still ship
    in the old type for a moment after a decision moved a product, and that shipment was made under the old
    certification. Events sent twice (same event id) count once. All lists are in topic order. The products in
    `leave_out` are not counted."""
    history: dict[str, list[tuple[Any, str, str]]] = defaultdict(list)
    for d in decisions:
        history[d["product_id"]].append((d["decided_at"], d["package_type"], d["status"]))
    left_out = set(leave_out)
    unique: dict[str, Mapping[str, Any]] = {s["event_id"]: s for s in shipments if s["product_id"] not in left_out}
    if truth_log is not None:
        truth_log = [entry for entry in truth_log if entry[1] not in left_out]
    by_product: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for s in unique.values():
        by_product[s["product_id"]].append(s)
    damaged = _damaged_per_shipment(by_product, truth_log)
    counted: dict[str, tuple[str, PackType]] = {}  # shipment id -> marketplace and type it counts under
    totals: dict[tuple[str, PackType], list[int]] = defaultdict(lambda: [0, 0, 0])
    for product, product_shipments in by_product.items():
        for s in product_shipments:
            under = [status for decided_at, pack, status in history[product]
                     if decided_at <= s["shipped_at"] and pack == s["package_type"]]
            if under and under[-1] == "auto_certified":
                key = (s["marketplace"], PackType(s["package_type"]))
                counted[s["shipment_id"]] = key
                totals[key][0] += 1
                totals[key][2] += bool(damaged and damaged[s["event_id"]])
    for r in {r["event_id"]: r for r in reports}.values():
        if r["shipment_id"] in counted:
            totals[counted[r["shipment_id"]]][1] += 1
    return {key: CertifiedOutcome(n, reported, all_damaged if damaged is not None else None)
            for key, (n, reported, all_damaged) in totals.items()}


def _damaged_per_shipment(by_product: Mapping[str, list[Mapping[str, Any]]],
                          truth_log: list[tuple[int, str, PackType, bool]] | None) -> dict[str, bool] | None:
    """Whether each shipment (by event id) damaged its unit, from the simulator's log: it lists each product's
    shipments in the order they were sent, as the product's partition holds them. None unless every product's
    shipments and log entries line up one to one, package types included."""
    if truth_log is None:
        return None
    logged: dict[str, list[tuple[PackType, bool]]] = defaultdict(list)
    for _, product, pack, was_damaged in truth_log:
        logged[product].append((pack, was_damaged))
    if set(logged) != set(by_product):
        return None
    damaged: dict[str, bool] = {}
    for product, product_shipments in by_product.items():
        entries = logged[product]
        if len(entries) != len(product_shipments) or any(
                pack.value != s["package_type"] for (pack, _), s in zip(entries, product_shipments)):
            return None
        damaged.update((s["event_id"], was_damaged) for (_, was_damaged), s in zip(entries, product_shipments))
    return damaged


def summarize(products: Mapping[str, Any], certified: dict[tuple[str, PackType], CertifiedOutcome],
              certified_unsabotaged: dict[tuple[str, PackType], CertifiedOutcome], triggers: list[dict],
              open_tests: int, grams_saved: float, marketplaces: Mapping[str, Marketplace], default_marketplace: str,
              expected: int) -> DemoSummary:
    """What the run achieved, from the worker's products table, the outputs it published and the shipments."""
    by_type = {pack: [0, 0] for pack in PACK_TYPES}
    weight = box_weight = 0.0
    for state in products.values():
        decision = state.get("decision")
        if not decision:
            continue
        pack = PackType(decision["package_type"])
        by_type[pack][0] += 1
        by_type[pack][1] += decision["status"] == "auto_certified"
        market = marketplaces.get(state.get("marketplace", ""), marketplaces[default_marketplace])
        item_mm = tuple(state.get("item_mm") or (0.0, 0.0, 0.0))
        weight += market.packaging_weight_g(pack, item_mm)
        box_weight += market.packaging_weight_g(PackType.BOX, item_mm)
    decided = sum(n for n, _ in by_type.values())
    return DemoSummary(expected, decided, {p: (n, a) for p, (n, a) in by_type.items()}, weight, box_weight,
                       certified, certified_unsabotaged, Counter(t["cause"] for t in triggers), open_tests, grams_saved)


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def summary_table(summary: DemoSummary) -> Table:
    table = Table(title="Decisions per package type", title_justify="left", caption_justify="left")
    for column in ("package type", "products", "share", "auto-certified"):
        table.add_column(column, justify="left" if column == "package type" else "right")
    for pack in PACK_TYPES:
        decided, certified = summary.by_type[pack]
        table.add_row(pack.value, str(decided), f"{decided / max(summary.decided, 1):.0%}",
                      f"{certified / decided:.0%}" if decided else "-")
    causes = ", ".join(f"{cause} {n}" for cause, n in sorted(summary.triggers.items())) or "none"
    table.caption = f"relabel triggers fired: {causes}"
    return table


def certified_damage_table(summary: DemoSummary, marketplaces: Mapping[str, Marketplace]) -> Table:
    """Damage on the shipments made under an auto-certified decision, per marketplace and type, beside the
    marketplace's target: the README's promise, read from the run."""
    table = Table(title="Damage on shipments made while the product was auto-certified in the type shipped",
                  title_justify="left")
    for column in ("marketplace", "package type", "shipments", "damage reports", "damaged (all)", "damage rate",
                   "without the sabotaged", "target"):
        table.add_column(column, justify="left" if column in ("marketplace", "package type") else "right")

    def rate(outcome: CertifiedOutcome | None) -> str:
        if outcome is None or outcome.damaged is None:
            return "-"
        return f"{outcome.damaged / outcome.shipments:.2%}"

    order = {code: i for i, code in enumerate(marketplaces)}
    for code, pack in sorted(summary.certified, key=lambda key: (order.get(key[0], len(order)), key[0], key[1].index)):
        outcome, honest = summary.certified[code, pack], summary.certified_unsabotaged.get((code, pack))
        target = marketplaces[code].target_damage_rate if code in marketplaces else None
        table.add_row(code, pack.value, f"{outcome.shipments:,}", f"{outcome.reported:,}",
                      "-" if outcome.damaged is None else f"{outcome.damaged:,}", rate(outcome),
                      "-" if honest is None else f"{rate(honest)} of {honest.shipments:,}",
                      "-" if target is None else f"{target:.2%}")
    return table


def print_summary(console: Console, summary: DemoSummary, marketplaces: Mapping[str, Marketplace]) -> None:
    console.print()  # the live view above ends in a table row: keep the summary off it
    console.print(f"[bold]packwise demo[/]: {summary.decided:,} of {summary.products:,} products decided; packaging "
                  f"weight saved against shipping all in boxes: {summary.weight_saved_share:.1%}\n")
    console.print(summary_table(summary))
    console.print()
    console.print(certified_damage_table(summary, marketplaces))
    console.print("damaged (all): reported or not, as the simulator knows (reports come late or never). The target "
                  "bounds the long-run rate, so over a few hundred shipments one damage moves the rate a lot. The "
                  "sabotaged products break in light packaging although nothing in their text or images says so: "
                  "they count in the damage rate until their damage moves them to a box, and are left out of the "
                  "column beside it, which is the rate the model's certification promises.")
    has = "has" if summary.open_tests == 1 else "have"
    console.print(f"\n{summary.open_tests:,} of {_plural(summary.decided, 'decided product')} {has} a test request "
                  "open: a decision is the lightest type the evidence certifies now, and when a lighter type is not "
                  "ruled out by the data and the model finds it promising, the policy also asks a person to test it "
                  f"(a pass moves the product there). If every open test passed, {summary.grams_saved:,.0f} g per "
                  "unit would be saved.")
    passed, failed = summary.lab_results
    if passed or failed:
        console.print(f"The simulated lab answered {_plural(passed + failed, 'test request')}, the biggest savings "
                      f"first: {passed:,} passed (the product ships in the tested type, reason test_passed, unless "
                      f"its shipments refute it), {failed:,} failed (that type and every lighter one are ruled out, "
                      "test_failed).")
    if summary.audited:
        console.print(f"{_plural(summary.audited, 'product')} ship as an audit (chosen_by audit): drawn at random, "
                      f"{DEMO_AUDIT_SHARE:.0%} of those a lighter type could serve per marketplace, never by the "
                      "model's score, one type lighter than the evidence certifies, until data certify or refute it. "
                      "Their outcomes are the unbiased evidence a later model may certify on (models/REPORT.md).")


LAB_TESTS_PER_ROUND = 10  # test requests the demo's simulated lab answers per shipping round
DEMO_AUDIT_SHARE = 0.05  # of the eligible products per marketplace, when no PACKWISE_MARKETPLACES_FILE is given
DEMO_APP_PREFIX = "packwise-demo-"  # + the run's time: the worker's group, changelog topics and state folder
DEMO_TOPIC_PREFIX = "demo-"  # + the run's time and a dot: the run's own input and output topics
DEMO_LOG_PREFIX = "demo-worker-"  # + the run's time: the worker's log in the state folder
_RUN = r"\d{8}-\d{6}"
_DEMO_TOPIC = re.compile(rf"^({re.escape(DEMO_TOPIC_PREFIX)}{_RUN}\.|{re.escape(DEMO_APP_PREFIX)}{_RUN}-)")


def demo_settings(settings: Settings, run: str) -> Settings:
    """A run's own topics, consumer group and worker state, named after `run` (its start time, YYYYmmdd-HHMMSS)."""
    return settings.replace(app_id=f"{DEMO_APP_PREFIX}{run}", topic_prefix=f"{DEMO_TOPIC_PREFIX}{run}.",
                            worker_name="demo-0")


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def clean_demos(settings: Settings, delete: bool) -> int:
    """`packwise clean`: list what earlier demos left (their topics on the broker, their workers' state folders
    and logs under the state folder, the datasets their warm-ups were landed in), and delete it when `delete`.
    Trained demo models are kept: the next demo reuses them."""
    from streams.topics import admin_client, existing_partitions

    admin, unreachable = admin_client(settings), None
    try:
        topics = sorted(t for t in existing_partitions(admin, settings, timeout_s=10.0) if _DEMO_TOPIC.match(t))
    except PackwiseError as error:
        topics, unreachable = [], str(error)
    state = Path(settings.state_dir)
    paths = (sorted((state / "workers").glob(f"{DEMO_APP_PREFIX}*")) + sorted(state.glob(f"{DEMO_LOG_PREFIX}*.log"))
             + sorted((state / "models").glob("demo-history-*-dataset")))  # the model trained on it stays
    megabytes = sum(_size_mb(p) for p in paths)
    if unreachable:
        print(f"{unreachable}; the demos' topics there, if any, stay until it answers")
    if not topics and not paths:
        print(f"nothing to clean: no demo topics on {settings.bootstrap_servers}, no demo state in {state}")
        return 0
    print(f"left by earlier demos, on Kafka at {settings.bootstrap_servers} and in {state}:")
    for topic in topics:
        print(f"  topic {topic}")
    for path in paths:
        print(f"  {'folder' if path.is_dir() else 'file'} {path} ({_size_mb(path):.1f} MB)")
    what = f"{len(topics)} topics and {len(paths)} local folders and files ({megabytes:.1f} MB)"
    if not delete:
        print(f"dry run: {what} would be deleted (trained demo models in {state / 'models'} are kept). Stop any "
              "running demo first, then run `packwise clean --yes` to delete them.")
        return 0
    if topics:
        for topic, done in admin.delete_topics(topics, operation_timeout=30).items():
            try:
                done.result(timeout=60)
            except Exception as error:  # one topic deleted meanwhile, or refused: say which and go on
                print(f"could not delete topic {topic}: {error}", file=sys.stderr)
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    print(f"deleted {what}")
    return 0


WARMUP_WINDOW_DAYS = DEFAULT_WINDOW_DAYS  # the demo dataset's attribution window (`packwise dataset build`'s)


@dataclass(frozen=True)
class DemoModel:
    path: Path
    warmed_up: bool  # the warm-up history was streamed into this run's topics (the worker starts after it)


def demo_bundle(settings: Settings, products: int, epochs: int) -> DemoModel:
    """The demo's model, trained from the network's own history: a warm-up period of the simulated center is
    streamed into the run's input topics, landed and tabled by `packwise dataset build`, and learned from by
    `packwise train --data` (streams/warmup.py). Trained once into the state folder, reloaded on later runs, which
    then skip the warm-up."""
    from models.bundle import BundleError, load_bundle

    path = Path(settings.state_dir) / "models" / f"demo-history-{products}-{epochs}"
    targets = targets_of(load_marketplaces(settings.marketplaces_file))
    try:
        missing = sorted(set(targets) - set(load_bundle(path).targets))
        if not missing:
            print(f"model: reusing the demo model trained earlier from a warm-up history, in {path} (delete that "
                  "folder to stream a warm-up and train again)", flush=True)
            return DemoModel(path, warmed_up=False)
        # e.g. one trained before per-marketplace certification: it would certify nothing in those marketplaces
        print(f"model: the demo model in {path} is not certified at {', '.join(f'{t:.2%}' for t in missing)}, a "
              "target of the marketplaces in force; training it again", flush=True)
    except BundleError:
        pass
    if path.exists():
        shutil.rmtree(path)
    data = path.with_name(path.name + "-dataset")
    if data.exists():
        shutil.rmtree(data)
    share = warm_up(settings, products)
    env = {**os.environ, **settings_env(settings)}
    print(f"warm-up: `packwise dataset build --out {data}` lands the topics and builds the training table ...",
          flush=True)
    if subprocess.run([sys.executable, "-m", "streams.cli", "dataset", "build", "--out", str(data),
                       "--window-days", str(WARMUP_WINDOW_DAYS)], env=env).returncode != 0:
        raise PackwiseError("building the demo's dataset from the warm-up history failed; see the lines above")
    print(f"training the demo model on that table (once; kept in {path}): `packwise train --data {data} "
          f"--report-share {share:.2f}` ...", flush=True)
    result = subprocess.run([sys.executable, "-m", "streams.cli", "train", "--data", str(data), "--out", str(path),
                             "--epochs", str(epochs), "--seed", "1", "--targets", ",".join(repr(t) for t in targets),
                             "--report-share", f"{share:.4f}"], stdout=subprocess.DEVNULL, env=env)
    if result.returncode != 0:
        raise PackwiseError(f"training the demo model failed (exit {result.returncode}); see the lines above")
    return DemoModel(path, warmed_up=True)


def warm_up(settings: Settings, products: int) -> float:
    """Stream a warm-up period's history of `products` products into the run's topics; returns the share of
    damages the simulated customers report within the dataset's attribution window (`--report-share`)."""
    from models.world import World, WorldConfig
    from streams.warmup import HistoryConfig, history_events, printer, report_share, stream_history

    config = HistoryConfig()
    world = World.generate(WorldConfig(seed=config.seed, n_products=products))
    now = datetime.now(timezone.utc)
    print(f"warm-up: the simulated center's last {config.days:.0f} days before packwise, {products:,} products shipped "
          "in package types drawn at random (a legacy policy) ...", flush=True)
    events = history_events(world, config, end=now, reports_until=now, progress=printer("warm-up: simulating"))
    written = stream_history(settings, events, progress=printer("warm-up: writing to Kafka"))
    counts = ", ".join(f"{len(records):,} {base}" for base, records in events.items())
    print(f"warm-up: {written:,} events written to the run's topics ({counts})", flush=True)
    share = report_share(world.config, WARMUP_WINDOW_DAYS)
    print(f"warm-up: the simulated customers report {world.config.report_rate:.0%} of damages, {share:.0%} within "
          f"the {WARMUP_WINDOW_DAYS:g}-day attribution window: the model certifies on reported damage at target x "
          f"{share:.2f}", flush=True)
    return share


def run_demo(settings: Settings, products: int, rounds: int, train_products: int, epochs: int,
             keep_broker: bool) -> int:
    from streams.broker import port_in_use
    from streams.cli import local_broker
    from streams.inspect import read_table, read_topic
    from streams.processor import TopicNames
    from streams.simulator import SimulationConfig, run_simulation
    from streams.topics import create_topics
    from streams.watch import FollowOptions, WatchState, follow, output_console, render

    console = output_console()
    settings = demo_settings(settings, time.strftime("%Y%m%d-%H%M%S"))
    broker, started_broker = local_broker(settings), False
    host, _, port = settings.bootstrap_servers.partition(",")[0].rpartition(":")
    if not port_in_use(int(port), host or "127.0.0.1"):
        status, started_broker = broker.start()
        console.print(f"[bold]broker[/]: {status.describe()}")
    worker = None
    try:
        report = create_topics(settings)
        console.print(f"[bold]topics[/]: {len(report.created)} created with prefix {settings.topic_prefix}")
        model = demo_bundle(settings, train_products, epochs)
        settings = settings.replace(model_path=str(model.path))
        if not settings.marketplaces_file:  # audits on: the demo shows how unbiased evidence is gathered
            audits = settings.worker_dir.parent / "marketplaces.json"  # `packwise clean` deletes it with the run
            audits.parent.mkdir(parents=True, exist_ok=True)
            audits.write_text(json.dumps({code: {"audit_share": DEMO_AUDIT_SHARE}
                                          for code in load_marketplaces(None)}), encoding="utf-8")
            settings = settings.replace(marketplaces_file=str(audits))
        if model.warmed_up:  # the worker goes live at the end of the history: it decides the products arriving now
            from streams.warmup import start_group_at_end

            names = TopicNames.for_settings(settings)
            start_group_at_end(settings, [names.catalog, names.captures, names.shipments, names.damage_reports])
        log_path = Path(settings.state_dir) / f"{DEMO_LOG_PREFIX}{settings.app_id.removeprefix(DEMO_APP_PREFIX)}.log"
        console.print(f"[bold]worker[/]: starting (log {log_path}) ...")
        worker = WorkerProcess(settings, log_path)
        worker.start()
        config = SimulationConfig(products=products, rounds=rounds, seed=7, duplicate_rate=0.01, sabotaged=products // 20,
                                  lab_tests_per_round=LAB_TESTS_PER_ROUND)
        outcome: list = []
        failure: list[BaseException] = []

        def simulate() -> None:
            try:
                outcome.append(run_simulation(settings, config))
            except BaseException as error:  # reported in the main thread
                failure.append(error)

        simulation = threading.Thread(target=simulate, name="simulator", daemon=True)
        simulation.start()
        state = WatchState()
        options = FollowOptions(until=lambda: not simulation.is_alive())
        with Live(render(state), console=console, refresh_per_second=4) as live:
            follow(settings, state, options, on_change=lambda s: live.update(render(s)))
        if failure:
            raise failure[0]
        time.sleep(3.0)  # let the worker apply the last reports
        names = TopicNames.for_settings(settings)
        live = {p.product_id for p in outcome[0].products}  # not the warm-up's: their history was before packwise

        def of_live(records: list[dict]) -> list[dict]:
            return [r for r in records if r["product_id"] in live]

        history = (of_live(read_topic(settings, names.decisions, "pack_type_decision")),
                   of_live(read_topic(settings, names.shipments, "shipment")),
                   of_live(read_topic(settings, names.damage_reports, "damage_report")), outcome[0].truth.log)
        certified = certified_outcomes(*history), certified_outcomes(*history, leave_out=outcome[0].sabotaged)
        # Read the outputs again to their end: the decisions of the last reports came after the live view stopped.
        # (The demo's decisions topic is younger than a segment, so compaction has not removed any history yet.)
        tests = follow(settings, WatchState(), FollowOptions(once=True)).summary()
        marketplaces = load_marketplaces(settings.marketplaces_file)
        products_table = read_table(settings, "products")
        summary = summarize(products_table, *certified,
                            read_topic(settings, names.relabels, "relabel_trigger"), tests.open_tests,
                            tests.grams_saved, marketplaces, settings.default_marketplace, products)
        passed = sum(ok for _, _, ok in outcome[0].test_results)
        audited = sum(1 for state in products_table.values()
                      if (state.get("decision") or {}).get("chosen_by") == "audit")
        summary = dataclasses.replace(summary, lab_results=(passed, len(outcome[0].test_results) - passed),
                                      audited=audited)
        print_summary(console, summary, marketplaces)
        if keep_broker or not started_broker:  # the run's topics stay readable: point at the web console
            console.print(f"\nBrowse this run in the ops console: PACKWISE_TOPIC_PREFIX={settings.topic_prefix} "
                          f"PACKWISE_APP_ID={settings.app_id} .venv/bin/packwise console")
        return 0
    finally:
        if worker is not None:
            worker.stop()
        if started_broker and not keep_broker:
            broker.stop()
