"""Features from records as the scoring process builds them."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from models.features import decode_views
from models.world import VIEWS, World, WorldConfig, capture_record


@pytest.fixture(scope="module")
def capture() -> dict:
    product = World.generate(WorldConfig(seed=0, n_products=1)).products[0]
    return capture_record(product, np.random.default_rng(0), missing_view_rate=0.0)


def test_a_view_that_does_not_decode_is_scored_as_missing_and_logged(capture: dict, caplog) -> None:
    good = decode_views(capture, 48)
    broken = {**capture, "views": [capture["views"][0], {**capture["views"][1], "image": b"\x89PNG\r\n\x1a\nrubbish"},
                                   {**capture["views"][2], "view": "underside"}, capture["views"][3]]}
    with caplog.at_level(logging.WARNING, logger="packwise.features"):
        images, present = decode_views(broken, 48)
    assert present.tolist() == [True, False, False, True]
    assert (images[0] == good[0][0]).all() and (images[3] == good[0][3]).all() and not images[1].any()
    warnings = [r.getMessage() for r in caplog.records if r.name == "packwise.features"]
    assert len(warnings) == 2 and all(capture["event_id"] in w and "scored as missing" in w for w in warnings)
    assert f"view {VIEWS[1]!r}" in warnings[0] and "view 'underside'" in warnings[1]
