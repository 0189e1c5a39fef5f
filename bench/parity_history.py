"""Parity (issue 11): a model trained from the topics of a simulated history against the in-memory world path, on
the same products, measured on the same fresh world.

    .venv/bin/python bench/parity_history.py                          # 8,000 products, seed 0, 3 epochs
    .venv/bin/python bench/parity_history.py --products 1500 --epochs 1 --seeds 0   # a quick run

Per seed S:

1. the world of `packwise train --products N --seed S` (WorldConfig(seed=S, n_products=N)) is given a shipment
   history as a network would have it in Kafka (tests/models/simulated_history.py `simulated_events`: per product a
   catalog record and a tunnel capture on its arrival day, shipments in uniformly drawn package types, damages from
   the hidden truth, reported or not as the world says), encoded with the worker's Serde and produced to a real
   local broker (started on free 127.0.0.1 ports, stopped by pid), then landed and built as `packwise dataset
   build` does (streams/landing.py land(), models/dataset.py table_from_landed(), as of 30 days after the last
   shipment, so every shipment has a label);
2. two bundles are trained with the same network, epochs and seed: `packwise train --products N --seed S` (the
   world path) and `packwise train --data DIR --seed S` (the history path);
3. both are measured on the same fresh world as `packwise evaluate --bundle B` measures (seed 1000, 3,000 products:
   the same functions, each product certified at its marketplace's target), against the true damage probabilities:
   PR-AUC per type, the share certified and the weight saved, with a paired bootstrap over the evaluation products
   (the standard error of each figure and of the difference).

Two checks reuse what a run left in --work: `--markets-only` tables each bundle's certification per marketplace on
the fresh world (models/evaluate.py marketplace_certification, as `packwise evaluate` writes it), and
`--window-only` runs `packwise evaluate --data` on the history's own later window (the first seed's dataset, built
again from the same landed files as of --train-day to train a history bundle on, and evaluated as of its end).

The figures, the command and the machine are appended to bench/RESULTS-parity.md; the raw figures to
--work/parity.json (and window.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS = ROOT / "bench" / "RESULTS-parity.md"
PACKWISE = str(Path(sys.executable).parent / "packwise")
TYPES = ("sioc", "poly_bag", "padded_mailer", "box")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- 1. the history, through Kafka ------------------------------------------------------------------------


def messages(events: dict[str, list[dict]]):
    """(topic base, key, Avro value) of every event, encoded as a producer of the network would."""
    from streams.landing import LANDED
    from streams.serde import Serde

    serde = Serde()
    for base, records in events.items():
        for record in records:
            yield base, record["product_id"], serde.encode(LANDED[base], record)


def land_history(seed: int, products: int, shipments_per_product: float, folder: Path, scratch: Path) -> dict:
    """The simulated history of world (seed, products) produced to a local broker, landed and built into a
    dataset in `folder`; returns the card and timings."""
    from bench_dataset import produce
    from bench_worker import Cluster

    from models.dataset import TableConfig, table_from_landed
    from models.world import EPOCH, World, WorldConfig
    from streams.landing import land
    from streams.settings import Settings
    from tests.models.simulated_history import HISTORY_DAYS, WINDOW_DAYS, simulated_events

    times = {}
    started = time.perf_counter()
    world = World.generate(WorldConfig(seed=seed, n_products=products))
    events = simulated_events(world, shipments_per_product, seed)
    times["simulate_s"] = time.perf_counter() - started
    counts = {base: len(records) for base, records in events.items()}
    log(f"simulated {counts} in {times['simulate_s']:.0f} s")
    cluster = Cluster.start(scratch / "kafka", secure=False)
    try:
        settings = Settings(bootstrap_servers=cluster.broker.bootstrap, topic_prefix=f"p{uuid.uuid4().hex[:6]}.",
                            partitions=6)
        cluster.create_topics(settings)
        started = time.perf_counter()
        produced = produce(settings, messages(events))
        times["produce_s"] = time.perf_counter() - started
        log(f"produced {produced:,} events in {times['produce_s']:.0f} s")
        del events
        started = time.perf_counter()
        report = land(settings, folder, show_progress=False)
        times["land_s"] = time.perf_counter() - started
        log(f"landed {dict(report.landed)} in {times['land_s']:.0f} s, dead letters {dict(report.dead_letters)}")
    finally:
        cluster.broker.stop()
    started = time.perf_counter()
    card = table_from_landed(folder, TableConfig(window=timedelta(days=WINDOW_DAYS),
                                                 as_of=EPOCH + timedelta(days=HISTORY_DAYS + WINDOW_DAYS)))
    times["table_s"] = time.perf_counter() - started
    log(f"table: {card['rows']:,} rows, {card['positives']:,} damaged in {times['table_s']:.0f} s")
    return {"card": card, "times": times, "produced": produced, "landed": dict(report.landed),
            "dead_letters": sum(report.dead_letters.values()), "as_of": (EPOCH + timedelta(
                days=HISTORY_DAYS + WINDOW_DAYS)).date().isoformat()}


# -- 2. the two bundles ------------------------------------------------------------------------------------


def train(args: list[str]) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([PACKWISE, "train", *args], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


# -- 3. the same fresh world ---------------------------------------------------------------------------------


def scores(bundle_dir: Path, world) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and per-product thresholds, as `packwise evaluate --bundle` (models/cli.py _evaluate) takes
    them: each product at its own marketplace's target."""
    from models.bundle import load_bundle
    from models.train import world_features
    from streams.marketplaces import load_marketplaces
    from streams.settings import Settings

    bundle = load_bundle(bundle_dir)
    settings = Settings.from_env()
    marketplaces = load_marketplaces(settings.marketplaces_file)
    default = marketplaces[settings.default_marketplace]
    probs = bundle.probabilities(world_features(world, bundle.tokenizer, np.arange(len(world.products)), False))
    thresholds = np.stack([bundle.thresholds_for(marketplaces.get(p.marketplace, default).target_damage_rate)[1]
                           for p in world.products])
    return probs, thresholds


