"""A PNG contact sheet of tunnel captures: one row per product, its four views, labelled by hidden truth."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.world import VIEWS, World, WorldConfig, capture_views


def contact_sheet(world: World, path: Path, rows: int = 12, scale: int = 2) -> Path:
    size = world.config.image_size * scale
    label_w = 150
    sheet = Image.new("RGB", (label_w + size * len(VIEWS), size * rows), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, product in enumerate(world.products[:rows]):
        images, present = capture_views(product, np.random.default_rng([product.seed, 20]),
                                        world.config.missing_view_rate, world.config.image_size)
        for v in range(len(VIEWS)):
            tile = Image.fromarray(images[v]).resize((size, size), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + v * size, r * size))
        draw.text((4, r * size + 4), f"{product.material.value}\n{product.vendor_packaging.value}\n"
                                     f"{product.kind} x{product.units}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("models/report/contact_sheet.png"))
    args = parser.parse_args()
    world = World.generate(WorldConfig(seed=args.seed, n_products=args.rows))
    print(contact_sheet(world, args.out, rows=args.rows))
