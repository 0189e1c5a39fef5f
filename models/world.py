"""The synthetic fulfillment-center world, deterministic from a seed.

Each product has a hidden truth (material, the vendor's own packaging, shape, size, weight) and, from
it, a hidden damage probability per package type. The world exposes what the real system would see:
catalog records (text in five languages, no vendor packaging in them), tunnel captures (rendered
views that do show the vendor packaging), shipments and damage reports that arrive late or never.

Enumerate `World.generate(WorldConfig(...)).products`; turn a product into events with
`catalog_record(product)` and `capture_record(product, rng)`; draw outcomes with `ship(...)`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from PIL import Image

from models import render, text
from models.packtypes import PACK_TYPES, PackType


class Material(str, enum.Enum):
    GLASS = "glass"
    CERAMIC = "ceramic"
    ELECTRONICS = "electronics"
    FABRIC = "fabric"
    PLASTIC = "plastic"
    PAPER = "paper"
    METAL = "metal"
    WOOD = "wood"


class VendorPackaging(str, enum.Enum):
    NONE = "none"
    CLEAR_POLY_BAG = "clear_poly_bag"
    RETAIL_BOX = "retail_box"
    STURDY_SHIPPER_BOX = "sturdy_shipper_box"
    BLISTER = "blister"
    MULTIPACK_SLEEVE = "multipack_sleeve"


class Shape(str, enum.Enum):
    BOXY = "boxy"
    CYLINDER = "cylinder"
    FLAT = "flat"
    IRREGULAR = "irregular"


VIEWS: tuple[str, ...] = ("top", "front", "side", "oblique")
MARKETPLACE_LOCALES: dict[str, tuple[str, ...]] = {"NA": ("en_US",), "EU": ("de_DE", "fr_FR", "es_ES"),
                                                   "JP": ("ja_JP",)}
CURRENCY: dict[str, tuple[str, float]] = {"NA": ("USD", 1.0), "EU": ("EUR", 0.92), "JP": ("JPY", 150.0)}


@dataclass(frozen=True)
class Kind:
    category: str
    shape: Shape
    materials: dict[str, float]
    dims_mm: tuple[float, float, float]  # typical length, width, height of one unit
    price_usd: float
    multipack: float  # probability the product is sold as several units


KINDS: dict[str, Kind] = {
    "mug": Kind("Kitchen > Drinkware", Shape.CYLINDER, {"ceramic": .6, "glass": .15, "metal": .15, "plastic": .1}, (120, 90, 100), 14, .25),
    "tumbler": Kind("Kitchen > Drinkware", Shape.CYLINDER, {"glass": .7, "plastic": .3}, (80, 80, 120), 10, .5),
    "vase": Kind("Home > Decor", Shape.CYLINDER, {"glass": .5, "ceramic": .4, "metal": .1}, (150, 150, 280), 30, .05),
    "plate": Kind("Kitchen > Dinnerware", Shape.FLAT, {"ceramic": .6, "glass": .2, "plastic": .2}, (270, 270, 25), 25, .4),
    "wine_glass": Kind("Kitchen > Drinkware", Shape.IRREGULAR, {"glass": .85, "plastic": .15}, (85, 85, 220), 18, .5),
    "frame": Kind("Home > Decor", Shape.FLAT, {"glass": .4, "wood": .3, "plastic": .3}, (250, 200, 20), 15, .15),
    "bowl": Kind("Kitchen > Dinnerware", Shape.CYLINDER, {"ceramic": .5, "glass": .2, "plastic": .2, "wood": .1}, (160, 160, 80), 16, .35),
    "perfume": Kind("Beauty > Fragrance", Shape.CYLINDER, {"glass": .7, "plastic": .3}, (60, 40, 120), 45, .05),
    "lamp": Kind("Home > Lighting", Shape.IRREGULAR, {"electronics": .6, "glass": .2, "metal": .2}, (350, 160, 160), 40, .0),
    "headphones": Kind("Electronics > Audio", Shape.IRREGULAR, {"electronics": 1.0}, (190, 160, 80), 60, .0),
    "charger": Kind("Electronics > Accessories", Shape.BOXY, {"electronics": 1.0}, (70, 50, 30), 18, .2),
    "speaker": Kind("Electronics > Audio", Shape.CYLINDER, {"electronics": 1.0}, (180, 75, 75), 50, .0),
    "batteries": Kind("Electronics > Batteries", Shape.BOXY, {"electronics": 1.0}, (50, 15, 15), 9, .9),
    "tshirt": Kind("Clothing > Tops", Shape.FLAT, {"fabric": 1.0}, (300, 220, 20), 15, .3),
    "towel": Kind("Home > Bath", Shape.FLAT, {"fabric": 1.0}, (350, 250, 40), 20, .3),
    "socks": Kind("Clothing > Socks", Shape.FLAT, {"fabric": 1.0}, (220, 100, 15), 8, .8),
    "tote": Kind("Bags > Totes", Shape.FLAT, {"fabric": .8, "plastic": .2}, (380, 340, 10), 14, .1),
    "notebook": Kind("Office > Paper", Shape.FLAT, {"paper": 1.0}, (210, 148, 10), 7, .4),
    "book": Kind("Books > Paperback", Shape.BOXY, {"paper": 1.0}, (180, 110, 25), 12, .05),
    "pens": Kind("Office > Writing", Shape.BOXY, {"plastic": .8, "metal": .2}, (140, 10, 10), 6, .9),
    "phone_case": Kind("Electronics > Accessories", Shape.FLAT, {"plastic": .8, "fabric": .2}, (160, 80, 12), 12, .1),
    "container": Kind("Kitchen > Storage", Shape.BOXY, {"plastic": .7, "glass": .3}, (180, 130, 80), 15, .4),
    "toy": Kind("Toys > Figures", Shape.IRREGULAR, {"plastic": .9, "wood": .1}, (120, 60, 60), 20, .2),
    "bottle": Kind("Sports > Bottles", Shape.CYLINDER, {"metal": .5, "plastic": .4, "glass": .1}, (75, 75, 250), 20, .1),
    "cutting_board": Kind("Kitchen > Tools", Shape.FLAT, {"wood": .6, "plastic": .4}, (350, 230, 18), 22, .05),
}

# Hidden damage model. Hazard h = severity[pack] * fragility * exposure * shape * weight term, plus a
# "loose item" term for lighter types when the item has no rigid container of its own.
FRAGILITY = {"glass": 1.0, "ceramic": .8, "electronics": .35, "wood": .06, "plastic": .05, "metal": .03,
             "paper": .04, "fabric": .005}
EXPOSURE = {VendorPackaging.NONE: 1.0, VendorPackaging.CLEAR_POLY_BAG: .9, VendorPackaging.BLISTER: .55,
            VendorPackaging.MULTIPACK_SLEEVE: 1.1, VendorPackaging.RETAIL_BOX: .3,
            VendorPackaging.STURDY_SHIPPER_BOX: .02}
SHAPE_FACTOR = {Shape.BOXY: .8, Shape.CYLINDER: 1.0, Shape.FLAT: 1.3, Shape.IRREGULAR: 1.2}
SEVERITY = {PackType.SIOC: .03, PackType.POLY_BAG: .026, PackType.PADDED_MAILER: .016, PackType.BOX: .001}
LOOSE = {PackType.SIOC: .004, PackType.POLY_BAG: .0008, PackType.PADDED_MAILER: .0004, PackType.BOX: 0.0}
RIGID = (VendorPackaging.RETAIL_BOX, VendorPackaging.STURDY_SHIPPER_BOX)
# How much each vendor packaging adds to the tunnel-measured size (mm) and weight (g).
PACKAGING_BULK = {VendorPackaging.NONE: (0, 0), VendorPackaging.CLEAR_POLY_BAG: (6, 4),
                  VendorPackaging.BLISTER: (25, 25), VendorPackaging.MULTIPACK_SLEEVE: (4, 10),
                  VendorPackaging.RETAIL_BOX: (12, 60), VendorPackaging.STURDY_SHIPPER_BOX: (35, 180)}
DENSITY_G_PER_CM3 = {"glass": .55, "ceramic": .6, "electronics": .45, "fabric": .12, "plastic": .2, "paper": .45,
                     "metal": .5, "wood": .4}


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_products: int = 10_000
    shipments_per_product: float = 50.0  # mean length of each product's historical shipment log
    history_pack_mix: tuple[float, float, float, float] = (.2, .2, .2, .4)  # randomized legacy policy
    report_rate: float = 0.7  # share of damages a customer or the returns center ever reports
    report_delay_days: float = 7.0  # mean delay of a damage report
    history_days: float = 120.0
    missing_view_rate: float = 0.12
    image_size: int = 48

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Product:
    product_id: str
    seed: int  # per-product seed: the catalog text and image renderings derive from it
    kind: str
    category: str
    material: Material
    vendor_packaging: VendorPackaging
    shape: Shape
    units: int
    length_mm: float
    width_mm: float
    height_mm: float
    weight_g: float
    price_usd: float
    marketplace: str
    locale: str
    color: int
    brand: str
    damage_probability: tuple[float, float, float, float]  # hidden truth, in PACK_TYPES order

    def damage_probability_of(self, pack_type: PackType) -> float:
        return self.damage_probability[pack_type.index]


def damage_probabilities(material: str, packaging: VendorPackaging, shape: Shape, weight_g: float, units: int,
                         frailty: float) -> tuple[float, float, float, float]:
    """The hidden truth: P(damaged) of one shipment in each package type."""
    weight_term = (max(weight_g, 20.0) / 400.0) ** 0.3
    multipack_term = 1.0 + 0.15 * (units - 1)
    base = FRAGILITY[material] * EXPOSURE[packaging] * SHAPE_FACTOR[shape] * weight_term * multipack_term * frailty
    loose = 0.0 if packaging in RIGID else 1.0
    return tuple(float(1.0 - np.exp(-(SEVERITY[t] * base + LOOSE[t] * loose * frailty))) for t in PACK_TYPES)


def _choose_packaging(material: str, units: int, rng: np.random.Generator) -> VendorPackaging:
    if units > 1 and rng.random() < 0.6:
        return VendorPackaging.MULTIPACK_SLEEVE
    weights = {
        "glass": (.25, .05, .35, .3, .05), "ceramic": (.3, .05, .35, .25, .05), "electronics": (.05, .1, .45, .25, .15),
        "fabric": (.3, .55, .05, .08, .02), "plastic": (.3, .2, .2, .15, .15), "paper": (.5, .25, .05, .18, .02),
        "metal": (.3, .15, .3, .2, .05), "wood": (.4, .15, .2, .2, .05),
    }[material]
    options = (VendorPackaging.NONE, VendorPackaging.CLEAR_POLY_BAG, VendorPackaging.RETAIL_BOX,
               VendorPackaging.STURDY_SHIPPER_BOX, VendorPackaging.BLISTER)
    return options[int(rng.choice(len(options), p=np.asarray(weights) / sum(weights)))]


def _make_product(index: int, world_seed: int, rng: np.random.Generator) -> Product:
    kind_name = str(rng.choice(list(KINDS)))
    kind = KINDS[kind_name]
    materials = list(kind.materials)
    material = materials[int(rng.choice(len(materials), p=np.asarray(list(kind.materials.values()))))]
    units = int(rng.integers(2, 7)) if rng.random() < kind.multipack else 1
    packaging = _choose_packaging(material, units, rng)
    scale = rng.lognormal(0.0, 0.25, size=3)
    dims = sorted((float(d * s) for d, s in zip(kind.dims_mm, scale)), reverse=True)
    if units > 1:  # units side by side along the width
        dims = sorted([dims[0], dims[1] * min(units, 3), dims[2] * (1 + (units > 3))], reverse=True)
    volume_cm3 = dims[0] * dims[1] * dims[2] / 1000.0
    weight = float(DENSITY_G_PER_CM3[material] * volume_cm3 * rng.lognormal(0, .3))
    price = float(kind.price_usd * rng.lognormal(0, .4) * (1 + 0.6 * (units - 1)))
    marketplace = str(rng.choice(["NA", "EU", "JP"], p=[.45, .4, .15]))
    locale = str(rng.choice(MARKETPLACE_LOCALES[marketplace]))
    frailty = float(rng.lognormal(0.0, 0.5))  # what no signal reveals: build quality, vendor QA
    return Product(
        product_id=f"P{world_seed:04d}{index:07d}", seed=int(rng.integers(2**62)), kind=kind_name,
        category=kind.category, material=Material(material), vendor_packaging=packaging, shape=kind.shape,
        units=units, length_mm=dims[0], width_mm=dims[1], height_mm=dims[2], weight_g=weight, price_usd=price,
        marketplace=marketplace, locale=locale, color=int(rng.integers(len(text.COLORS))),
        brand=text.brand_name(rng),
        damage_probability=damage_probabilities(material, packaging, kind.shape, weight, units, frailty),
    )


@dataclass(frozen=True)
class ShipmentHistory:
    """Per product and package type: shipments made, damages that happened, damages reported by the cutoff."""

    shipped: np.ndarray  # int [n_products, 4]
    damaged: np.ndarray  # int [n_products, 4]
    reported: np.ndarray  # int [n_products, 4]


@dataclass(frozen=True)
class ShipmentOutcome:
    damaged: bool
    reported: bool
    report_delay: timedelta | None
    source: str | None  # 'returns_center' | 'review' | 'contact'
    reason_code: str | None


REASONS = {"glass": "BROKEN", "ceramic": "BROKEN", "electronics": "CRUSHED", "fabric": "SCRATCHED",
           "plastic": "CRUSHED", "paper": "CRUSHED", "metal": "SCRATCHED", "wood": "SCRATCHED"}


@dataclass(frozen=True)
class World:
    config: WorldConfig
    products: list[Product]

    @classmethod
    def generate(cls, config: WorldConfig) -> "World":
        rng = np.random.default_rng([config.seed, 1])
        return cls(config, [_make_product(i, config.seed, rng) for i in range(config.n_products)])

    def truth(self) -> np.ndarray:
        """Hidden damage probability, float [n_products, 4] in PACK_TYPES order."""
        return np.asarray([p.damage_probability for p in self.products], dtype=np.float64)

    def shipment_history(self) -> ShipmentHistory:
        """The historical log the model trains on: a randomized legacy policy chose each package type;
        only damages reported before the cutoff are visible (under-reporting and delay)."""
        rng = np.random.default_rng([self.config.seed, 2])
        n = len(self.products)
        totals = rng.poisson(self.config.shipments_per_product, size=n)
        shipped = np.stack([rng.multinomial(t, self.config.history_pack_mix) for t in totals])
        damaged = rng.binomial(shipped, self.truth())
        # A damage is visible if reported at all and its report arrived before the cutoff; shipments are
        # uniform over the history window, delays exponential.
        p_visible = self.config.report_rate * (1 - self.config.report_delay_days / self.config.history_days
                                               * (1 - np.exp(-self.config.history_days / self.config.report_delay_days)))
        reported = rng.binomial(damaged, p_visible)
        return ShipmentHistory(shipped, damaged, reported)

    def audit(self, rng: np.random.Generator, shipments: int = 1) -> np.ndarray:
        """Fully observed audit shipments (e.g. a packaging trial with inspection on delivery): damage
        counts int [n_products, 4] out of `shipments` per package type."""
        return rng.binomial(shipments, self.truth())


def ship(product: Product, pack_type: PackType, rng: np.random.Generator,
         config: WorldConfig = WorldConfig()) -> ShipmentOutcome:
    """One shipment's outcome for the simulator: damaged from the hidden truth; reported or not; delay."""
    if rng.random() >= product.damage_probability_of(pack_type):
        return ShipmentOutcome(False, False, None, None, None)
    if rng.random() >= config.report_rate:
        return ShipmentOutcome(True, False, None, None, REASONS[product.material.value])
    delay = timedelta(days=float(rng.exponential(config.report_delay_days)))
    source = str(rng.choice(["returns_center", "review", "contact"], p=[.5, .3, .2]))
    return ShipmentOutcome(True, True, delay, source, REASONS[product.material.value])