def figures(m: dict) -> dict[str, float]:
    out = {f"pr_auc {t}": m["per_type"][t]["pr_auc"] for t in TYPES}
    out.update({f"certified {t}": m["per_type"][t]["coverage"] for t in TYPES})
    out.update({f"true damage rate of certified {t}": m["per_type"][t]["certified_damage_rate"] for t in TYPES})
    out.update({"lighter than box": m["coverage_lighter_than_box"], "weight saved": m["weight_saved_share"],
                "damage rate of moved": m["damage_rate_of_moved"]})
    return out


def compare(world_scores, history_scores, products: list, boot: int, seed: int) -> dict:
    """Both bundles' figures on the same products, and a paired bootstrap over the products: the standard error
    of each figure and of the difference (history - world)."""
    from models import evaluate

    full = {name: figures(evaluate.metrics(p, t, products))
            for name, (p, t) in (("world", world_scores), ("history", history_scores))}
    rng = np.random.default_rng([seed, 77])
    draws = {"world": [], "history": [], "difference": []}
    for _ in range(boot):
        idx = rng.integers(0, len(products), len(products))
        picked = [products[i] for i in idx]
        w = figures(evaluate.metrics(world_scores[0][idx], world_scores[1][idx], picked))
        h = figures(evaluate.metrics(history_scores[0][idx], history_scores[1][idx], picked))
        draws["world"].append(w)
        draws["history"].append(h)
        draws["difference"].append({k: h[k] - w[k] for k in w})
    se = {name: {k: float(np.std([d[k] for d in rows], ddof=1)) for k in rows[0]} for name, rows in draws.items()}
    return {"world": full["world"], "history": full["history"],
            "difference": {k: full["history"][k] - full["world"][k] for k in full["world"]}, "se": se}


# -- the history's own evaluation window (`packwise evaluate --data`) ------------------------------------------


