"""`packwise train` and `packwise evaluate`: registered on the main packwise CLI by `register(subparsers)`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.options import Imbalance, Modality


class UserError(Exception):
    """A mistake in the command line or its inputs: reported as one sentence, exit status 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not strictly between 0 and 1")
    return value


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(_rate(part) for part in text.split(",") if part.strip())
    except (ValueError, argparse.ArgumentTypeError):
        rates = ()
    if not rates:
        raise argparse.ArgumentTypeError(f"{text} is not a comma-separated list of rates strictly between 0 and 1")
    return rates


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = float("nan")
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share: a number above 0 and at most 1")
    return share


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a damage model on a synthetic world, or on your own history "
                                                   "(--data), and write a bundle")
    train.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    train.add_argument("--products", type=_positive_int, default=10_000, help="products in the world")
    train.add_argument("--seed", type=int, default=0, help="seed of the world and of training")
    train.add_argument("--modality", choices=[m.value for m in Modality], default=Modality.MULTIMODAL.value,
                       help="what the model reads: catalog text, capture images, or both")
    train.add_argument("--imbalance", choices=[i.value for i in Imbalance], default=Imbalance.NONE.value,
                       help="how training treats rare damages (models/REPORT.md compares them)")
    train.add_argument("--epochs", type=_positive_int, default=3, help="training epochs")
    train.add_argument("--target", type=_rate, default=None,
                       help="an allowed damage rate among certified products to certify at, besides --targets")
    train.add_argument("--targets", type=_rates, default=None, metavar="RATE,RATE,...",
                       help="the allowed damage rates to certify at, one certification each (default: the distinct "
                            "targets of the marketplaces in force, PACKWISE_MARKETPLACES_FILE or the built-in ones); "
                            "a marketplace certifies with its own target's, or a stricter one's")
    train.add_argument("--delta", type=_rate, default=0.05, help="allowed probability of exceeding the target")
    train.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    train.add_argument("--data", type=Path, default=None, metavar="DIR",
                       help="train on your own history instead of a synthetic world: the labelled table that "
                            "`packwise dataset build --out DIR` wrote, split by product and by time "
                            "(models/history.py); --products is not used")
    train.add_argument("--report-share", type=_share, default=None, metavar="SHARE",
                       help="with --data: the share of damaged units your customers and returns center ever report "
                            "(within the dataset's attribution window). The labels are reported damages, so each "
                            "target is certified on the reported rate at target x SHARE, and the guarantee holds for "
                            "the true rate when the share is right (default 1: every damage reported)")
    train.add_argument("--calibrate-on", choices=["unselected", "all"], default="unselected",
                       help="with --data: whose outcomes certify. unselected (default): only shipments whose package "
                            "type the model's score did not pick (shipped before packwise decided the product, "
                            "audits, provisional decisions); all: every shipment, whatever chose its type (the "
                            "guarantee then covers only what those choices let through)")
    train.set_defaults(handler=_user_errors_as_sentences(_train))

    evaluate = subparsers.add_parser("evaluate", help="measure a bundle on fresh products, or on the later "
                                                         "shipments of your own history (--data), and write a report")
    evaluate.add_argument("--bundle", type=Path, required=True, help="bundle directory to evaluate")
    evaluate.add_argument("--products", type=_positive_int, default=3000, help="fresh products to evaluate on")
    evaluate.add_argument("--seed", type=int, default=1000, help="seed of the fresh world (not the training seed)")
    evaluate.add_argument("--out", type=Path, required=True, help="directory for REPORT.md and its plots")
    evaluate.add_argument("--data", type=Path, default=None, metavar="DIR",
                          help="evaluate on your own history instead of a fresh world: the shipments of the dataset "
                               "DIR after those the bundle was trained on, with their reported damages "
                               "(models/history.py); --products and --seed are not used")
    evaluate.set_defaults(handler=_user_errors_as_sentences(_evaluate))


