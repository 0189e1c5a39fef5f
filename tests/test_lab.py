"""The simulated test lab (streams/lab.py): outcomes from the world's hidden truth, the most valuable requests
first, each request answered once."""

from __future__ import annotations

import dataclasses

import numpy as np

from models.packtypes import PackType
from models.world import Material, World, WorldConfig
from streams.lab import SimulatedLab, run_test

PRODUCTS = World.generate(WorldConfig(seed=3, n_products=200)).products


def product(material: Material, damage: tuple[float, float, float, float]):
    base = next(p for p in PRODUCTS if p.material is material)
    return dataclasses.replace(base, damage_probability=damage)


def test_fragile_items_are_tested_on_five_units_others_on_one() -> None:
    rng = np.random.default_rng(1)
    assert run_test(product(Material.GLASS, (0, 0, 0, 0)), PackType.SIOC, rng).samples_tested == 5
    assert run_test(product(Material.FABRIC, (0, 0, 0, 0)), PackType.SIOC, rng).samples_tested == 1


def test_a_test_passes_what_ships_safely_and_fails_what_breaks() -> None:
    rng = np.random.default_rng(2)
    safe = product(Material.GLASS, (0.0001, 0.0001, 0.0001, 0.0))
    fragile = product(Material.GLASS, (0.30, 0.20, 0.15, 0.0005))  # a sabotaged product's truth
    assert sum(run_test(safe, PackType.POLY_BAG, rng).passed for _ in range(200)) >= 190
    outcomes = [run_test(fragile, PackType.POLY_BAG, rng) for _ in range(200)]
    assert sum(o.passed for o in outcomes) == 0
    assert all(o.failure_codes == ("BROKEN",) * (o.samples_tested - o.samples_passed) for o in outcomes)


def request(product_id: str, grams: float, request_id: str) -> dict:
    return {"event_id": request_id, "request_id": request_id, "product_id": product_id, "marketplace": "NA",
            "package_type": "poly_bag", "weight_saved_g": grams}


def test_the_lab_answers_the_biggest_savings_first_and_each_request_once() -> None:
    sent: list[dict] = []
    lab = SimulatedLab({p.product_id: p for p in PRODUCTS[:3]}, 2, np.random.default_rng(3),
                  lambda _product, record: sent.append(record))
    queue = [request(PRODUCTS[0].product_id, 10.0, "a"), request(PRODUCTS[1].product_id, 90.0, "b"),
             request(PRODUCTS[2].product_id, 50.0, "c"), request("unknown-product", 500.0, "d")]
    assert lab.round(queue) == 2
    assert [r["request_id"] for r in sent] == ["b", "c"]
    assert lab.round(queue) == 1 and sent[-1]["request_id"] == "a"
    assert lab.round(queue) == 0 and len(sent) == 3  # nothing left that it has not answered
    assert {r["lab"] for r in sent} == {"LAB-SIM-1"} and all(r["protocol"].startswith("ISTA 6") for r in sent)
