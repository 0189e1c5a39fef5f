"""The trained model, measured on products it never saw: images add what text cannot know, and the
certified damage rate on fresh worlds stays under the target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import calibrate
from models.evaluate import average_precision
from models.packtypes import PACK_TYPES, PackType
from models.train import predict_logits, world_features
from models.world import World, WorldConfig

LIGHTER = PACK_TYPES[:3]
pytestmark = pytest.mark.slow


def _fresh_probabilities(result, tokenizer, world: World) -> np.ndarray:
    f = world_features(world, tokenizer, np.arange(len(world.products)), show_progress=False)
    return calibrate.calibrated(predict_logits(result.model, f), result.temperature, result.bias)


def test_multimodal_beats_text_only_on_lighter_package_types(trained) -> None:
    fresh = World.generate(WorldConfig(seed=12, n_products=1200))
    truth = fresh.truth()
    ap = {name: [average_precision(_fresh_probabilities(result, trained.data.tokenizer, fresh)[:, p.index],
                                   truth[:, p.index]) for p in LIGHTER]
          for name, result in (("multimodal", trained.multimodal), ("text", trained.text))}
    print("PR-AUC on fresh products (sioc, poly_bag, padded_mailer):", ap)
    assert np.mean(ap["multimodal"]) > np.mean(ap["text"])
    assert sum(m > t for m, t in zip(ap["multimodal"], ap["text"])) >= 2
    # Both learned something: better than ranking at random (PR-AUC = base rate).
    assert all(a > 1.3 * truth[:, p.index].mean() for a, p in zip(ap["text"], LIGHTER))


def test_training_learned_which_products_are_fragile(trained) -> None:
    test = trained.data.splits["test"]
    probs = calibrate.calibrated(predict_logits(trained.multimodal.model,
                                                trained.data.features.select(torch.as_tensor(test))),
                                 trained.multimodal.temperature, trained.multimodal.bias)
    truth = trained.data.world.truth()[test]
    correlation = np.corrcoef(np.log(probs[:, PackType.SIOC.index]), np.log(truth[:, PackType.SIOC.index]))[0, 1]
    assert correlation > 0.4


def test_certified_damage_rate_on_fresh_worlds_stays_within_target(trained) -> None:
    """Each draw is an independent world: a calibration sample with one audit shipment per product and
    type sets the thresholds; the true damage rate among certified products of a fresh sample is then
    compared with the target. The guarantee allows a violation with probability delta per type and draw."""
    target, delta = trained.multimodal.train_config.target, trained.multimodal.train_config.delta
    violations, checks, certified_types = 0, 0, 0
    for draw in range(3):
        world = World.generate(WorldConfig(seed=100 + draw, n_products=2000))
        probs = _fresh_probabilities(trained.multimodal, trained.data.tokenizer, world)
        audit = world.audit(np.random.default_rng(200 + draw))
        grid_audit = world.audit(np.random.default_rng(300 + draw), shipments=10)
        truth = world.truth()
        cal, grid, test = np.arange(0, 1300), np.arange(1300, 1550), np.arange(1550, 2000)
        for t, pack in enumerate(PACK_TYPES):
            threshold = calibrate.certify_threshold(probs[cal, t], audit[cal, t], probs[grid, t],
                                                    grid_audit[grid, t], 10, target, delta).threshold
            certified = test[probs[test, t] <= threshold]
            if len(certified) == 0:
                continue
            certified_types += 1
            checks += 1
            rate = truth[certified, t].mean()
            print(f"draw {draw} {pack.value}: {len(certified)} certified, true damage rate {rate:.4%}")
            violations += rate > target
    assert certified_types >= 3  # something is certified in every draw, so the check can fail
    assert violations <= 1, f"{violations} of {checks} certified sets exceeded the {target:.1%} target"