def event_uuid(rng: np.random.Generator) -> str:
    """A uuid4-shaped id drawn from the given generator, so event ids are reproducible from the seed."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def catalog_record(product: Product, revision: int = 0) -> dict:
    """The catalog update a marketplace would publish for this product (the Avro CatalogUpdate shape).

    Deterministic: the same product and revision give the same record, event id included."""
    rng = np.random.default_rng([product.seed, 10, revision])
    currency, rate = CURRENCY[product.marketplace]
    # Vendors declare dimensions and weight loosely.
    noise = rng.lognormal(0, 0.06, size=4)
    title, description, bullets = text.catalog_text(
        product.kind, product.material.value, product.units, product.color, product.brand,
        (product.length_mm, product.width_mm, product.height_mm), product.weight_g, product.locale, rng)
    return {
        "event_id": event_uuid(rng),
        "product_id": product.product_id,
        "marketplace": product.marketplace,
        "locale": product.locale,
        "title": title,
        "description": description,
        "bullet_points": bullets,
        "category": product.category,
        "price": round(product.price_usd * rate, 0 if currency == "JPY" else 2),
        "currency": currency,
        "item_length_mm": float(product.length_mm * noise[0]),
        "item_width_mm": float(product.width_mm * noise[1]),
        "item_height_mm": float(product.height_mm * noise[2]),
        "item_weight_g": float(product.weight_g * noise[3]),
        "updated_at": EPOCH + timedelta(seconds=int(rng.integers(0, 86400 * 90))),
    }


def measured(product: Product, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Tunnel-measured length, width, height (mm) and scale weight (g): the product as packed by its vendor."""
    bulk_mm, bulk_g = PACKAGING_BULK[product.vendor_packaging]
    dims = [d + bulk_mm * (0.5 if product.vendor_packaging == VendorPackaging.BLISTER and i == 2 else 1.0)
            for i, d in enumerate((product.length_mm, product.width_mm, product.height_mm))]
    dims = sorted((float(d * rng.normal(1, 0.02)) for d in dims), reverse=True)
    return dims[0], dims[1], dims[2], float((product.weight_g + bulk_g) * rng.normal(1, 0.02))


