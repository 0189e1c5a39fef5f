"""Procedural camera-tunnel views: the product on a conveyor belt as its vendor packed it.

Small images (48x48 by default) drawn with Pillow so that the cues a packaging expert looks for are
visible: cardboard edges and tape on shipper boxes, printed retail boxes, the sheen and wrinkles of a
clear bag, light through bare glass, the hang hole of a blister card, perforations and several units
in a multipack sleeve. Light, pose, blur and occlusion vary per view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from models.text import COLOR_RGB

if TYPE_CHECKING:
    from models.world import Product

PRINT_COLORS = ((200, 30, 60), (30, 110, 200), (250, 160, 20), (20, 160, 120), (120, 50, 160), (240, 240, 240))


def _mm_to_px(mm: float, size: int) -> int:
    # A fixed tunnel camera: size in pixels grows with the product, saturating for big items.
    return int(np.clip(size * (0.1 + 0.75 * mm / (mm + 180.0)), 4, size - 4))


def _rgba(color: tuple[int, int, int], alpha: int = 255) -> tuple[int, int, int, int]:
    return (int(color[0]), int(color[1]), int(color[2]), alpha)


def _body(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], product: "Product", view: str,
          rng: np.random.Generator) -> None:
    """The bare product inside `box`, its look set by material and shape."""
    x0, y0, x1, y1 = box
    material, shape = product.material.value, product.shape.value
    color = COLOR_RGB[product.color]
    fills = {
        "glass": (190, 225, 235, 70), "ceramic": _rgba(tuple(int(0.45 * c + 0.55 * 245) for c in color)),
        "electronics": (40, 40, 46, 255), "fabric": _rgba(color), "plastic": _rgba(color),
        "paper": (226, 214, 188, 255), "metal": (172, 176, 182, 255), "wood": (150, 100, 58, 255),
    }
    outline = (255, 255, 255, 220) if material == "glass" else (0, 0, 0, 90)
    if shape == "cylinder" and view == "top" or shape == "irregular" and view != "top":
        draw.ellipse(box, fill=fills[material], outline=outline)
    elif shape == "irregular":
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(0.6, 1.0, 7)
        draw.polygon([(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)],
                     fill=fills[material], outline=outline)
    else:
        radius = max(1, min(x1 - x0, y1 - y0) // 3) if shape == "cylinder" else 1
        draw.rounded_rectangle(box, radius=radius, fill=fills[material], outline=outline)
    w, h = x1 - x0, y1 - y0
    if material == "glass":  # a bright refraction streak and a bright rim: light passing through
        draw.line([(x0 + w * .25, y0 + 1), (x0 + w * .35, y1 - 1)], fill=(255, 255, 255, 230), width=1)
    elif material in ("ceramic", "plastic", "metal"):
        draw.ellipse((x0 + w * .2, y0 + h * .15, x0 + w * .2 + max(2, w // 5), y0 + h * .15 + max(2, h // 5)),
                     fill=(255, 255, 255, 200 if material != "plastic" else 120))
        if material == "metal":
            draw.line([(x0 + w * .6, y0), (x0 + w * .6, y1)], fill=(235, 238, 240, 220), width=1)
    elif material == "fabric":  # weave texture
        for y in range(y0 + 1, y1, 2):
            draw.line([(x0 + 1, y), (x1 - 1, y)], fill=(0, 0, 0, 40))
    elif material == "paper":
        for y in range(y0 + 3, y1 - 2, 3):
            draw.line([(x0 + 2, y), (x1 - 3, y)], fill=(110, 110, 110, 120))
    elif material == "wood":
        for _ in range(3):
            y = rng.uniform(y0, y1)
            draw.line([(x0, y), (x1, y + rng.uniform(-2, 2))], fill=(100, 62, 30, 200))
    elif material == "electronics":
        draw.rectangle((x1 - 3, y0 + 2, x1 - 2, y0 + 3), fill=(60, 220, 120, 255))


def _printed_box(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    color = PRINT_COLORS[int(rng.integers(len(PRINT_COLORS)))]
    draw.rectangle(box, fill=_rgba(color), outline=(20, 20, 20, 255))
    draw.rectangle((x0 + 2, y0 + 2, x0 + (x1 - x0) // 2, y0 + (y1 - y0) // 3), fill=(250, 250, 250, 255))
    draw.line([(x0 + 2, y1 - 3), (x1 - 2, y1 - 3)], fill=(255, 220, 0, 255), width=1)


def _shipper_box(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], view: str,
                 rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    brown = (int(rng.integers(145, 180)), int(rng.integers(105, 130)), int(rng.integers(62, 85)))
    draw.rectangle(box, fill=_rgba(brown), outline=(90, 60, 30, 255))
    cx = (x0 + x1) // 2
    if view in ("top", "oblique"):  # flap seam under a strip of tape
        draw.rectangle((cx - 2, y0, cx + 2, y1), fill=(205, 178, 128, 255))
        draw.line([(cx, y0), (cx, y1)], fill=(120, 85, 45, 255))
    else:  # tape folding over the top edge
        draw.rectangle((cx - 2, y0, cx + 2, y0 + max(2, (y1 - y0) // 4)), fill=(205, 178, 128, 255))


def _clear_bag(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=3, fill=(255, 255, 255, 55), outline=(255, 255, 255, 150))
    for _ in range(int(rng.integers(2, 5))):  # wrinkles
        xa, xb = rng.uniform(x0, x1, 2)
        draw.line([(xa, y0), (xb, y1)], fill=(255, 255, 255, 90) if rng.random() < .5 else (60, 60, 60, 60))
    d = (x1 - x0) * .3  # sheen
    draw.line([(x0 + d, y0 + 1), (x0 + 1, y0 + d)], fill=(255, 255, 255, 190), width=2)


def _blister(draw: ImageDraw.ImageDraw, card: tuple[int, int, int, int], product: "Product", view: str,
             rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = card
    w, h = x1 - x0, y1 - y0
    _printed_box(draw, card, rng)
    inner = (int(x0 + w * .2), int(y0 + h * .3), int(x1 - w * .2), int(y1 - h * .1))
    _body(draw, inner, product, view, rng)
    draw.rounded_rectangle((inner[0] - 1, inner[1] - 1, inner[2] + 1, inner[3] + 1), radius=2,
                           outline=(255, 255, 255, 170))
    draw.ellipse((x0 + w / 2 - 2, y0 + 1, x0 + w / 2 + 2, y0 + 4), fill=(15, 15, 15, 255))  # hang hole


def _multipack(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], product: "Product", view: str,
               rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    n = min(product.units, 3)
    step = (x1 - x0) / n
    for i in range(n):
        _body(draw, (int(x0 + i * step), y0, int(x0 + (i + 1) * step) - 1, y1), product, view, rng)
    band = (x0, int(y0 + (y1 - y0) * .35), x1, int(y0 + (y1 - y0) * .65))
    draw.rectangle(band, fill=_rgba(PRINT_COLORS[int(rng.integers(len(PRINT_COLORS)))]))
    for x in range(x0 + 1, x1, 2):  # perforated tear line
        draw.point((x, band[1] + 1), fill=(10, 10, 10, 255))


def render_view(product: "Product", view: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One camera view, uint8 [size, size, 3]."""
    from models.world import PACKAGING_BULK, VendorPackaging

    packaging = product.vendor_packaging
    bulk = PACKAGING_BULK[packaging][0]
    length, width, height = (d + bulk for d in (product.length_mm, product.width_mm, product.height_mm))
    extent = {"top": (length, width), "front": (length, height), "side": (width, height),
              "oblique": (length * .9, width * .5 + height * .7)}[view]
    w, h = (_mm_to_px(float(e * rng.lognormal(0, .05)), size) for e in extent)
    cx, cy = size / 2 + rng.normal(0, 3, size=2)
    box = (int(cx - w / 2), int(cy - h / 2), int(cx + w / 2), int(cy + h / 2))

    belt_level = rng.uniform(80, 125)
    belt = belt_level + rng.normal(0, 6, size=(size, size, 1)) + np.linspace(-8, 8, size)[None, :, None]
    canvas = Image.fromarray(np.clip(np.repeat(belt, 3, axis=2), 0, 255).astype(np.uint8)).convert("RGBA")
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    bare_glass = product.material.value == "glass" and packaging in (VendorPackaging.NONE,
                                                                      VendorPackaging.CLEAR_POLY_BAG)
    # Shadow under opaque things; a bright caustic where light passes through bare glass.
    draw.ellipse((box[0] + 2, box[3] - 3, box[2] + 3, box[3] + 3),
                 fill=(255, 250, 220, 110) if bare_glass else (0, 0, 0, 70))
    if packaging == VendorPackaging.RETAIL_BOX:
        _printed_box(draw, box, rng)
    elif packaging == VendorPackaging.STURDY_SHIPPER_BOX:
        _shipper_box(draw, box, view, rng)
    elif packaging == VendorPackaging.BLISTER:
        _blister(draw, box, product, view, rng)
    elif packaging == VendorPackaging.MULTIPACK_SLEEVE:
        _multipack(draw, box, product, view, rng)
    else:
        inset = 3 if packaging == VendorPackaging.CLEAR_POLY_BAG else 0
        _body(draw, (box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset), product, view, rng)
        if packaging == VendorPackaging.CLEAR_POLY_BAG:  # on its own layer: the bag blends over the item
            bag = Image.new("RGBA", (size, size), (0, 0, 0, 0))
            _clear_bag(ImageDraw.Draw(bag), box, rng)
            layer.alpha_composite(bag)
    if view in ("top", "oblique"):
        layer = layer.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BILINEAR)
    canvas.alpha_composite(layer)
    image = canvas.convert("RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.1))))
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.65, 1.3) * rng.normal(1, 0.05, size=3)
    if rng.random() < 0.1:  # a hand or another item in front of the camera
        ox, oy = rng.integers(0, size // 2, size=2)
        pixels[oy:oy + size // 3, ox:ox + size // 3] = rng.uniform(60, 220, size=3)
    return np.clip(pixels + rng.normal(0, 3, size=pixels.shape), 0, 255).astype(np.uint8)