def data_window(seed: int, args: argparse.Namespace, folder: Path, eval_world=None) -> dict:
    """`packwise evaluate --data` needs shipments after the last one a bundle trained on, so the dataset is built
    twice from the same landed files: as of day TRAIN_DAY of the history (what a network has on that day), which
    a history bundle is trained on, and as of 30 days after its end, which both bundles are evaluated on."""
    import os
    import shutil

    from models.dataset import TableConfig, table_from_landed
    from models.world import EPOCH
    from tests.models.simulated_history import HISTORY_DAYS, WINDOW_DAYS

    early = folder / f"data-as-of-day{args.train_day:g}"
    if not early.exists():
        early.mkdir()
        shutil.copytree(folder / "data" / "landed", early / "landed", copy_function=os.link)
        shutil.copy(folder / "data" / "manifest.json", early / "manifest.json")
    card = table_from_landed(early, TableConfig(window=timedelta(days=WINDOW_DAYS),
                                                as_of=EPOCH + timedelta(days=args.train_day)))
    log(f"table as of day {args.train_day:g}: {card['rows']:,} rows, {card['positives']:,} damaged")
    common = ["--seed", str(seed), "--epochs", str(args.epochs), "--device", args.device]
    bundle = folder / f"bundle-history-day{args.train_day:g}"
    shutil.rmtree(bundle, ignore_errors=True)  # a bundle an earlier run of this check left
    trained, seconds = train(["--data", str(early), "--out", str(bundle), *common])
    log(f"history path (as of day {args.train_day:g}) trained in {seconds:.0f} s: certified {trained['certified']}")
    results = {}
    for name, path in (("world", folder / "bundle-world"), (f"history (day {args.train_day:g})", bundle)):
        out = folder / f"evaluate-data-{path.name}"
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([PACKWISE, "evaluate", "--bundle", str(path), "--data", str(folder / "data"), "--out",
                        str(out)], stdout=subprocess.DEVNULL, check=True)
        results[name] = json.loads((out / "evaluation.json").read_text())
    fresh = None
    if eval_world is not None:  # the day-TRAIN_DAY bundle on the same fresh world as the others, for comparison
        from models import evaluate

        fresh = figures(evaluate.metrics(*scores(bundle, eval_world), eval_world.products))
    as_of = (EPOCH + timedelta(days=HISTORY_DAYS + WINDOW_DAYS)).date().isoformat()
    return {"fresh_world": fresh, "train_day": args.train_day, "as_of": as_of,
            "card": card, "train": {"seconds": seconds, **trained}, "bundle": str(bundle), "evaluations": results}


def window_lines(window: dict) -> list[str]:
    lines = [f"`packwise evaluate --data` (seed 0): a history bundle trained on the same landed files built as of "
             f"day {window['train_day']:g} ({window['card']['rows']:,} labelled shipments, certified "
             f"{window['train']['certified']}), and the world bundle, both evaluated on the dataset as of "
             f"{window['as_of']} (reported damages, not the truth):", ""]
    for name, result in window["evaluations"].items():
        w = result["window"]
        lines.append(f"{name}: window {w['rule']}: {w['shipments']:,} shipments of {w['products']:,} products")
    lines += ["", "  | bundle | type | PR-AUC (observed) | certified products | their shipments | damaged "
              "(reported) | 95% upper bound |", "  |---|---|---|---|---|---|---|"]
    for name, result in window["evaluations"].items():
        for pack, m in result["metrics"]["per_type"].items():
            auc = "-" if m["pr_auc"] is None else f"{m['pr_auc']:.3f}"
            bound = "-" if m["certified_upper_bound"] is None else f"{m['certified_upper_bound']:.3%}"
            lines.append(f"  | {name} | {pack} | {auc} | {m['certified_products']:,} | {m['certified_shipments']:,} | "
                         f"{m['certified_damaged']:,} | {bound} |")
    if window.get("fresh_world"):
        f = window["fresh_world"]
        lines += ["", f"The day-{window['train_day']:g} history bundle on the fresh world (truth): PR-AUC " +
                  " / ".join(f"{f[f'pr_auc {t}']:.3f}" for t in TYPES) + " (" + " / ".join(TYPES) + "), certified " +
                  " / ".join(f"{f[f'certified {t}']:.1%}" for t in TYPES) + f", weight saved {f['weight saved']:.1%}, "
                  f"true damage rate of moved {f['damage rate of moved']:.3%}"]
    return lines + [""]


