"""Six ways to learn from ~1% damaged shipments, selected by one flag.

Training examples are shipments, aggregated per (product, package type) into counts of reported
damages (positives) and the rest (negatives). Data-based strategies redraw those counts every epoch
(a multiplicity per shipment, exactly what duplicating or dropping rows would do); loss-based ones
reweight or reshape the loss. The loss only ever counts the package types a product shipped in.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from models.options import Imbalance  # noqa: F401 - re-exported: models.imbalance.Imbalance


def epoch_counts(strategy: Imbalance, positives: np.ndarray, negatives: np.ndarray, phase_one: bool,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """This epoch's (positive, negative) multiplicities, float [n_products, 4]."""
    pos, neg = positives.astype(np.int64), negatives.astype(np.int64)
    if strategy == Imbalance.OVERSAMPLE:
        pos = np.stack([rng.multinomial(neg[:, t].sum(), pos[:, t] / max(pos[:, t].sum(), 1))
                        if pos[:, t].sum() else pos[:, t] for t in range(pos.shape[1])], 1)
    elif strategy == Imbalance.UNDERSAMPLE or strategy == Imbalance.TWO_PHASE and phase_one:
        neg = np.stack([rng.multivariate_hypergeometric(neg[:, t], min(max(pos[:, t].sum(), 1), neg[:, t].sum()))
                        for t in range(neg.shape[1])], 1)
    return pos.astype(np.float32), neg.astype(np.float32)


def positive_weight(strategy: Imbalance, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Per-package-type weight on positives (class-weighted loss), 1 otherwise."""
    if strategy != Imbalance.CLASS_WEIGHT:
        return np.ones(positives.shape[1], dtype=np.float32)
    return (negatives.sum(0) / np.maximum(positives.sum(0), 1)).astype(np.float32)


def damage_loss(logits: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                focal_gamma: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy summed over shipments (counts as weights), focal when gamma > 0, divided
    by the number of shipments in the batch."""
    loss_pos, loss_neg = F.softplus(-logits), F.softplus(logits)  # -log p, -log(1-p)
    if focal_gamma > 0:
        p = torch.sigmoid(logits)
        loss_pos = loss_pos * (1 - p).pow(focal_gamma)
        loss_neg = loss_neg * p.pow(focal_gamma)
    return (positives * loss_pos + negatives * loss_neg).sum() / (positives + negatives).sum().clamp(min=1)


def smote_embeddings(embeddings: np.ndarray, positives: np.ndarray, negatives: np.ndarray, rng: np.random.Generator,
                     k: int = 5, max_per_type: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE in embedding space: per package type, synthetic positives on segments between a positive
    example and one of its k nearest positive neighbours, up to the negatives' count.

    Returns (synthetic embeddings [m, D], positive multiplicity [m, 4], 1 only for its own type)."""
    new_embeddings, new_positives = [], []
    for t in range(positives.shape[1]):
        idx = np.flatnonzero(positives[:, t] > 0)
        wanted = int(min(negatives[:, t].sum() - positives[:, t].sum(), max_per_type))
        if len(idx) < 2 or wanted <= 0:
            continue
        base = embeddings[idx]
        distances = ((base[:, None, :] - base[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(distances, np.inf)
        neighbours = np.argsort(distances, axis=1)[:, :min(k, len(idx) - 1)]
        # Seeds drawn in proportion to their positive counts, like duplicated rows would be.
        seeds = rng.choice(len(idx), size=wanted, p=positives[idx, t] / positives[idx, t].sum())
        partners = neighbours[seeds, rng.integers(0, neighbours.shape[1], size=wanted)]
        lam = rng.random((wanted, 1))
        new_embeddings.append(base[seeds] + lam * (base[partners] - base[seeds]))
        target = np.zeros((wanted, positives.shape[1]), dtype=np.float32)
        target[:, t] = 1.0
        new_positives.append(target)
    if not new_embeddings:
        return np.zeros((0, embeddings.shape[1]), np.float32), np.zeros((0, positives.shape[1]), np.float32)
    return np.concatenate(new_embeddings).astype(np.float32), np.concatenate(new_positives)
