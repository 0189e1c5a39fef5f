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


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a damage model on a synthetic world and write a bundle")
    train.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    train.add_argument("--products", type=_positive_int, default=10_000, help="products in the world")
    train.add_argument("--seed", type=int, default=0, help="seed of the world and of training")
    train.add_argument("--modality", choices=[m.value for m in Modality], default=Modality.MULTIMODAL.value,
                       help="what the model reads: catalog text, capture images, or both")
    train.add_argument("--imbalance", choices=[i.value for i in Imbalance], default=Imbalance.NONE.value,
                       help="how training treats rare damages (models/REPORT.md compares them)")
    train.add_argument("--epochs", type=_positive_int, default=3, help="training epochs")
    train.add_argument("--target", type=_rate, default=0.005, help="allowed damage rate among certified products")
    train.add_argument("--delta", type=_rate, default=0.05, help="allowed probability of exceeding the target")
    train.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    train.set_defaults(handler=_user_errors_as_sentences(_train))

    evaluate = subparsers.add_parser("evaluate", help="measure a bundle on fresh products and write a report")
    evaluate.add_argument("--bundle", type=Path, required=True, help="bundle directory to evaluate")
    evaluate.add_argument("--products", type=_positive_int, default=3000, help="fresh products to evaluate on")
    evaluate.add_argument("--seed", type=int, default=1000, help="seed of the fresh world (not the training seed)")
    evaluate.add_argument("--out", type=Path, required=True, help="directory for REPORT.md and its plots")
    evaluate.set_defaults(handler=_user_errors_as_sentences(_evaluate))


def _train(args: argparse.Namespace) -> int:
    import torch

    from models.bundle import save_bundle
    from models.network import NetworkConfig
    from models.packtypes import PACK_TYPES
    from models.train import TrainConfig, certification_shortfall, fit, prepare
    from models.world import WorldConfig

    if args.device not in ("auto", "cpu") and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise UserError(f"device {args.device!r} is not available here; use --device auto or cpu.")
    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"bundle directory {args.out} already exists and is not empty; choose a new --out.")
    if args.products < 500:
        raise UserError(f"--products {args.products} is too few to train and certify; use at least 500.")
    started = time.perf_counter()
    data = prepare(WorldConfig(seed=args.seed, n_products=args.products))
    config = TrainConfig(epochs=args.epochs, imbalance=Imbalance(args.imbalance), target=args.target,
                         delta=args.delta, seed=args.seed, device=args.device)
    result = fit(data, NetworkConfig(modality=Modality(args.modality)), config)
    path = save_bundle(result, args.out)
    certified = [pack.value for pack, c in zip(PACK_TYPES, result.certifications) if c.threshold >= 0]
    if not certified:
        # Exit 0 all the same: the bundle is valid and safe (every product goes to a test), and a script that
        # needs certification can read "certified" in the JSON line.
        print(certification_shortfall(args.products, args.target, args.delta), file=sys.stderr, flush=True)
    print(json.dumps({"bundle": str(path), "version": json.loads((path / "manifest.json").read_text())["version"],
                      "seconds": round(time.perf_counter() - started, 1),
                      "thresholds": [c.threshold for c in result.certifications], "certified": certified,
                      "test_weight_saved_share": round(result.test_metrics["weight_saved_share"], 4)}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from models import evaluate
    from models.bundle import load_bundle
    from models.train import world_features
    from models.world import World, WorldConfig

    bundle = load_bundle(args.bundle)
    if args.seed == bundle.config["world"]["seed"]:
        raise UserError(f"--seed {args.seed} is the bundle's training seed; evaluate on a fresh world (another seed).")
    world = World.generate(WorldConfig(seed=args.seed, n_products=args.products))
    probs = bundle.probabilities(world_features(world, bundle.tokenizer, np.arange(len(world.products))))
    row = evaluate.metrics(probs, bundle.thresholds, world.products)
    command = " ".join(["packwise", *sys.argv[1:]]) if sys.argv[1:2] == ["evaluate"] else \
        f"packwise evaluate --bundle {args.bundle} --products {args.products} --seed {args.seed} --out {args.out}"
    page = evaluate.write_report(f"Evaluation of {bundle.version}", command, {bundle.version: (probs, world.products)},
                                 {bundle.version: row}, bundle.target, args.out, plots_folder="")
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
