"""The synthetic world: reproducible from its seed, realistically imbalanced, and honest about which
signal lives where (vendor packaging only in images)."""

from __future__ import annotations

import dataclasses
import io
import re
import uuid
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from models.contact_sheet import contact_sheet
from models.features import decode_views, training_capture
from models.packtypes import PACK_TYPES, PackType
from models.text import LOCALES
from models.world import VIEWS, VendorPackaging, World, WorldConfig, capture_record, catalog_record, ship


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(WorldConfig(seed=5, n_products=3000))


def test_same_seed_same_world_and_records() -> None:
    a, b = (World.generate(WorldConfig(seed=9, n_products=50)) for _ in range(2))
    assert a.products == b.products
    assert [catalog_record(p) for p in a.products] == [catalog_record(p) for p in b.products]
    assert capture_record(a.products[3], np.random.default_rng(1)) == capture_record(b.products[3], np.random.default_rng(1))
    assert np.array_equal(a.shipment_history().reported, b.shipment_history().reported)


def test_other_seed_other_world() -> None:
    a = World.generate(WorldConfig(seed=9, n_products=50))
    c = World.generate(WorldConfig(seed=10, n_products=50))
    assert [p.damage_probability for p in a.products] != [p.damage_probability for p in c.products]
    assert {p.product_id for p in a.products}.isdisjoint(p.product_id for p in c.products)


def test_damage_is_rare_and_rarer_in_boxes(world: World) -> None:
    history = world.shipment_history()
    rate = history.damaged.sum(0) / history.shipped.sum(0)
    for pack in PACK_TYPES[:3]:
        assert 0.001 < rate[pack.index] < 0.02, f"{pack.value} damage rate {rate[pack.index]:.4f}"
    assert rate[PackType.BOX.index] < 0.001
    assert rate[PackType.BOX.index] < rate[PackType.PADDED_MAILER.index] / 4
    # Heavier packaging protects better for every product.
    truth = world.truth()
    assert np.all(np.diff(truth, axis=1) <= 0)


def test_reports_arrive_late_and_not_always(world: World) -> None:
    history = world.shipment_history()
    assert history.reported.sum() < 0.8 * history.damaged.sum()
    assert np.all(history.reported <= history.damaged)
    rng = np.random.default_rng(0)
    glass = next(p for p in world.products if p.damage_probability_of(PackType.SIOC) > 0.05)
    outcomes = [ship(glass, PackType.SIOC, rng) for _ in range(4000)]
    damaged = [o for o in outcomes if o.damaged]
    reported = [o for o in damaged if o.reported]
    assert 0 < len(reported) < len(damaged)
    assert all(o.report_delay.total_seconds() > 0 and o.source in ("returns_center", "review", "contact")
               for o in reported)


def test_vendor_packaging_does_not_change_catalog_text(world: World) -> None:
    for product in world.products[:200]:
        records = {json_of(catalog_record(dataclasses.replace(product, vendor_packaging=v))) for v in VendorPackaging}
        assert len(records) == 1


def json_of(record: dict) -> str:
    return repr(sorted(record.items()))


PACKAGING_WORDS = re.compile(
    r"blister|sleeve|shrink|retail box|shipper|poly ?bag|clear bag|packag|verpack|karton|schachtel|emballage|"
    r"carton|embalaje|caja|envase|包装|箱|パッケージ|袋入", re.IGNORECASE)


def test_no_vendor_packaging_words_in_catalog_text(world: World) -> None:
    for product in world.products:
        record = catalog_record(product)
        text = " ".join([record["title"], record["description"], *record["bullet_points"]])
        assert not PACKAGING_WORDS.search(text), text


def test_catalog_text_has_real_catalog_cues(world: World) -> None:
    texts = [catalog_record(p)["title"] for p in world.products]
    assert any("Pack of" in t for t in texts) and any("個セット" in t for t in texts)
    assert any("tote bag" in t for t in texts)
    assert any("glass-look" in t for t in texts)  # misleading material words exist
    assert {catalog_record(p)["locale"] for p in world.products} == set(LOCALES)


def test_catalog_record_shape(world: World) -> None:
    record = catalog_record(world.products[0])
    assert set(record) == {"event_id", "product_id", "marketplace", "locale", "title", "description",
                           "bullet_points", "category", "price", "currency", "item_length_mm", "item_width_mm",
                           "item_height_mm", "item_weight_g", "updated_at"}
    uuid.UUID(record["event_id"])
    assert isinstance(record["updated_at"], datetime) and record["updated_at"].utcoffset().total_seconds() == 0
    assert record["marketplace"] in ("NA", "EU", "JP") and isinstance(record["bullet_points"], list)


def test_capture_record_shape_and_fast_path(world: World) -> None:
    product = world.products[1]
    record = capture_record(product, np.random.default_rng([product.seed, 20]))
    assert set(record) == {"event_id", "product_id", "fulfillment_center", "tunnel_id", "captured_at", "views",
                           "measured_length_mm", "measured_width_mm", "measured_height_mm", "measured_weight_g"}
    uuid.UUID(record["event_id"])
    for view in record["views"]:
        assert view["view"] in VIEWS and view["media_type"] == "image/png"
        assert Image.open(io.BytesIO(view["image"])).size == (48, 48)
    (images, present), sizes = training_capture(product, world.config.missing_view_rate, world.config.image_size)
    decoded, decoded_present = decode_views(record, 48)
    assert np.array_equal(decoded, images) and np.array_equal(decoded_present, present)
    assert sizes == (record["measured_length_mm"], record["measured_width_mm"], record["measured_height_mm"],
                     record["measured_weight_g"])


def test_views_go_missing_sometimes(world: World) -> None:
    rng = np.random.default_rng(0)
    counts = [len(capture_record(p, rng)["views"]) for p in world.products[:150]]
    assert min(counts) < 4 and max(counts) == 4


def test_boxes_measure_bigger_than_the_catalog_says(world: World) -> None:
    rng = np.random.default_rng(0)
    boxed = [p for p in world.products if p.vendor_packaging == VendorPackaging.STURDY_SHIPPER_BOX][:50]
    ratios = [capture_record(p, rng)["measured_length_mm"] / p.length_mm for p in boxed]
    assert np.median(ratios) > 1.05


def test_contact_sheet(tmp_path, world: World) -> None:
    path = contact_sheet(world, tmp_path / "sheet.png", rows=4)
    assert Image.open(path).size[1] == 4 * 96
