"""Marketplace configuration: the defaults, and a site's overrides from PACKWISE_MARKETPLACES_FILE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.packtypes import PackType
from streams.errors import PackwiseError
from streams.marketplaces import DEFAULT_MARKETPLACES, load_marketplaces

LAMP_MM = (420.0, 300.0, 200.0)


def test_bag_and_mailer_sizes_are_overridden_per_marketplace_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "markets.json"
    path.write_text(json.dumps({"NA": {"poly_bag_max_item_mm": [250, 600, 450]}}))
    markets = load_marketplaces(str(path))
    assert markets["NA"].poly_bag_max_item_mm == (600.0, 450.0, 250.0)
    assert markets["NA"].fits(PackType.POLY_BAG, LAMP_MM)
    assert not markets["EU"].fits(PackType.POLY_BAG, LAMP_MM)  # the others keep the defaults
    assert markets["NA"].padded_mailer_max_item_mm == DEFAULT_MARKETPLACES["NA"].padded_mailer_max_item_mm


@pytest.mark.parametrize("bad", [[500, 400], "500x400x150", [500, 400, -1], [500, 400, "wide"], 500])
def test_a_size_that_is_not_three_positive_sides_is_refused_in_a_sentence(tmp_path: Path, bad) -> None:
    path = tmp_path / "markets.json"
    path.write_text(json.dumps({"JP": {"padded_mailer_max_item_mm": bad}}))
    with pytest.raises(PackwiseError, match=r"padded_mailer_max_item_mm for JP is .*three sides in mm"):
        load_marketplaces(str(path))


def test_the_audit_share_is_off_by_default_and_set_per_marketplace(tmp_path: Path) -> None:
    path = tmp_path / "markets.json"
    path.write_text(json.dumps({"NA": {"audit_share": 0.02}}))
    markets = load_marketplaces(str(path))
    assert markets["NA"].audit_share == 0.02 and markets["EU"].audit_share == 0.0
    assert all(market.audit_share == 0.0 for market in DEFAULT_MARKETPLACES.values())


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_an_audit_share_outside_zero_to_one_is_refused_in_a_sentence(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "markets.json"
    path.write_text(json.dumps({"EU": {"audit_share": bad}}))
    with pytest.raises(PackwiseError, match=r"audit_share for EU is .*between 0 \(no audits\) and 1"):
        load_marketplaces(str(path))
