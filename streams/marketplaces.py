"""Per-marketplace configuration: damage targets, credible level, model prior weight, packaging weights and
sizes (boxes, and the largest item a poly bag or padded mailer takes), and the audit share (off by default).

Defaults are approximate industry figures (DESIGN.md); a site replaces them with its own through a JSON
file named by PACKWISE_MARKETPLACES_FILE, whose entries override the defaults field by field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from models.packtypes import PackType
from streams.errors import PackwiseError


Size = tuple[float, float, float]  # millimetres


def within(item_mm: Size, limit_mm: Size) -> bool:
    """Whether an item fits inside `limit_mm` (longest side first) in some orientation."""
    return all(i <= b for i, b in zip(sorted(item_mm, reverse=True), limit_mm))


@dataclass(frozen=True)
class BoxSize:
    """A corrugated box: inner dimensions (longest side first) and its weight including void fill."""

    name: str
    inner_mm: tuple[float, float, float]
    weight_g: float

    def fits(self, item_mm: tuple[float, float, float]) -> bool:
        return within(item_mm, self.inner_mm)


@dataclass(frozen=True)
class Marketplace:
    code: str
    target_damage_rate: float  # certify a package type only if its damage rate is at most this
    credible_level: float  # one-sided level of the credible bounds compared with the target
    model_prior_weight: float  # how many shipments the model's probability counts as in the posterior
    sioc_weight_g: float
    poly_bag_weight_g: float
    padded_mailer_weight_g: float
    boxes: tuple[BoxSize, ...]  # smallest first
    promising_factor: float = 4.0  # a lighter type is worth a physical test if p_model <= factor * target
    # The largest item (longest side first) a bag or mailer takes once sealed: a flat bag loses length and width
    # to the item's thickness. Roughly a 19x24" poly mailer and a #7 (14.25x20") padded mailer.
    poly_bag_max_item_mm: Size = (500.0, 400.0, 150.0)
    padded_mailer_max_item_mm: Size = (400.0, 280.0, 100.0)
    # The share of eligible products shipped, as an audit, one type lighter than the evidence certifies, so that
    # some outcomes in lighter types are chosen without the model's score (streams/policy.py, models/REPORT.md).
    # 0: no audits. A few percent is plenty; each audit risks that product's damage rate in the lighter type.
    audit_share: float = 0.0

    def fits(self, pack: PackType, item_mm: Size) -> bool:
        """Whether the item fits the package type: sioc is its own container, and the largest box is the fallback
        for anything (box_for); bags and mailers have a largest item. An unknown size (zeros) fits."""
        if pack is PackType.POLY_BAG:
            return within(item_mm, self.poly_bag_max_item_mm)
        if pack is PackType.PADDED_MAILER:
            return within(item_mm, self.padded_mailer_max_item_mm)
        return True

    def box_for(self, item_mm: tuple[float, float, float]) -> BoxSize:
        """The smallest box the item fits in (the largest box when nothing fits)."""
        return next((box for box in self.boxes if box.fits(item_mm)), self.boxes[-1])

    def packaging_weight_g(self, pack: PackType, item_mm: tuple[float, float, float]) -> float:
        if pack is PackType.BOX:
            return self.box_for(item_mm).weight_g
        return {PackType.SIOC: self.sioc_weight_g, PackType.POLY_BAG: self.poly_bag_weight_g,
                PackType.PADDED_MAILER: self.padded_mailer_weight_g}[pack]


def certifying_target(calibrated: Iterable[float], target: float) -> float | None:
    """Of the targets a model bundle was calibrated for, the one whose certifications a marketplace with
    `target` may use: `target` itself, else the loosest stricter one (its thresholds are conservative
    there). None when every calibrated target is looser: a verdict made for a looser target never counts."""
    usable = [t for t in calibrated if t <= target * (1 + 1e-9)]  # 1e-9: the same rate written another way
    return max(usable) if usable else None


def targets_of(marketplaces: Mapping[str, Marketplace]) -> tuple[float, ...]:
    """The distinct damage targets of a marketplace configuration, strictest first."""
    return tuple(sorted({m.target_damage_rate for m in marketplaces.values()}))


_BOXES = (
    BoxSize("S", (250.0, 180.0, 100.0), 150.0),
    BoxSize("M", (350.0, 250.0, 150.0), 260.0),
    BoxSize("L", (450.0, 350.0, 250.0), 420.0),
    BoxSize("XL", (600.0, 450.0, 400.0), 600.0),
)

DEFAULT_MARKETPLACES: dict[str, Marketplace] = {
    "NA": Marketplace("NA", 0.005, 0.95, 200.0, 5.0, 20.0, 70.0, _BOXES),
    # EU and JP ship shorter distances with stricter damage expectations and lighter mailers.
    "EU": Marketplace("EU", 0.004, 0.95, 200.0, 5.0, 18.0, 60.0, _BOXES),
    "JP": Marketplace("JP", 0.003, 0.95, 200.0, 5.0, 15.0, 55.0,
                      tuple(replace(b, weight_g=b.weight_g * 0.9) for b in _BOXES)),
}


def load_marketplaces(path: str | None) -> dict[str, Marketplace]:
    """The defaults, with the overrides of a JSON file `{"EU": {"target_damage_rate": 0.003}, ...}`."""
    if not path:
        return dict(DEFAULT_MARKETPLACES)
    try:
        overrides: Mapping[str, Mapping[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PackwiseError(f"PACKWISE_MARKETPLACES_FILE={path} cannot be read as JSON: {error}") from None
    known = {f.name for f in fields(Marketplace)} - {"code", "boxes"}
    sizes = {"poly_bag_max_item_mm", "padded_mailer_max_item_mm"}
    result = dict(DEFAULT_MARKETPLACES)
    for code, values in overrides.items():
        unknown = set(values) - known
        if unknown:
            raise PackwiseError(f"PACKWISE_MARKETPLACES_FILE={path}: unknown keys {sorted(unknown)} for {code}; "
                                f"accepted: {sorted(known)}")
        base = result.get(code, replace(DEFAULT_MARKETPLACES["NA"], code=code))
        result[code] = replace(base, **{k: _size(path, code, k, v) if k in sizes else float(v)
                                        for k, v in values.items()})
        if not 0.0 <= result[code].audit_share <= 1.0:
            raise PackwiseError(f"PACKWISE_MARKETPLACES_FILE={path}: audit_share for {code} is "
                                f"{values['audit_share']!r}; give a share between 0 (no audits) and 1, e.g. 0.02")
    return result


def _size(path: str, code: str, key: str, value: Any) -> Size:
    """[length, width, height] in mm, any order, as the longest side first."""
    try:
        size = tuple(sorted((float(v) for v in value), reverse=True))
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or not all(0 < v < float("inf") for v in size):
        raise PackwiseError(f"PACKWISE_MARKETPLACES_FILE={path}: {key} for {code} is {value!r}; give the largest "
                            "item's three sides in mm, e.g. [500, 400, 150]")
    return size  # type: ignore[return-value]