# -- per marketplace --------------------------------------------------------------------------------------------


def market_lines(work: Path, seeds: list[int], eval_world, history_suffix: str = "") -> list[str]:
    """Each bundle of the run in `work` on the fresh world, per marketplace as `packwise evaluate` tables it
    (models/evaluate.py marketplace_certification): the true damage rate of the products certified at the
    marketplace's target, per type."""
    from models import evaluate
    from models.bundle import load_bundle
    from streams.marketplaces import load_marketplaces
    from streams.settings import Settings

    marketplaces = load_marketplaces(Settings.from_env().marketplaces_file)
    lines = ["Per marketplace on the fresh world (each product certified at its marketplace's target; the true damage "
             "rate of the certified: mean hidden probability ± its standard error; `no` where it is above the "
             "target):",
             "", "  | seed | path | marketplace | target | " + " | ".join(TYPES) + " |", "  |---|---|---|---|" +
             "---|" * len(TYPES)]
    for seed in seeds:
        for name in ("world", "history"):
            path = work / f"seed{seed}" / f"bundle-{name}{history_suffix if name == 'history' else ''}"
            bundle = load_bundle(path)
            probs, _ = scores(path, eval_world)
            by_market = evaluate.marketplace_certification(probs, eval_world.products, marketplaces,
                                                           bundle.thresholds_for)
            for code, m in by_market.items():
                cells = []
                for pack in TYPES:
                    c = m["per_type"][pack]
                    if not c["certified"]:
                        cells.append("-")
                        continue
                    se = f" ± {c['standard_error']:.3%}" if c["standard_error"] is not None else ""
                    flag = "" if c["damage_rate"] <= m["target"] else " **no**"
                    cells.append(f"{c['certified']:,}: {c['damage_rate']:.3%}{se}{flag}")
                lines.append(f"  | {seed} | {name} | {code} ({m['products']:,}) | {m['target']:.2%} | " +
                             " | ".join(cells) + " |")
    return lines


# -- the run -------------------------------------------------------------------------------------------------


def suffix(args: argparse.Namespace) -> str:
    """Of the history bundle and the results file of a run with --report-share."""
    return "" if args.report_share is None else f"-share{args.report_share:g}"


def one_seed(seed: int, args: argparse.Namespace, work: Path, eval_world) -> dict:
    folder = work / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    common = ["--seed", str(seed), "--epochs", str(args.epochs), "--device", args.device]
    earlier = json.loads((work / "parity.json").read_text()) if args.reuse else []
    before = next((run for run in earlier if run["seed"] == seed), None)
    if before is not None:  # the landed history and the world bundle of an earlier run in --work
        landed, (world_json, world_s) = before["landing"], (before["train"]["world"], before["train"]["world"]["seconds"])
        log(f"reusing the dataset and the world bundle of seed {seed} in {folder}")
    else:
        with tempfile.TemporaryDirectory(prefix="parity-kafka-") as scratch:
            landed = land_history(seed, args.products, args.shipments_per_product, data, Path(scratch))
        world_json, world_s = train(["--products", str(args.products), "--out", str(folder / "bundle-world"), *common])
    log(f"world path trained in {world_s:.0f} s: certified {world_json['certified']}")
    history_bundle = folder / f"bundle-history{suffix(args)}"
    if history_bundle.exists():
        shutil.rmtree(history_bundle)
    share = [] if args.report_share is None else ["--report-share", repr(args.report_share)]
    history_json, history_s = train(["--data", str(data), "--out", str(history_bundle), *common, *share])
    log(f"history path trained in {history_s:.0f} s: certified {history_json['certified']} split "
        f"{history_json['split']}")
    started = time.perf_counter()
    world_scores = scores(folder / "bundle-world", eval_world)
    history_scores = scores(history_bundle, eval_world)
    result = compare(world_scores, history_scores, eval_world.products, args.bootstrap, seed)
    log(f"evaluated and bootstrapped in {time.perf_counter() - started:.0f} s")
    return {"seed": seed, "landing": landed, "train": {"world": {"seconds": world_s, **world_json},
                                                       "history": {"seconds": history_s, **history_json}},
            "evaluation": result}


