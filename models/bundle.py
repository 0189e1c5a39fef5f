"""The model as an artifact: a versioned bundle directory, one loader, and batched inference.

    bundle = load_bundle("bundles/pw-20261129-1a2b3c4d")
    predictions = bundle.predict(catalog_records, capture_records)   # lists of equal length, items may be None
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from models import features
from models.bundle_files import BUNDLE_FORMAT, FILES, BundleError, verify_files  # noqa: F401 (re-exported)
from models.bundle_files import sha256 as _sha256
from models.calibrate import calibrated, zero_damage_products_needed
from models.imbalance import Imbalance
from models.network import DamageNet, Modality, NetworkConfig
from models.packtypes import PACK_TYPES, PackType
from models.tokenizer import Tokenizer
from models.train import FitResult, predict_logits, set_threads
from streams.marketplaces import certifying_target

log = logging.getLogger("packwise.bundle")



@dataclass(frozen=True)
class Prediction:
    product_id: str | None
    probabilities: dict[PackType, float]  # calibrated P(damaged) per package type
    # per calibration target: auto-certified, the probability at or below the type's threshold for that target
    certified: dict[float, dict[PackType, bool]]
    lightest_certified: dict[float, PackType | None]  # per calibration target
    bundle_version: str


def bundle_version(fingerprint: str, when: datetime | None = None) -> str:
    return f"pw-{(when or datetime.now(timezone.utc)):%Y%m%d}-{fingerprint[:8]}"


def save_bundle(result: FitResult, out_dir: Path) -> Path:
    """Write weights, tokenizer, configuration, calibration, metrics card and a manifest of checksums."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"bundle directory {out_dir} already exists and is not empty; choose a new --out.")
    out_dir.mkdir(parents=True, exist_ok=True)
    version = bundle_version(result.fingerprint)
    buffer = io.BytesIO()
    torch.save(result.model.state_dict(), buffer)
    (out_dir / "weights.pt").write_bytes(buffer.getvalue())
    (out_dir / "tokenizer.model").write_bytes(result.tokenizer.model_proto)
    config = {"network": dataclasses.asdict(result.net_config), "train": dataclasses.asdict(result.train_config)}
    if result.world_config is not None:
        config["world"] = dataclasses.asdict(result.world_config)
    if result.dataset is not None:
        config["dataset"] = result.dataset
    config["image_size"] = result.world_config.image_size if result.world_config else result.dataset["image_size"]
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    delta, n_cal = result.train_config.delta, result.calibration_products
    targets = []
    for target, certifications in sorted(result.certifications.items()):
        needed = zero_damage_products_needed(target, delta)
        entry = {"target": target, "certification": [dataclasses.asdict(c) for c in certifications],
                 "products_needed": needed}
        if needed > n_cal:
            entry["note"] = (f"certifies nothing: the test needs at least {needed} damage-free certified calibration "
                             f"products at this target, and the calibration split has {n_cal}")
        targets.append(entry)
    strictest = targets[0]
    calibration = {
        "pack_types": [p.value for p in PACK_TYPES], "temperature": result.temperature.tolist(),
        "bias": result.bias.tolist(), "delta": delta, "calibration_products": n_cal, "targets": targets,
        # What workers before per-target certification read, and applied to every marketplace: the strictest
        # target's, the only one safe for all of them.
        "target": strictest["target"], "certification": strictest["certification"],
    }
    (out_dir / "calibration.json").write_text(json.dumps(calibration, indent=2))
    card = {"version": version, "modality": result.net_config.modality.value,
            "imbalance": result.train_config.imbalance.value, "seed": result.train_config.seed,
            "data_fingerprint": result.fingerprint, "train_seconds": round(result.train_seconds, 1),
            "test_metrics": result.test_metrics, "test_metrics_target": max(result.certifications)}
    (out_dir / "metrics.json").write_text(json.dumps(card, indent=2))
    manifest = {"format": BUNDLE_FORMAT, "version": version, "created_at": datetime.now(timezone.utc).isoformat(),
                "seed": result.train_config.seed, "data_fingerprint": result.fingerprint,
                "files": {name: _sha256(out_dir / name) for name in FILES}}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir


class Bundle:
    """A loaded bundle: the network, tokenizer and calibration, ready for batched inference."""

    def __init__(self, path: Path, manifest: dict, config: dict, calibration: dict, card: dict, model: DamageNet,
                 tokenizer: Tokenizer):
        self.path = path
        self.version: str = manifest["version"]
        self.data_fingerprint: str = manifest["data_fingerprint"]
        self.config = config
        self.metrics_card = card
        self.tokenizer = tokenizer
        # bundles from before training on datasets keep it in the world's configuration only
        self.image_size: int = int(config["image_size"] if "image_size" in config else config["world"]["image_size"])
        self.model = _with_traced_backbone(model.eval(), self.image_size)
        self.temperature = np.asarray(calibration["temperature"], dtype=np.float64)
        self.bias = np.asarray(calibration["bias"], dtype=np.float64)
        # Per target, a threshold per type (-1: certifies nothing). A bundle written before per-target
        # certification has one target, "target"; it certifies only where that target is strict enough.
        entries = calibration.get("targets") or [{"target": calibration["target"],
                                                  "certification": calibration["certification"]}]
        self.thresholds: dict[float, np.ndarray] = {
            float(e["target"]): np.asarray([c["threshold"] for c in e["certification"]], dtype=np.float64)
            for e in sorted(entries, key=lambda e: e["target"])}
        self.targets: tuple[float, ...] = tuple(self.thresholds)  # strictest first
        self.delta: float = calibration["delta"]

    def thresholds_for(self, target: float) -> tuple[float | None, np.ndarray]:
        """The thresholds a marketplace with `target` certifies with, and the calibration target they were made
        for (certifying_target); none (-1 everywhere) when the bundle has no target that strict."""
        used = certifying_target(self.targets, target)
        return used, (self.thresholds[used] if used is not None else np.full(len(PACK_TYPES), -1.0))

    def probabilities(self, f: features.Features) -> np.ndarray:
        """Calibrated P(damaged), [B, 4] in PACK_TYPES order (the fast path for evaluation)."""
        return calibrated(predict_logits(self.model, f), self.temperature, self.bias)

    def predict(self, catalog_records: list[dict | None], captures: list[dict | None]) -> list[Prediction]:
        """Score a batch. Item i uses catalog_records[i] and captures[i]; either may be None (that side is
        masked). An item the model cannot see at all (no input of a modality it uses) is certified for
        nothing."""
        if len(catalog_records) != len(captures):
            raise ValueError(f"predict got {len(catalog_records)} catalog records and {len(captures)} captures; "
                             "the lists must have equal length (use None for a missing one).")
        if not catalog_records:
            return []
        probs = self.probabilities(features.from_records(self.tokenizer, catalog_records, captures, self.image_size))
        network = self.model.config
        predictions = []
        for i, (catalog, capture) in enumerate(zip(catalog_records, captures)):
            seen = (network.uses_text and catalog is not None) or (network.uses_images and capture is not None)
            certified = {target: {p: bool(seen and probs[i, t] <= thresholds[t]) for t, p in enumerate(PACK_TYPES)}
                         for target, thresholds in self.thresholds.items()}
            product_id = (catalog or capture or {}).get("product_id")
            predictions.append(Prediction(
                product_id=product_id, probabilities={p: float(probs[i, t]) for t, p in enumerate(PACK_TYPES)},
                certified=certified,
                lightest_certified={target: next((p for p in PACK_TYPES if ok[p]), None)
                                    for target, ok in certified.items()},
                bundle_version=self.version))
        return predictions


def _with_traced_backbone(model: DamageNet, image_size: int) -> DamageNet:
    """The image backbone traced (TorchScript runs its hundred-odd modules without Python in between: a quarter
    off a batch's forward pass, more for small batches), when the traced graph gives the eager one's output
    exactly on a test batch; else the model as it was. Inference only: the trace keeps eval-mode batch norm."""
    if not model.config.uses_images:
        return model
    eager = model.image.backbone
    example = torch.rand(3, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)  # as ImageTower.forward passes its views
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarning on timm's shape checks, none of which varies here
            traced = torch.jit.trace(eager, example[:2])
            same = all(torch.equal(traced(x), eager(x)) for x in (example[:1], example))
    except Exception as error:  # noqa: BLE001 - a backbone that does not trace still scores, eagerly
        log.warning("image backbone %s scores eagerly: it does not trace (%s: %s)", model.config.backbone,
                    type(error).__name__, error)
        return model
    if same:
        model.image.backbone = traced
    else:
        log.warning("image backbone %s scores eagerly: its trace does not reproduce it exactly", model.config.backbone)
    return model


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle directory; raises BundleError naming the path and the problem."""
    path = Path(path)
    set_threads()  # torch's default counts the machine's cores, not the ones this worker may use
    manifest = verify_files(path)
    try:
        config = json.loads((path / "config.json").read_text())
        calibration = json.loads((path / "calibration.json").read_text())
        card = json.loads((path / "metrics.json").read_text())
        network_fields = dict(config["network"], modality=Modality(config["network"]["modality"]))
        model = DamageNet(NetworkConfig(**network_fields))
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        tokenizer = Tokenizer((path / "tokenizer.model").read_bytes())
        config["train"]["imbalance"] = Imbalance(config["train"]["imbalance"]).value
    except Exception as error:  # any decoding failure means the bundle cannot be used
        raise BundleError(f"bundle {path} cannot be loaded: {type(error).__name__}: {error}.") from None
    return Bundle(path, manifest, config, calibration, card, model, tokenizer)
