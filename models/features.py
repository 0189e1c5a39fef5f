"""From catalog and capture records (or the world's fast path) to the model's input tensors.

Both paths share the numeric and text functions, so training and inference see the same features.
Missing modalities are zero-filled and flagged; the network masks them.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from PIL import Image

from models.tokenizer import PAD_ID, Tokenizer, catalog_document
from models.world import CURRENCY, VIEWS, Product, capture_views, measured

MARKETPLACES = ("NA", "EU", "JP")
CATALOG_NUMERIC = 10
CAPTURE_NUMERIC = 6

log = logging.getLogger("packwise.features")


@dataclass(frozen=True)
class Features:
    tokens: torch.Tensor  # int64 [B, T]
    has_text: torch.Tensor  # float [B]: 1 when a catalog record was given
    catalog_numeric: torch.Tensor  # float [B, CATALOG_NUMERIC]
    images: torch.Tensor  # uint8 [B, 4, 3, H, W]
    view_mask: torch.Tensor  # float [B, 4]: 1 for views present
    capture_numeric: torch.Tensor  # float [B, CAPTURE_NUMERIC]
    has_capture: torch.Tensor  # float [B]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def select(self, index: torch.Tensor | np.ndarray | slice) -> "Features":
        return Features(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> "Features":
        return Features(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def concatenate(chunks: list[Features]) -> Features:
    """One batch from batches built apart (tokens right-padded to the widest: a batch without any catalog record
    has a single token column)."""
    width = max(c.tokens.shape[1] for c in chunks)
    chunks = [replace(c, tokens=torch.nn.functional.pad(c.tokens, (0, width - c.tokens.shape[1]), value=PAD_ID))
              for c in chunks]
    return Features(*(torch.cat([getattr(c, f.name) for c in chunks]) for f in fields(Features)))


def _size_numeric(length: float, width: float, height: float, weight: float) -> list[float]:
    """Log-scaled dims, weight, volume and density: sizes span three orders of magnitude."""
    dims = np.clip(np.asarray([length, width, height], dtype=np.float64), 1.0, None)
    weight = max(float(weight), 1.0)
    volume = float(np.prod(dims)) / 1000.0  # cm3
    return [*np.log(dims / 100.0), np.log(weight / 100.0), np.log(volume / 1000.0), np.log(weight / volume)]


def catalog_numeric(record: dict) -> list[float]:
    rate = CURRENCY.get(record["marketplace"], ("USD", 1.0))[1]
    one_hot = [float(record["marketplace"] == m) for m in MARKETPLACES]
    return [*_size_numeric(record["item_length_mm"], record["item_width_mm"], record["item_height_mm"],
                           record["item_weight_g"]), np.log(max(record["price"] / rate, 0.01) / 20.0), *one_hot]


def decode_views(record: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The views of a capture record to uint8 [4, size, size, 3] and presence [4]. A view that is not one of
    VIEWS or does not decode counts as missing, which the model handles, with a warning: one bad view must not
    fail the scoring batch. (The worker dead-letters such captures; one can still come from state written
    before it did, or decode differently here.)"""
    images = np.zeros((len(VIEWS), size, size, 3), dtype=np.uint8)
    present = np.zeros(len(VIEWS), dtype=bool)
    for view in record["views"]:
        if view["view"] not in VIEWS:
            log.warning("capture %s: view %r scored as missing: not one of %s", record.get("event_id"), view["view"],
                        ", ".join(VIEWS))
            continue
        try:
            image = Image.open(io.BytesIO(view["image"])).convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
        except Exception as error:  # noqa: BLE001 - Pillow reports bad image data through many exception types
            log.warning("capture %s: view %r scored as missing: it does not decode (%s: %s)", record.get("event_id"),
                        view["view"], type(error).__name__, error)
            continue
        i = VIEWS.index(view["view"])
        images[i] = np.asarray(image)
        present[i] = True
    return images, present


def assemble(tokenizer: Tokenizer, catalogs: list[dict | None], views: list[tuple[np.ndarray, np.ndarray] | None],
             measurements: list[tuple[float, float, float, float] | None], size: int) -> Features:
    """One batch from per-item parts; None marks a missing catalog record or capture."""
    n = len(catalogs)
    docs = [catalog_document(c) for c in catalogs if c is not None]
    encoded = tokenizer.encode(docs) if docs else None
    tokens = np.zeros((n, encoded.shape[1] if encoded is not None else 1), dtype=np.int64)
    cat_num = np.zeros((n, CATALOG_NUMERIC), dtype=np.float32)
    images = np.zeros((n, len(VIEWS), size, size, 3), dtype=np.uint8)
    view_mask = np.zeros((n, len(VIEWS)), dtype=np.float32)
    cap_num = np.zeros((n, CAPTURE_NUMERIC), dtype=np.float32)
    has_text = np.zeros(n, dtype=np.float32)
    has_capture = np.zeros(n, dtype=np.float32)
    j = 0
    for i, catalog in enumerate(catalogs):
        if catalog is not None:
            tokens[i] = encoded[j]
            j += 1
            cat_num[i] = catalog_numeric(catalog)
            has_text[i] = 1.0
        if views[i] is not None:
            images[i], view_mask[i] = views[i]
            cap_num[i] = _size_numeric(*measurements[i])
            has_capture[i] = 1.0
    return Features(torch.from_numpy(tokens), torch.from_numpy(has_text), torch.from_numpy(cat_num),
                    torch.from_numpy(images).permute(0, 1, 4, 2, 3).contiguous(), torch.from_numpy(view_mask),
                    torch.from_numpy(cap_num), torch.from_numpy(has_capture))


def from_records(tokenizer: Tokenizer, catalogs: list[dict | None], captures: list[dict | None],
                 size: int) -> Features:
    """Inference path: decoded Avro records as the streams layer passes them."""
    views = [decode_views(c, size) if c is not None else None for c in captures]
    sizes = [(c["measured_length_mm"], c["measured_width_mm"], c["measured_height_mm"], c["measured_weight_g"])
             if c is not None else None for c in captures]
    return assemble(tokenizer, catalogs, views, sizes, size)


def training_capture(product: Product, missing_view_rate: float, size: int) -> tuple[tuple, tuple]:
    """The fast path: the same capture `capture_record` would encode, without the PNG round trip
    (PNG is lossless, so the pixels are identical)."""
    rng = np.random.default_rng([product.seed, 20])
    views = capture_views(product, rng, missing_view_rate, size)
    return views, measured(product, rng)
