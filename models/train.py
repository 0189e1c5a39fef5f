"""Training: the world's history into tensors, the training loop, and the full fit (train, calibrate,
certify, measure) whose result `models.bundle.save_bundle` writes to disk."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from models import calibrate, evaluate, features
from models.imbalance import Imbalance, damage_loss, epoch_counts, positive_weight, smote_embeddings
from models.network import DamageNet, Modality, NetworkConfig
from models.tokenizer import Tokenizer, catalog_document, train_tokenizer
from models.world import World, WorldConfig, catalog_record

SPLITS = {"train": 0.50, "temperature": 0.10, "calibration": 0.30, "test": 0.10}
# Damages are rare, so the temperature fit sees several audit shipments per product; the calibration
# split sees exactly one, which is what makes its damage count binomial.
AUDIT_REPEATS = 10


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    imbalance: Imbalance = Imbalance.NONE
    focal_gamma: float = 2.0
    two_phase_split: float = 0.5  # share of epochs in phase 1 (undersampled)
    smote_head_epochs: int = 3
    modality_dropout: float = 0.15  # drop text or images per example, so one-sided inputs score well
    targets: tuple[float, ...] = (0.005,)  # damage rates allowed among certified products: one certification each
    delta: float = 0.05  # allowed probability that the certified rate exceeds the target
    # Training on a history (--data): the share of damaged units that are ever reported within the attribution
    # window. Its labels are reported damages, so a target t on the true rate is certified as t × report_share on
    # the reported one (models/history.py). 1.0 trusts every damage to be reported; audits see every damage.
    report_share: float = 1.0
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class Dataset:
    """A world turned into model inputs and labels, split by product."""

    world: World
    tokenizer: Tokenizer
    features: features.Features
    positives: np.ndarray  # reported damages in the history, [n, 4]
    negatives: np.ndarray  # other historical shipments, [n, 4]
    splits: dict[str, np.ndarray]  # product indices per split
    audit: np.ndarray  # one fully observed audit shipment per product and type: damaged 0/1, [n, 4]
    audit_repeats: np.ndarray  # damages in AUDIT_REPEATS more audit shipments per type, [n, 4] (temperature fit)
    fingerprint: str


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads() -> None:
    """Use the cores this process may run on, not the machine's count."""
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


class PlainProgress:
    """Progress for a log or a pipe: a line at every quarter, where a bar would be redrawn in place (tqdm
    writes tens of kilobytes of redraws into a file)."""

    def __init__(self, steps: range, desc: str) -> None:
        self.steps, self.desc, self.postfix = steps, desc, ""

    def set_postfix(self, **values: object) -> None:
        self.postfix = ", " + ", ".join(f"{name} {value}" for name, value in values.items())

    def __iter__(self):
        started, total = time.perf_counter(), len(self.steps)
        quarters = {math.ceil(total * q / 4) for q in range(1, 5)}
        for done, step in enumerate(self.steps, 1):
            yield step
            if done in quarters:
                print(f"{self.desc}: {done / total:.0%} in {time.perf_counter() - started:.0f} s{self.postfix}",
                      file=sys.stderr, flush=True)


def progress(steps: range, desc: str, show: bool = True) -> "tqdm | PlainProgress":
    """A bar on a terminal, plain lines elsewhere, nothing when not shown."""
    if show and not sys.stderr.isatty():
        return PlainProgress(steps, desc)
    return tqdm(steps, desc=desc, disable=not show, leave=False)


def world_features(world: World, tokenizer: Tokenizer, indices: np.ndarray, show_progress: bool = True) -> features.Features:
    """Model inputs for products of a world: their catalog record and their first tunnel capture."""
    chunks = []
    for start in progress(range(0, len(indices), 512), "rendering captures", show_progress):
        products = [world.products[i] for i in indices[start:start + 512]]
        captures = [features.training_capture(p, world.config.missing_view_rate, world.config.image_size)
                    for p in products]
        chunks.append(features.assemble(tokenizer, [catalog_record(p) for p in products], [c[0] for c in captures],
                                        [c[1] for c in captures], world.config.image_size))
    return features.concatenate(chunks)


def split_bounds(n_products: int) -> np.ndarray:
    """Where each split of SPLITS ends in a shuffled order of n_products (the test split takes the rest)."""
    bounds = np.cumsum([0] + [int(round(f * n_products)) for f in SPLITS.values()])
    bounds[-1] = n_products
    return bounds


def calibration_size(n_products: int) -> int:
    index = list(SPLITS).index("calibration")
    bounds = split_bounds(n_products)
    return int(bounds[index + 1] - bounds[index])