def formatter(figure: str):
    """How a figure prints: damage rates to 0.001%, other shares to 0.01%, PR-AUC to 0.001."""
    if "damage rate" in figure:
        return lambda v: f"{v:.3%}"
    if not figure.startswith("pr_auc"):
        return lambda v: f"{v:.2%}"
    return lambda v: f"{v:.3f}"


def table_lines(runs: list[dict]) -> list[str]:
    lines = []
    keys = [f"pr_auc {t}" for t in TYPES] + [f"certified {t}" for t in TYPES] + \
           [f"true damage rate of certified {t}" for t in TYPES] + \
           ["lighter than box", "weight saved", "damage rate of moved"]
    for run in runs:
        e = run["evaluation"]
        lines.append(f"seed {run['seed']} (history path minus world path; ± one bootstrap standard error over the "
                     "evaluation products):")
        lines.append("")
        lines.append("  | figure | world path | history path | difference | difference / its SE |")
        lines.append("  |---|---|---|---|---|")
        for k in keys:
            fmt = formatter(k)
            se = e["se"]["difference"][k]
            z = e["difference"][k] / se if se > 0 else float("nan")
            lines.append(f"  | {k} | {fmt(e['world'][k])} ± {fmt(e['se']['world'][k])} | {fmt(e['history'][k])} ± "
                         f"{fmt(e['se']['history'][k])} | {fmt(e['difference'][k])} ± {fmt(se)} | {z:+.1f} |")
        lines.append("")
    if len(runs) > 1:
        lines.append("over seeds (mean ± standard deviation of the seeds' figures):")
        lines.append("")
        lines.append("  | figure | world path | history path | difference |")
        lines.append("  |---|---|---|---|")
        for k in keys:
            fmt = formatter(k)
            cols = []
            for name in ("world", "history", "difference"):
                v = [r["evaluation"][name][k] for r in runs]
                cols.append(f"{fmt(float(np.mean(v)))} ± {fmt(float(np.std(v, ddof=1)))}")
            lines.append(f"  | {k} | " + " | ".join(cols) + " |")
        lines.append("")
    return lines


def items(lines: list[str]) -> list[str]:
    """Lines as bench_worker.record's list items: a table (lines indented by two spaces) joins the item before
    it, after a blank line, so that it renders as a table inside that item; blank lines are dropped."""
    out: list[str] = []
    for line in lines:
        if not line:
            continue
        if line.startswith("  |") and out:
            out[-1] += ("\n" if out[-1].split("\n")[-1].startswith("  |") else "\n\n") + line
        else:
            out.append(line)
    return out