def _train(args: argparse.Namespace) -> int:
    import torch

    from models.bundle import save_bundle
    from models.network import NetworkConfig
    from models.packtypes import PACK_TYPES
    from models.train import TrainConfig, certification_shortfall, fit, prepare
    from models.world import WorldConfig
    from streams.marketplaces import certifying_target, load_marketplaces, targets_of
    from streams.settings import Settings

    if args.device not in ("auto", "cpu") and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise UserError(f"device {args.device!r} is not available here; use --device auto or cpu.")
    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"bundle directory {args.out} already exists and is not empty; choose a new --out.")
    if args.data is None and args.report_share is not None:
        raise UserError("--report-share applies to training on a history (--data): a synthetic world certifies on "
                        "audit shipments, which see every damage.")
    if args.data is None and args.products < 500:
        raise UserError(f"--products {args.products} is too few to train and certify; use at least 500.")
    settings = getattr(args, "settings", None) or Settings.from_env()
    marketplaces = load_marketplaces(settings.marketplaces_file)
    targets = tuple(sorted(set(args.targets or targets_of(marketplaces)) | ({args.target} if args.target else set())))
    started = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, imbalance=Imbalance(args.imbalance), targets=targets,
                         delta=args.delta, seed=args.seed, device=args.device,
                         report_share=args.report_share if args.report_share is not None else 1.0)
    if args.data is not None:
        from models import history

        try:
            data = history.load_history(args.data, args.seed, targets, args.delta, config.report_share,
                                        args.calibrate_on)
        except history.HistoryError as error:
            raise UserError(str(error)) from None
        result = history.fit_history(data, NetworkConfig(modality=Modality(args.modality)), config)

        def shortfall(target: float, stricter: tuple[float, ...], markets: tuple[str, ...]) -> str:
            return history.certification_shortfall(data, target, args.delta, stricter, markets, config.report_share)
    else:
        result = fit(prepare(WorldConfig(seed=args.seed, n_products=args.products)),
                     NetworkConfig(modality=Modality(args.modality)), config)

        def shortfall(target: float, stricter: tuple[float, ...], markets: tuple[str, ...]) -> str:
            return certification_shortfall(args.products, target, args.delta, stricter, markets)
    path = save_bundle(result, args.out)
    certified = {target: [pack.value for pack, c in zip(PACK_TYPES, certifications) if c.threshold >= 0]
                 for target, certifications in result.certifications.items()}
    uncertified = sorted((t for t, types in certified.items() if not types), reverse=True)  # the strictest ones
    if uncertified:
        # Exit 0 all the same: the bundle is valid and safe (those products go to a test), and a script that
        # needs certification can read "certified" in the JSON line.
        markets = tuple(code for code, m in marketplaces.items()
                        if certifying_target(targets, m.target_damage_rate) in uncertified)
        print(shortfall(uncertified[0], tuple(uncertified[1:]), markets), file=sys.stderr, flush=True)
    beyond = [f"{code} ({m.target_damage_rate:.2%})" for code, m in marketplaces.items()
              if certifying_target(targets, m.target_damage_rate) is None]
    if beyond:
        print(f"WARNING: the model certifies nothing in {', '.join(beyond)}: it was certified only at "
              f"{', '.join(f'{t:.2%}' for t in targets)}, looser than those marketplaces' targets. Add their targets "
              "to --targets.", file=sys.stderr, flush=True)
    print(json.dumps({"bundle": str(path), "version": json.loads((path / "manifest.json").read_text())["version"],
                      "seconds": round(time.perf_counter() - started, 1),
                      "thresholds": {repr(t): [c.threshold for c in cs] for t, cs in result.certifications.items()},
                      "certified": {repr(t): types for t, types in certified.items()},
                      **({"test_weight_saved_share": round(result.test_metrics["weight_saved_share"], 4)}
                         if result.dataset is None else
                         {"dataset": result.dataset["fingerprint"], "split": result.dataset["split"]["products"],
                          "test_pr_auc": {pack: m["pr_auc"] for pack, m in result.test_metrics["per_type"].items()}})}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from models import evaluate
    from models.bundle import load_bundle
    from models.train import world_features
    from models.world import World, WorldConfig
    from streams.marketplaces import load_marketplaces
    from streams.settings import Settings

    bundle = load_bundle(args.bundle)
    if args.data is not None:
        return _evaluate_history(args, bundle)
    if args.seed == bundle.config.get("world", {}).get("seed"):
        raise UserError(f"--seed {args.seed} is the bundle's training seed; evaluate on a fresh world (another seed).")
    settings = getattr(args, "settings", None) or Settings.from_env()
    marketplaces = load_marketplaces(settings.marketplaces_file)
    world = World.generate(WorldConfig(seed=args.seed, n_products=args.products))
    probs = bundle.probabilities(world_features(world, bundle.tokenizer, np.arange(len(world.products))))
    # each product certified at its own marketplace's target, as the worker certifies it
    default = marketplaces[settings.default_marketplace]
    thresholds = np.stack([bundle.thresholds_for(marketplaces.get(p.marketplace, default).target_damage_rate)[1]
                           for p in world.products])
    row = evaluate.metrics(probs, thresholds, world.products)
    by_market = evaluate.marketplace_certification(probs, world.products, marketplaces, bundle.thresholds_for)
    command = " ".join(["packwise", *sys.argv[1:]]) if sys.argv[1:2] == ["evaluate"] else \
        f"packwise evaluate --bundle {args.bundle} --products {args.products} --seed {args.seed} --out {args.out}"
    section = (f"## Certification per marketplace\n\nEach product is certified with the thresholds its marketplace's "
               f"target takes (the bundle was calibrated for {', '.join(f'{t:.2%}' for t in bundle.targets)}; a "
               "marketplace uses its own target's, else the loosest stricter one's, never a looser one's). The true "
               "damage rate is the mean hidden damage probability of the certified products (± its standard error "
               f"over them); the calibration guarantees, with probability at least {1 - bundle.delta:.0%} per type "
               "and target, that the rate over all such products is within the target.\n\n"
               f"{evaluate.marketplace_table(by_market)}\n\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "certification.json").write_text(json.dumps(by_market, indent=2))
    page = evaluate.write_report(f"Evaluation of {bundle.version}", command, {bundle.version: (probs, world.products)},
                                 {bundle.version: row}, sorted({m["target"] for m in by_market.values()}), args.out,
                                 plots_folder="", sections=section)
    print(page)
    return 0


def _evaluate_history(args: argparse.Namespace, bundle) -> int:
    from models import history
    from streams.marketplaces import load_marketplaces
    from streams.settings import Settings

    settings = getattr(args, "settings", None) or Settings.from_env()
    marketplaces = load_marketplaces(settings.marketplaces_file)
    try:
        result = history.evaluation(args.data, bundle, marketplaces, settings.default_marketplace)
    except history.HistoryError as error:
        raise UserError(str(error)) from None
    command = " ".join(["packwise", *sys.argv[1:]]) if sys.argv[1:2] == ["evaluate"] else \
        f"packwise evaluate --bundle {args.bundle} --data {args.data} --out {args.out}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(result, indent=2))
    page = args.out / "REPORT.md"
    page.write_text(history.evaluation_markdown(result, command))
    print(page)
    return 0


def _user_errors_as_sentences(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """User errors become one sentence on stderr and exit status 2, whoever dispatches the command."""

    def guarded(args: argparse.Namespace) -> int:
        from models.bundle import BundleError

        try:
            return command(args)
        except (UserError, BundleError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return guarded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="packwise", description="packwise model commands")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
