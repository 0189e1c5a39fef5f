"""Calibration (temperature scaling) and certification thresholds with a finite-sample guarantee.

The guarantee, per package type t: let R_t(λ) = E[ p_t(X) | p̂_t(X) ≤ λ ] be the damage rate of a
shipment in type t of a product drawn from the product population and certified at threshold λ —
the mean of the true per-product damage probability over certified products (equivalently the long-run
share of damaged shipments if every certified product ships equally often). Then

    P( R_t(λ̂_t) ≤ α ) ≥ 1 − δ   over the draw of the calibration products and their audit outcomes.

Why it holds: calibration products are i.i.d. from the population, each with one fully observed audit
shipment per type, so among the n_λ products with p̂ ≤ λ the damage count is exactly
Binomial(n_λ, R_t(λ)) given n_λ. The p-value P(Bin(n_λ, α) ≤ k_λ) is valid for H_λ: R_t(λ) > α.
Thresholds come from a grid fixed before looking at calibration labels (score quantiles on the
separate temperature split) and are tested in a fixed sequence, stopping at the first non-rejection
(Learn-then-Test with fixed-sequence testing): the family-wise error is ≤ δ without a Bonferroni
correction. The sequence starts at the threshold the temperature split predicts most likely to pass
(small thresholds certify too few products for any test to reject, so starting at the smallest would
end the sequence at once) and moves to larger thresholds; the order depends only on the separate
split, which keeps the guarantee. Certifying nothing is always allowed.

A bundle is certified at several targets (one per marketplace target, `certify_targets`), each with this
guarantee for its own α; a marketplace then certifies with its own target's thresholds, or a stricter
target's (R ≤ α' ≤ α), never a looser one's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

GRID_LEVELS = np.linspace(0.02, 1.0, 50)  # score quantiles tested, in increasing order from the start


def fit_temperature(logits: np.ndarray, damaged: np.ndarray, trials: np.ndarray,
                    ridge: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per package type a temperature T and an offset b minimising the binomial NLL of
    sigmoid(logit / T + b) on held-out data.

    The offset undoes prior shifts that a temperature alone cannot: resampling or class weights during
    training, and training on under-reported damages while audits see every damage. `ridge` pulls log T and b
    towards 0: a type whose held-out shipments saw no damage would otherwise drive b, and every probability of
    that type, to zero."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    k = torch.as_tensor(damaged, dtype=torch.float64)
    n = torch.as_tensor(trials, dtype=torch.float64)
    log_t = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t, bias], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        s = z / log_t.exp() + bias
        loss = (k * torch.nn.functional.softplus(-s) + (n - k) * torch.nn.functional.softplus(s)).sum() / n.sum()
        if ridge:
            loss = loss + ridge * (log_t.square() + bias.square()).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().exp().numpy(), bias.detach().numpy()


def calibrated(logits: np.ndarray, temperature: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * (logits / temperature + bias)))  # a sigmoid that cannot overflow


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) ≤ k), an exact sum in log space (k is small: damages are rare)."""
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """One-sided (1 − δ) Clopper–Pearson upper bound on a binomial rate: the p with P(Bin(n, p) ≤ k) = δ."""
    if n == 0 or k >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binomial_cdf(k, n, mid) > delta else (lo, mid)
    return hi


def zero_damage_products_needed(target: float, delta: float) -> int:
    """The fewest certified calibration products that can pass the test at `target`, all of them undamaged:
    the smallest n with (1 − target)^n ≤ δ. With fewer, nothing is ever certified, whatever the model."""
    n = math.ceil(math.log(delta) / math.log1p(-target))
    while binomial_cdf(0, n, target) > delta:  # the logarithms' rounding, should it fall short
        n += 1
    return n


def lowest_certifiable_target(n: int, delta: float) -> float:
    """The lowest target n calibration products can certify at, every one of them certified and undamaged."""
    return 1.0 - delta ** (1.0 / n) if n else 1.0


@dataclass(frozen=True)
class Certification:
    threshold: float  # certify when calibrated P(damaged) ≤ threshold; -1 certifies nothing
    n_certified: int  # calibration products under the threshold
    n_damaged: int  # of those, damaged in their audit shipment
    upper_bound: float  # Clopper–Pearson (1 − δ) upper bound on their damage rate