def uncertified_warning(target: float, delta: float, stricter: tuple[float, ...] = (),
                        markets: tuple[str, ...] = ()) -> str:
    """The first line of the warning for a run that certified no package type at `target` (nor at `stricter`)."""
    nor = f", nor at the stricter {', '.join(f'{t:.2%}' for t in stricter)}" if stricter else ""
    whose = f"in {', '.join(markets)} " if markets else ""
    return (f"WARNING: no package type could be certified at target {target:.2%} (delta {delta:.0%}){nor}. The "
            f"bundle works, but the worker will send every product {whose}to a person's test (needs_test) until "
            "shipment data certify a type.")


def certification_shortfall(n_products: int, target: float, delta: float, stricter: tuple[float, ...] = (),
                            markets: tuple[str, ...] = ()) -> str:
    """The warning for a run that certified no package type at `target` (nor, then, at the `stricter` targets):
    what the test needs, what this run had, and the least that could change it. Both figures are floors (every
    calibration product certified and undamaged); a real model certifies only the products it scores safest.
    `markets`: the marketplaces whose targets these are."""
    needed = calibrate.zero_damage_products_needed(target, delta)
    n_cal = calibration_size(n_products)
    lines = [uncertified_warning(target, delta, stricter, markets),
             f"  The certification test passes only with at least {needed} certified calibration products with no "
             f"damage among them ((1 - target)^n <= delta); this run had {n_cal} calibration products "
             f"({SPLITS['calibration']:.0%} of {n_products})."]
    if n_cal < needed:
        products = next(n for n in range(n_products, 100 * n_products) if calibration_size(n) >= needed)
        lowest = math.ceil(calibrate.lowest_certifiable_target(n_cal, delta) * 1e4) / 1e4
        lines.append(f"  Train with --products {products} at the very least (in practice several times more: only "
                     "the products the model scores safest are certified, and each damage among them raises the "
                     f"count), or with --target {lowest} or more (the lowest target {n_cal} damage-free "
                     "calibration products can reach).")
    else:
        lines.append("  That is enough products in principle, but no group the model scores safe was both large and "
                     "damage-free enough: train longer (--epochs), on more products, or with a higher --target.")
    return "\n".join(lines)


def prepare(world_config: WorldConfig, show_progress: bool = True) -> Dataset:
    world = World.generate(world_config)
    rng = np.random.default_rng([world_config.seed, 3])
    order = rng.permutation(len(world.products))
    bounds = split_bounds(len(order))
    splits = {name: np.sort(order[bounds[i]:bounds[i + 1]]) for i, name in enumerate(SPLITS)}
    tokenizer = Tokenizer(train_tokenizer(catalog_document(catalog_record(world.products[i]))
                                          for i in splits["train"]))
    history = world.shipment_history()
    audit = world.audit(np.random.default_rng([world_config.seed, 4]))
    audit_repeats = world.audit(np.random.default_rng([world_config.seed, 5]), AUDIT_REPEATS)
    digest = hashlib.sha256(world_config.fingerprint().encode())
    for array in (world.truth(), history.shipped, history.reported, audit):
        digest.update(np.ascontiguousarray(array).tobytes())
    return Dataset(world, tokenizer, world_features(world, tokenizer, np.arange(len(world.products)), show_progress),
                   history.reported, history.shipped - history.reported, splits, audit, audit_repeats,
                   digest.hexdigest())


def predict_logits(model: DamageNet, f: features.Features, batch_size: int = 256) -> np.ndarray:
    device = next(model.parameters()).device
    if model.training:  # eval() walks every module: a millisecond per call that a loaded bundle need not pay
        model.eval()
    with torch.inference_mode():
        return torch.cat([model(f.select(slice(i, i + batch_size)).to(device)).cpu()
                          for i in range(0, len(f), batch_size)]).numpy().astype(np.float64)


def _drop_modalities(f: features.Features, rate: float, generator: torch.Generator) -> features.Features:
    u = torch.rand(len(f), generator=generator)
    keep_text = (u >= rate).float()  # u < rate: text dropped; rate <= u < 2 rate: images dropped
    keep_capture = ((u < rate) | (u >= 2 * rate)).float()
    return dataclasses.replace(f, has_text=f.has_text * keep_text, has_capture=f.has_capture * keep_capture)


