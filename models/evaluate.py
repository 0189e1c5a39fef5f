"""Measuring a damage model against the world's hidden truth, and the report pages and plots.

Metrics use the hidden per-product damage probability as the label weight (a product with true
p = 2% counts 0.02 as a damaged shipment and 0.98 as an undamaged one): the limit of infinitely many
audit shipments, so comparisons between models are not drowned in Bernoulli noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.calibrate import clopper_pearson_upper  # noqa: E402
from models.packtypes import PACK_TYPES, PackType  # noqa: E402
from models.world import Product  # noqa: E402
from streams.marketplaces import DEFAULT_MARKETPLACES, Marketplace  # noqa: E402

PACK_WEIGHT_G = {PackType.SIOC: 5.0, PackType.POLY_BAG: 20.0, PackType.PADDED_MAILER: 70.0}
# Corrugated boxes: inner length, width, height (mm) and weight (g); the smallest fitting one is used.
BOXES = ((200, 150, 100, 150.0), (300, 250, 150, 250.0), (400, 300, 250, 380.0), (600, 400, 400, 600.0))
BOX_PADDING_MM = 10.0


def box_weight_g(length_mm: float, width_mm: float, height_mm: float) -> float:
    dims = sorted((length_mm + BOX_PADDING_MM, width_mm + BOX_PADDING_MM, height_mm + BOX_PADDING_MM), reverse=True)
    for box_l, box_w, box_h, grams in BOXES:
        if dims[0] <= box_l and dims[1] <= box_w and dims[2] <= box_h:
            return grams
    return BOXES[-1][3]


def pr_curve(scores: np.ndarray, damage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of flagging damage (high score first), weighted by the true probability."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(damage[order])
    fp = np.cumsum(1.0 - damage[order])
    return tp / np.maximum(tp + fp, 1e-12), tp / max(tp[-1], 1e-12)


def average_precision(scores: np.ndarray, damage: np.ndarray) -> float:
    """Area under the precision–recall curve (step-wise, as average precision)."""
    precision, recall = pr_curve(scores, damage)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def metrics(probs: np.ndarray, thresholds: np.ndarray, products: list[Product]) -> dict:
    """PR-AUC, certification coverage and risk per package type; the packing plan's weight saved. `thresholds`:
    one per type, or one per product and type (each product at its marketplace's target)."""
    truth = np.asarray([p.damage_probability for p in products])
    thresholds = np.broadcast_to(thresholds, probs.shape)
    certified = probs <= thresholds
    per_type = {}
    for t, pack in enumerate(PACK_TYPES):
        c = certified[:, t]
        uniform = len(products) > 0 and bool((thresholds[:, t] == thresholds[0, t]).all())
        per_type[pack.value] = {
            "pr_auc": average_precision(probs[:, t], truth[:, t]),
            "base_damage_rate": float(truth[:, t].mean()),
            "threshold": float(thresholds[0, t]) if uniform else None,
            "coverage": float(c.mean()),
            "certified_damage_rate": float(truth[c, t].mean()) if c.any() else 0.0,
            # Recall at the certification precision: the share of undamaged shipments that get certified.
            "safe_recall": float((1 - truth[c, t]).sum() / (1 - truth[:, t]).sum()),
        }
    # The plan: the lightest certified type the item fits (bags and mailers as the worker's defaults), else a box.
    box = len(PACK_TYPES) - 1
    sizes = DEFAULT_MARKETPLACES["NA"]
    fits = np.asarray([[sizes.fits(pack, (p.length_mm, p.width_mm, p.height_mm)) for pack in PACK_TYPES]
                       for p in products], dtype=bool).reshape(len(products), len(PACK_TYPES))
    usable = certified & fits
    chosen = np.where(usable[:, :box].any(1), np.argmax(usable[:, :box], axis=1), box)
    box_weights = np.asarray([box_weight_g(p.length_mm, p.width_mm, p.height_mm) for p in products])
    light_weights = np.asarray([PACK_WEIGHT_G[PACK_TYPES[t]] for t in range(box)] + [0.0])
    chosen_weights = np.where(chosen == box, box_weights, light_weights[chosen])
    moved = chosen != box
    chosen_risk = truth[np.arange(len(products)), chosen]
    return {
        "per_type": per_type,
        "n_products": len(products),
        "coverage_lighter_than_box": float(moved.mean()),
        "weight_saved_share": float((box_weights - chosen_weights).sum() / box_weights.sum()),
        "weight_saved_g_per_product": float((box_weights - chosen_weights).mean()),
        "damage_rate_of_moved": float(chosen_risk[moved].mean()) if moved.any() else 0.0,
        "damage_rate_of_plan": float(chosen_risk.mean()),
    }


def observed_average_precision(scores: np.ndarray, damaged: np.ndarray, shipments: np.ndarray) -> float | None:
    """Average precision of flagging damage (high score first) from observed outcomes: a product's damaged shipments
    count as positives, its other shipments as negatives. None when no shipment was damaged."""
    order = np.argsort(-scores, kind="stable")
    tp, fp = np.cumsum(damaged[order]), np.cumsum((shipments - damaged)[order])
    if not len(tp) or tp[-1] <= 0:
        return None
    precision, recall = tp / np.maximum(tp + fp, 1e-12), tp / tp[-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def observed_metrics(probs: np.ndarray, thresholds: np.ndarray, damaged: np.ndarray, shipments: np.ndarray,
                     delta: float = 0.05) -> dict:
    """What a shipment history can measure, per package type, among the products that shipped in it: PR-AUC from
    the observed damages, the observed damage rate, the share certified and the observed damage rate of their
    shipments, with its one-sided (1 - delta) Clopper-Pearson upper bound. `thresholds`: one per type, or one
    per product and type (each product at its marketplace's target). Damages are the reported ones."""
    thresholds = np.broadcast_to(thresholds, probs.shape)
    per_type = {}
    for t, pack in enumerate(PACK_TYPES):
        shipped = shipments[:, t] > 0
        n, k = int(shipments[shipped, t].sum()), int(damaged[shipped, t].sum())
        certified = shipped & (probs[:, t] <= thresholds[:, t])
        cn, ck = int(shipments[certified, t].sum()), int(damaged[certified, t].sum())
        uniform = bool(len(probs)) and bool((thresholds[:, t] == thresholds[0, t]).all())
        per_type[pack.value] = {
            "products": int(shipped.sum()), "shipments": n, "damaged": k,
            "pr_auc": observed_average_precision(probs[shipped, t], damaged[shipped, t], shipments[shipped, t]),
            "base_damage_rate": k / n if n else None,
            "threshold": float(thresholds[0, t]) if uniform else None,
            "coverage": float(certified.sum() / shipped.sum()) if shipped.any() else None,
            "certified_products": int(certified.sum()), "certified_shipments": cn, "certified_damaged": ck,
            "certified_damage_rate": ck / cn if cn else None,
            "certified_upper_bound": clopper_pearson_upper(ck, cn, delta) if cn else None,
        }
    return {"per_type": per_type, "n_products": len(probs), "labels": "observed (reported damages)"}


def marketplace_certification(probs: np.ndarray, products: list[Product], marketplaces: Mapping[str, Marketplace],
                              thresholds_for: Callable[[float], tuple[float | None, np.ndarray]]) -> dict[str, dict]:
    """Per marketplace the products sell in: each certified as the worker certifies it, with the thresholds its
    marketplace's target takes (`thresholds_for(target)` -> the calibration target used, or None, and a threshold
    per type), and per type how many were certified and the true damage rate among them (the mean of their hidden
    damage probability, with its standard error over the products), to hold against the target."""
    truth = np.asarray([p.damage_probability for p in products])
    codes = np.asarray([p.marketplace for p in products])
    result = {}
    for code, market in marketplaces.items():
        mine = codes == code
        if not mine.any():
            continue
        used, thresholds = thresholds_for(market.target_damage_rate)
        per_type = {}
        for t, pack in enumerate(PACK_TYPES):
            rates = truth[mine, t][probs[mine, t] <= thresholds[t]]
            per_type[pack.value] = {
                "threshold": float(thresholds[t]), "certified": len(rates),
                "damage_rate": float(rates.mean()) if len(rates) else None,
                "standard_error": float(rates.std(ddof=1) / np.sqrt(len(rates))) if len(rates) > 1 else None,
            }
        result[code] = {"target": market.target_damage_rate, "certified_at": used, "products": int(mine.sum()),
                        "per_type": per_type}
    return result


def marketplace_table(by_market: dict[str, dict]) -> str:
    """A markdown table of marketplace_certification: a row per marketplace and package type."""
    lines = ["| marketplace | target | thresholds made for | products | type | certified | true damage rate among "
             "them | within target |", "|" + "---|" * 8]
    for code, m in by_market.items():
        made_for = f"{m['certified_at']:.2%}" if m["certified_at"] is not None else "none (certifies nothing)"
        for pack, c in m["per_type"].items():
            rate = "-" if c["damage_rate"] is None else f"{c['damage_rate']:.3%}"
            if c["standard_error"] is not None:
                rate += f" ± {c['standard_error']:.3%}"
            within = "-" if c["damage_rate"] is None else ("yes" if c["damage_rate"] <= m["target"] else "**no**")
            lines.append(f"| {code} | {m['target']:.2%} | {made_for} | {m['products']:,} | {pack} | "
                         f"{c['certified']:,} | {rate} | {within} |")
    return "\n".join(lines)


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, list[Product]]], path: Path) -> None:
    """One panel per package type, one curve per model."""
    fig, axes = plt.subplots(1, len(PACK_TYPES), figsize=(4 * len(PACK_TYPES), 3.6))
    for name, (probs, products) in curves.items():
        truth = np.asarray([p.damage_probability for p in products])
        for t, ax in enumerate(axes):
            precision, recall = pr_curve(probs[:, t], truth[:, t])
            ax.plot(recall, precision, label=f"{name} (AP {average_precision(probs[:, t], truth[:, t]):.3f})")
    for t, ax in enumerate(axes):
        ax.set(title=f"damage in {PACK_TYPES[t].value}", xlabel="recall", ylabel="precision", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reliability(probs: np.ndarray, products: list[Product], path: Path) -> None:
    """Calibrated probability against the true damage probability, in quantile bins per package type."""
    truth = np.asarray([p.damage_probability for p in products])
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for t, pack in enumerate(PACK_TYPES):
        order = np.argsort(probs[:, t])
        bins = np.array_split(order, 12)
        ax.plot([probs[b, t].mean() for b in bins], [truth[b, t].mean() for b in bins], "o-", label=pack.value, ms=3)
    ax.plot([1e-5, 1], [1e-5, 1], "k:", lw=1)
    ax.set(xscale="log", yscale="log", xlim=(1e-5, 0.3), ylim=(1e-5, 0.3), xlabel="predicted P(damage)",
           ylabel="true P(damage)", title="reliability")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_coverage_risk(curves: dict[str, tuple[np.ndarray, list[Product]]], targets: float | Sequence[float],
                       path: Path) -> None:
    """Share of products certified against the true damage rate among them, as the threshold moves."""
    fig, axes = plt.subplots(1, len(PACK_TYPES), figsize=(4 * len(PACK_TYPES), 3.6))
    for name, (probs, products) in curves.items():
        truth = np.asarray([p.damage_probability for p in products])
        for t, ax in enumerate(axes):
            order = np.argsort(probs[:, t])
            n = np.arange(1, len(order) + 1)
            ax.plot(n / len(order), np.cumsum(truth[order, t]) / n, label=name)
    for t, ax in enumerate(axes):
        for target in np.atleast_1d(targets):
            ax.axhline(target, color="k", ls=":", lw=1)
        ax.set(title=PACK_TYPES[t].value, xlabel="coverage", ylabel="damage rate among certified", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def metrics_table(rows: dict[str, dict]) -> str:
    """A markdown table: one row per model, PR-AUC and certification per package type, plan savings."""
    head = ["model"] + [f"PR-AUC {p.value}" for p in PACK_TYPES[:3]] + \
           [f"safe-recall {p.value}" for p in PACK_TYPES[:3]] + \
           ["coverage < box", "weight saved", "g saved/product", "damage rate of moved"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows.items():
        cells = [name] + [f"{m['per_type'][p.value]['pr_auc']:.3f}" for p in PACK_TYPES[:3]] + \
                [f"{m['per_type'][p.value]['safe_recall']:.1%}" for p in PACK_TYPES[:3]] + \
                [f"{m['coverage_lighter_than_box']:.1%}", f"{m['weight_saved_share']:.1%}",
                 f"{m['weight_saved_g_per_product']:.0f}", f"{m['damage_rate_of_moved']:.3%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(title: str, command: str, curves: dict[str, tuple[np.ndarray, list[Product]]],
                 rows: dict[str, dict], target: float | Sequence[float], out_dir: Path, notes: str = "",
                 plots_folder: str = "report", sections: str = "") -> Path:
    """A markdown page with the metrics table, any further `sections` (markdown) and the three plots, in
    `plots_folder` under out_dir ("": beside the page; the model report keeps its plots in models/report/)."""
    out_dir = Path(out_dir)
    plots = out_dir / plots_folder
    plots.mkdir(parents=True, exist_ok=True)
    link = f"{plots_folder}/" if plots_folder else ""
    plot_pr_curves(curves, plots / "pr_curves.png")
    first = next(iter(curves))
    plot_reliability(*curves[first], plots / "reliability.png")
    plot_coverage_risk(curves, target, plots / "coverage_risk.png")
    page = out_dir / "REPORT.md"
    page.write_text(f"# {title}\n\nRegenerate with:\n\n```\n{command}\n```\n\n{notes}\n\n"
                    f"## Metrics on fresh products\n\n{metrics_table(rows)}\n\n{sections}"
                    f"![precision-recall]({link}pr_curves.png)\n\n"
                    f"![reliability ({first})]({link}reliability.png)\n\n"
                    f"![coverage vs risk]({link}coverage_risk.png)\n")
    return page