def _most_powerful(grid: np.ndarray, grid_scores: np.ndarray, grid_damaged: np.ndarray,
                   grid_shipments: int | np.ndarray, n: int, target: float, delta: float) -> int:
    """Index of the grid threshold whose test on n calibration products is most likely to reject, as
    predicted from the separate split alone: where the sequence starts."""
    best, best_power = len(grid), 0.0
    shipments = np.broadcast_to(grid_shipments, grid_scores.shape)
    for i, threshold in enumerate(grid):
        certified = grid_scores <= threshold
        expected_n = int(round(certified.mean() * n))
        critical = next((k for k in range(expected_n + 1) if binomial_cdf(k, expected_n, target) > delta), 0) - 1
        if critical < 0:
            continue
        # A slightly pessimistic rate, so a split that saw no damage does not promise certainty.
        rate = (grid_damaged[certified].sum() + 0.5) / (shipments[certified].sum() + 1)
        power = binomial_cdf(critical, expected_n, rate)
        if power > best_power:
            best, best_power = i, power
    return best


def certify_threshold(scores: np.ndarray, damaged: np.ndarray, grid_scores: np.ndarray, grid_damaged: np.ndarray,
                      grid_shipments: int | np.ndarray, target: float, delta: float,
                      cap: float | None = None) -> Certification:
    """The largest threshold passing the fixed-sequence binomial test on the calibration products.

    scores, damaged: calibration products (one audit shipment each). grid_scores, grid_damage_rate: a
    separate split (scores, and damages out of grid_shipments shipments: a number for every product, or one per
    product), used only to place the grid and pick where the
    sequence starts; the calibration labels never influence the order of the tests. `cap`: the sequence also
    stops before any threshold above it (a cap below zero certifies nothing). Stopping earlier only drops
    rejections of the full sequence, so the guarantee holds whatever the cap, even one the labels chose."""
    if len(scores) == 0 or len(grid_scores) == 0:
        return Certification(-1.0, 0, 0, 1.0)
    grid = np.quantile(grid_scores, GRID_LEVELS)
    start = _most_powerful(grid, grid_scores, grid_damaged, grid_shipments, len(scores), target, delta)
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_damaged = scores[order], np.cumsum(damaged[order])
    best = Certification(-1.0, 0, 0, 1.0)
    for threshold in grid[start:]:
        if cap is not None and threshold > cap:
            break
        n = int(np.searchsorted(sorted_scores, threshold, side="right"))
        k = int(sorted_damaged[n - 1]) if n else 0
        if n == 0 or binomial_cdf(k, n, target) > delta:
            break
        best = Certification(float(threshold), n, k, clopper_pearson_upper(k, n, delta))
    return best


def certify_targets(scores: np.ndarray, damaged: np.ndarray, grid_scores: np.ndarray, grid_damaged: np.ndarray,
                    grid_shipments: int | np.ndarray, targets: tuple[float, ...], delta: float,
                    observed: np.ndarray | None = None) -> dict[float, list[Certification]]:
    """Certification per target and package type (columns of the [n, types] arrays), each target with its
    own (1 − δ) guarantee. Targets are certified loosest first, and a stricter target's sequence is capped
    at the looser one's threshold: a stricter target never certifies a product that a looser one does not
    (without the cap it could, when its sequence starts lower on the grid and the looser one's first test
    fails).

    From a shipment history rather than audits: `grid_shipments` [m, types] holds what each grid product shipped in
    each type (those that shipped none in a type are left out of its grid), and `observed` [n, types] says which
    calibration products have an outcome in a type (one shipment each; the others are left out of its test)."""
    result: dict[float, list[Certification]] = {}
    caps: list[float | None] = [None] * scores.shape[1]
    mine = np.ones(scores.shape, dtype=bool) if observed is None else observed
    shipments = np.broadcast_to(grid_shipments, grid_scores.shape)
    grid_rows = np.ones(grid_scores.shape, dtype=bool) if np.ndim(grid_shipments) == 0 else shipments > 0
    for target in sorted(set(targets), reverse=True):
        result[target] = [certify_threshold(scores[mine[:, t], t], damaged[mine[:, t], t],
                                            grid_scores[grid_rows[:, t], t], grid_damaged[grid_rows[:, t], t],
                                            grid_shipments if np.ndim(grid_shipments) == 0
                                            else shipments[grid_rows[:, t], t], target, delta, caps[t])
                          for t in range(scores.shape[1])]
        caps = [c.threshold for c in result[target]]
    return dict(sorted(result.items()))