def main() -> None:
    from models.world import World, WorldConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=8000)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shipments-per-product", type=float, default=WorldConfig().shipments_per_product,
                        help="mean shipments per product over the simulated history, if it arrived on day 0 "
                             "(default: the world's shipments_per_product)")
    parser.add_argument("--eval-products", type=int, default=3000)
    parser.add_argument("--eval-seed", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=None, help="folder for the datasets and bundles (default: a "
                                                                  "new one under /tmp)")
    parser.add_argument("--data-window", action="store_true",
                        help="also `packwise evaluate --data` (first seed): a history bundle trained as of --train-day")
    parser.add_argument("--train-day", type=float, default=100.0)
    parser.add_argument("--window-only", action="store_true",
                        help="only the --data-window check, on the first seed's dataset and world bundle that an "
                             "earlier run left in --work")
    parser.add_argument("--markets-only", action="store_true",
                        help="only the per-marketplace table of the bundles an earlier run left in --work")
    parser.add_argument("--report-share", type=float, default=None,
                        help="train the history bundle with `--report-share` (the share of damages reported within "
                             "the attribution window; the simulated world's is 0.7 x (1 - e^(-30/7)) = 0.69)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the landed dataset and the world bundle of the seeds in --work/parity.json, "
                             "training only the history bundle again")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS-parity.md")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", "bench/parity_history.py", *sys.argv[1:]])
    work = args.work or Path(tempfile.mkdtemp(prefix="packwise-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    started = time.perf_counter()
    eval_world = World.generate(WorldConfig(seed=args.eval_seed, n_products=args.eval_products))
    if args.markets_only:
        lines = items(market_lines(work, [int(s) for s in args.seeds.split(",")], eval_world, suffix(args)))
        if args.no_record:
            print("\n".join(lines))
        else:
            import bench_worker

            bench_worker.record(f"Parity: certification per marketplace, {args.products:,} products", lines,
                                command, RESULTS)
        return
    if args.window_only:
        seed = int(args.seeds.split(",")[0])
        window = data_window(seed, args, work / f"seed{seed}", eval_world)
        (work / "window.json").write_text(json.dumps(window, indent=2, default=str))
        lines = [f"{args.products:,} products, seed {seed}, {args.epochs} epochs; fresh world seed {args.eval_seed}, "
                 f"{args.eval_products:,} products; {(time.perf_counter() - started) / 60:.1f} min", ""]
        lines += window_lines(window)
        if args.no_record:
            print("\n".join(lines))
        else:
            import bench_worker

            bench_worker.record("Parity: `packwise evaluate --data` on the history's later window", items(lines),
                                command, RESULTS)
        return
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        runs.append(one_seed(seed, args, work, eval_world))
        (work / f"parity{suffix(args)}.json").write_text(json.dumps(runs, indent=2, default=str))
    window = None
    if args.data_window:
        window = data_window(runs[0]["seed"], args, work / f"seed{runs[0]['seed']}", eval_world)
        (work / "window.json").write_text(json.dumps(window, indent=2, default=str))
    total = time.perf_counter() - started
    lines = []
    for run in runs:
        card, t = run["landing"]["card"], run["landing"]["times"]
        tw, th = run["train"]["world"], run["train"]["history"]
        lines.append(f"seed {run['seed']}: history of {args.products:,} products through Kafka: "
                     f"{run['landing']['produced']:,} events produced in {t['produce_s']:.0f} s (simulated in "
                     f"{t['simulate_s']:.0f} s), landed in {t['land_s']:.0f} s ({run['landing']['dead_letters']} dead "
                     f"letters), table as of {run['landing']['as_of']} in {t['table_s']:.0f} s: {card['rows']:,} "
                     f"shipments, {card['positives']:,} with a reported damage; history split (products) "
                     f"{th['split']}")
        lines.append(f"seed {run['seed']}: trained in {tw['seconds']:.0f} s (world path, certified "
                     f"{tw['certified']}) and {th['seconds']:.0f} s (history path, certified {th['certified']})")
    if args.report_share is not None:
        lines.append(f"the history path certified on reported damage with --report-share {args.report_share:g} (each "
                     f"target t tested on the reported rate at t x {args.report_share:g})"
                     + ("; datasets and world bundles reused from an earlier run in the work folder" if args.reuse
                        else ""))
    lines.append(f"evaluated on a fresh world (seed {args.eval_seed}, {args.eval_products:,} products), "
                 f"{args.bootstrap} paired bootstrap draws; whole run {total / 60:.1f} min; work folder {work}")
    lines.append("")
    lines += table_lines(runs)
    if window is not None:
        lines += window_lines(window)
    if not args.no_record:
        import bench_worker

        bench_worker.record(f"Parity: history through Kafka vs the synthetic world, {args.products:,} products",
                            items(lines), command, RESULTS)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
