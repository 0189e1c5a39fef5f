"""The model card's packing plan: the weight it saves counts only packages the items fit."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluate import PACK_WEIGHT_G, box_weight_g, metrics
from models.packtypes import PackType
from models.world import Material, Product, Shape, VendorPackaging


def product(product_id: str, length: float, width: float, height: float) -> Product:
    return Product(product_id, 1, "lamp", "Home > Lighting", Material.PLASTIC, VendorPackaging.RETAIL_BOX, Shape.BOXY,
                   1, length, width, height, 500.0, 20.0, "NA", "en_US", 0, "Acme", (0.01, 0.001, 0.001, 0.0001))


def test_the_plan_puts_an_item_too_big_for_a_bag_in_a_box() -> None:
    mug, lamp = product("MUG", 120.0, 95.0, 90.0), product("LAMP", 420.0, 300.0, 200.0)
    probs = np.array([[0.01, 0.001, 0.001, 0.0001]] * 2)
    thresholds = np.array([0.005, 0.005, 0.005, 0.005])  # poly_bag certified for both
    result = metrics(probs, thresholds, [mug, lamp])
    mug_saved = box_weight_g(120.0, 95.0, 90.0) - PACK_WEIGHT_G[PackType.POLY_BAG]
    assert result["weight_saved_g_per_product"] == pytest.approx(mug_saved / 2)  # the lamp saves nothing
    assert result["coverage_lighter_than_box"] == pytest.approx(0.5)