def train_network(net_config: NetworkConfig, config: TrainConfig, f: features.Features, positives: np.ndarray,
                  negatives: np.ndarray, show_progress: bool = True) -> DamageNet:
    torch.manual_seed(config.seed)
    set_threads()
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    model = DamageNet(net_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    pos_weight = torch.as_tensor(positive_weight(config.imbalance, positives, negatives))
    focal_gamma = config.focal_gamma if config.imbalance == Imbalance.FOCAL else 0.0
    use_dropout = net_config.modality == Modality.MULTIMODAL
    phase_one_epochs = int(round(config.epochs * config.two_phase_split))
    for epoch in range(config.epochs):
        pos, neg = epoch_counts(config.imbalance, positives, negatives, epoch < phase_one_epochs, rng)
        active = rng.permutation(np.flatnonzero((pos + neg).sum(1) > 0))
        if config.imbalance == Imbalance.TWO_PHASE and epoch == phase_one_epochs:
            for group in optimizer.param_groups:  # phase 2 refines on all data
                group["lr"] = config.lr * 0.3
        model.train()
        bar = progress(range(0, len(active), config.batch_size), f"epoch {epoch + 1}/{config.epochs}", show_progress)
        for start in bar:
            idx = active[start:start + config.batch_size]
            batch = f.select(torch.as_tensor(idx))
            if use_dropout:
                batch = _drop_modalities(batch, config.modality_dropout, generator)
            logits = model(batch.to(device))
            loss = damage_loss(logits, (torch.as_tensor(pos[idx]) * pos_weight).to(device),
                               torch.as_tensor(neg[idx]).to(device), focal_gamma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    if config.imbalance == Imbalance.SMOTE:
        _refit_head_with_smote(model, config, f, positives, negatives, rng, device)
    return model


def _refit_head_with_smote(model: DamageNet, config: TrainConfig, f: features.Features, positives: np.ndarray,
                           negatives: np.ndarray, rng: np.random.Generator, device: torch.device) -> None:
    model.eval()
    with torch.inference_mode():
        embeddings = torch.cat([model.embed(f.select(slice(i, i + 256)).to(device)).cpu()
                                for i in range(0, len(f), 256)]).numpy()
    synthetic, synthetic_pos = smote_embeddings(embeddings, positives, negatives, rng)
    all_embeddings = torch.as_tensor(np.concatenate([embeddings, synthetic]), dtype=torch.float32)
    all_pos = torch.as_tensor(np.concatenate([positives, synthetic_pos]), dtype=torch.float32)
    all_neg = torch.as_tensor(np.concatenate([negatives, np.zeros_like(synthetic_pos)]), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=config.lr)
    for _ in range(config.smote_head_epochs):
        for idx in torch.as_tensor(rng.permutation(len(all_embeddings))).split(256):
            loss = damage_loss(model.head(all_embeddings[idx].to(device)), all_pos[idx].to(device),
                               all_neg[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@dataclass(frozen=True)
class FitResult:
    model: DamageNet
    net_config: NetworkConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    temperature: np.ndarray
    bias: np.ndarray
    certifications: dict[float, list[calibrate.Certification]]  # per target, per package type
    test_metrics: dict  # at the loosest target
    world_config: WorldConfig | None  # the synthetic world trained on, or None (a dataset: `dataset`)
    fingerprint: str
    train_seconds: float
    calibration_products: int
    dataset: dict | None = None  # a dataset trained on (models/history.py History.describe): fingerprint, card, split


def fit(data: Dataset, net_config: NetworkConfig, config: TrainConfig, show_progress: bool = True) -> FitResult:
    """Train on the train split, calibrate on the temperature split, certify on the calibration split,
    measure on the test split."""
    started = time.perf_counter()
    net_config = dataclasses.replace(net_config, vocab_size=data.tokenizer.vocab_size)
    train = data.splits["train"]
    model = train_network(net_config, config, data.features.select(torch.as_tensor(train)), data.positives[train],
                          data.negatives[train], show_progress)
    train_seconds = time.perf_counter() - started
    logits = {name: predict_logits(model, data.features.select(torch.as_tensor(idx)))
              for name, idx in data.splits.items() if name != "train"}
    temp_idx = data.splits["temperature"]
    temperature, bias = calibrate.fit_temperature(logits["temperature"], data.audit_repeats[temp_idx],
                                                  np.full_like(data.audit_repeats[temp_idx], AUDIT_REPEATS))
    probs = {name: calibrate.calibrated(z, temperature, bias) for name, z in logits.items()}
    cal_idx = data.splits["calibration"]
    certifications = calibrate.certify_targets(probs["calibration"], data.audit[cal_idx], probs["temperature"],
                                               data.audit_repeats[temp_idx], AUDIT_REPEATS, config.targets,
                                               config.delta)
    test_products = [data.world.products[i] for i in data.splits["test"]]
    loosest = max(certifications)  # the card measures what the bundle certifies at most
    metrics = evaluate.metrics(probs["test"], np.asarray([c.threshold for c in certifications[loosest]]),
                               test_products)
    return FitResult(model.cpu(), net_config, config, data.tokenizer, temperature, bias, certifications, metrics,
                     data.world.config, data.fingerprint, train_seconds, len(cal_idx))
