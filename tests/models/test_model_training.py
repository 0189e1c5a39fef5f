"""The trained model, measured on products it never saw: images add what text cannot know, and the
certified damage rate on fresh worlds stays under the target."""

from __future__ import annotations

import dataclasses
from statistics import NormalDist

import numpy as np
import pytest
import torch

from models import calibrate
from models.evaluate import average_precision
from models.packtypes import PACK_TYPES, PackType
from models.train import predict_logits, world_features
from models.world import World, WorldConfig
from tests.models.conftest import TRAIN_TARGETS

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
    target, delta = min(trained.multimodal.train_config.targets), trained.multimodal.train_config.delta
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


def test_thresholds_exist_per_target_and_a_stricter_target_never_certifies_more(trained) -> None:
    certifications = trained.multimodal.certifications
    assert sorted(certifications) == sorted(TRAIN_TARGETS)
    assert all(len(per_type) == len(PACK_TYPES) for per_type in certifications.values())
    targets = sorted(certifications)
    for stricter, looser in zip(targets, targets[1:]):
        for t, pack in enumerate(PACK_TYPES):
            s, lo = certifications[stricter][t], certifications[looser][t]
            assert s.threshold <= lo.threshold and s.n_certified <= lo.n_certified, (pack, stricter, looser)
    # not vacuous: the loosest target certifies more products than the strictest in some type
    certified = {target: sum(c.n_certified for c in certifications[target]) for target in targets}
    assert certified[targets[-1]] > certified[targets[0]]


def test_certified_damage_rate_per_marketplace_on_a_fresh_world_stays_within_its_target(trained, tmp_path) -> None:
    """The bundle as `packwise evaluate` measures it: each fresh product certified at its own marketplace's target,
    the true damage rate among the certified products of each marketplace and type held against that target.
    Tolerance: the calibration guarantees the rate over all products certified at a target is within it with
    probability 1 - delta; the fresh products are a sample of those, so their rate may exceed the target by
    sampling error, allowed up to z(1 - delta) = 1.645 standard errors."""
    from models.bundle import load_bundle, save_bundle
    from models.evaluate import marketplace_certification
    from streams.marketplaces import DEFAULT_MARKETPLACES

    bundle = load_bundle(save_bundle(trained.multimodal, tmp_path / "bundle"))
    z = NormalDist().inv_cdf(1 - bundle.delta)
    # targets this small world can certify at, as a site's marketplaces file sets them; XX has no threshold
    # strict enough (the bundle's strictest is 0.5%), so nothing may be certified there
    targets = {"NA": 0.02, "EU": 0.01, "JP": 0.007, "XX": 0.004}
    marketplaces = {code: dataclasses.replace(DEFAULT_MARKETPLACES["NA"], code=code, target_damage_rate=target)
                    for code, target in targets.items()}
    world = World.generate(WorldConfig(seed=12, n_products=3000))
    products = [dataclasses.replace(p, marketplace="XX") if i % 10 == 0 else p for i, p in enumerate(world.products)]
    probs = _fresh_probabilities(trained.multimodal, trained.data.tokenizer, world)
    by_market = marketplace_certification(probs, products, marketplaces, bundle.thresholds_for)
    assert {code: m["certified_at"] for code, m in by_market.items()} == {
        "NA": 0.02, "EU": 0.01, "JP": 0.007, "XX": None}
    assert all(c["certified"] == 0 for c in by_market["XX"]["per_type"].values())
    light_certified = 0
    for code in ("NA", "EU", "JP"):
        target = targets[code]
        for pack, c in by_market[code]["per_type"].items():
            print(f"{code} {pack}: {c['certified']} of {by_market[code]['products']} certified, true damage rate "
                  f"{c['damage_rate']} ± {c['standard_error']} (target {target:.2%})")
            if c["certified"] == 0:
                continue
            light_certified += pack != PackType.BOX.value
            assert c["damage_rate"] <= target + z * (c["standard_error"] or 0.0), (code, pack, c)
    assert light_certified >= 5  # lighter types are certified in every marketplace: the check can fail
    # what the bug did: certifying every marketplace with the loosest thresholds would break JP's target
    loose = {code: dataclasses.replace(m, target_damage_rate=0.02) for code, m in marketplaces.items()}
    broken = marketplace_certification(probs, products, loose, bundle.thresholds_for)["JP"]["per_type"]
    assert any((c["damage_rate"] or 0.0) > targets["JP"] + z * (c["standard_error"] or 0.0) for c in broken.values())