def capture_views(product: Product, rng: np.random.Generator, missing_view_rate: float = 0.12,
                  size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """The fast path for training: rendered views uint8 [4, size, size, 3] and presence bool [4]."""
    present = rng.random(len(VIEWS)) >= missing_view_rate
    images = np.zeros((len(VIEWS), size, size, 3), dtype=np.uint8)
    for i, view in enumerate(VIEWS):
        image = render.render_view(product, view, rng, size)  # drawn even if missing: keeps rng in step
        if present[i]:
            images[i] = image
    return images, present


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def capture_record(product: Product, rng: np.random.Generator, missing_view_rate: float = 0.12,
                   size: int = 48, fulfillment_center: str = "FC-SEA1") -> dict:
    """One pass through a camera tunnel (the Avro TunnelCapture shape), views PNG-encoded."""
    images, present = capture_views(product, rng, missing_view_rate, size)
    length, width, height, weight = measured(product, rng)
    return {
        "event_id": event_uuid(rng),
        "product_id": product.product_id,
        "fulfillment_center": fulfillment_center,
        "tunnel_id": f"T{int(rng.integers(1, 5))}",
        "captured_at": EPOCH + timedelta(seconds=int(rng.integers(0, 86400 * 90))),
        "views": [{"view": v, "media_type": "image/png", "image": encode_png(images[i])}
                  for i, v in enumerate(VIEWS) if present[i]],
        "measured_length_mm": length,
        "measured_width_mm": width,
        "measured_height_mm": height,
        "measured_weight_g": weight,
    }
