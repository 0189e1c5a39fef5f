"""`packwise demo`: the whole system on one machine, end to end.

It starts the local broker unless one answers, creates a fresh set of topics for this run, trains a
small bundle once (kept under the state folder for later runs), starts a worker process, runs the
simulated fulfillment center while the live view shows decisions streaming out, then prints a summary
and stops the worker (and the broker, if the demo started it) by pid.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table

from models.packtypes import PACK_TYPES, PackType
from streams.errors import PackwiseError
from streams.marketplaces import Marketplace, load_marketplaces
from streams.settings import Settings
from streams.workers import WorkerProcess


@dataclass(frozen=True)
class DemoSummary:
    products: int
    decided: int
    by_type: dict[PackType, tuple[int, int]]  # decided, auto-certified
    weight_g: float  # packaging of one unit of every decided product, as decided
    box_weight_g: float  # the same products, each in its smallest fitting box
    shipments: list[int]  # per package type, as counted by the worker
    damages: list[int]
    triggers: Counter

    @property
    def weight_saved_share(self) -> float:
        return 1.0 - self.weight_g / self.box_weight_g if self.box_weight_g else 0.0


def summarize(products: Mapping[str, Any], damage_stats: Mapping[str, Any], triggers: list[dict],
              marketplaces: Mapping[str, Marketplace], default_marketplace: str, expected: int) -> DemoSummary:
    """What the run achieved, from the worker's own tables and the relabel triggers it published."""
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
    shipments = [sum(s["shipments"][i] for s in damage_stats.values()) for i in range(len(PACK_TYPES))]
    damages = [sum(s["damages"][i] for s in damage_stats.values()) for i in range(len(PACK_TYPES))]
    decided = sum(n for n, _ in by_type.values())
    return DemoSummary(expected, decided, {p: (n, a) for p, (n, a) in by_type.items()}, weight, box_weight,
                       shipments, damages, Counter(t["cause"] for t in triggers))


def summary_table(summary: DemoSummary) -> Table:
    table = Table(title=f"packwise demo: {summary.decided} of {summary.products} products decided; packaging "
                        f"weight saved against all-box: {summary.weight_saved_share:.1%}")
    for column in ("package type", "products", "share", "auto-certified", "shipments", "damage reports",
                   "observed damage rate"):
        table.add_column(column, justify="left" if column == "package type" else "right")
    for pack in PACK_TYPES:
        decided, certified = summary.by_type[pack]
        shipped, damaged = summary.shipments[pack.index], summary.damages[pack.index]
        table.add_row(pack.value, str(decided), f"{decided / max(summary.decided, 1):.0%}",
                      f"{certified / decided:.0%}" if decided else "-", str(shipped), str(damaged),
                      f"{damaged / shipped:.2%}" if shipped else "-")
    causes = ", ".join(f"{cause} {n}" for cause, n in sorted(summary.triggers.items())) or "none"
    table.caption = f"relabel triggers fired: {causes}"
    return table


def demo_bundle(settings: Settings, products: int, epochs: int) -> Path:
    """The demo's model: trained once into the state folder, reloaded on later runs."""
    from models.bundle import BundleError, load_bundle

    path = Path(settings.state_dir) / "models" / f"demo-{products}-{epochs}"
    try:
        load_bundle(path)
        return path
    except BundleError:
        pass
    if path.exists():
        import shutil

        shutil.rmtree(path)
    print(f"training the demo model on {products} synthetic products (once; kept in {path}) ...", flush=True)
    result = subprocess.run([sys.executable, "-m", "streams.cli", "train", "--out", str(path), "--products",
                             str(products), "--epochs", str(epochs), "--seed", "1"], stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise PackwiseError(f"training the demo model failed (exit {result.returncode}); see the lines above")
    return path


def run_demo(settings: Settings, products: int, rounds: int, train_products: int, epochs: int,
             keep_broker: bool) -> int:
    from streams.broker import port_in_use
    from streams.cli import local_broker
    from streams.inspect import read_table, read_topic
    from streams.simulator import SimulationConfig, run_simulation
    from streams.topics import create_topics
    from streams.watch import FollowOptions, WatchState, follow, render

    console = Console()
    run = time.strftime("%Y%m%d-%H%M%S")
    settings = settings.replace(app_id=f"packwise-demo-{run}", topic_prefix=f"demo-{run}.", worker_name="demo-0")
    broker, started_broker = local_broker(settings), False
    host, _, port = settings.bootstrap_servers.partition(",")[0].rpartition(":")
    if not port_in_use(int(port), host or "127.0.0.1"):
        status, started_broker = broker.start()
        console.print(f"[bold]broker[/]: {status.describe()}")
    worker = None
    try:
        report = create_topics(settings)
        console.print(f"[bold]topics[/]: {len(report.created)} created with prefix {settings.topic_prefix}")
        settings = settings.replace(model_path=str(demo_bundle(settings, train_products, epochs)))
        log_path = Path(settings.state_dir) / f"demo-worker-{run}.log"
        console.print(f"[bold]worker[/]: starting (log {log_path}) ...")
        worker = WorkerProcess(settings, log_path)
        worker.start()
        config = SimulationConfig(products=products, rounds=rounds, seed=7, duplicate_rate=0.01, sabotaged=products // 20)
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
        options = FollowOptions(from_beginning=True, until=lambda: not simulation.is_alive())
        with Live(render(state), console=console, refresh_per_second=4) as live:
            follow(settings, state, options, on_change=lambda s: live.update(render(s)))
        if failure:
            raise failure[0]
        time.sleep(3.0)  # let the worker apply the last reports
        summary = summarize(read_table(settings, "products"), read_table(settings, "damage_stats"),
                            read_topic(settings, settings.topic_prefix + "relabel-triggers", "relabel_trigger"),
                            load_marketplaces(settings.marketplaces_file), settings.default_marketplace, products)
        console.print(summary_table(summary))
        return 0
    finally:
        if worker is not None:
            worker.stop()
        if started_broker and not keep_broker:
            broker.stop()
