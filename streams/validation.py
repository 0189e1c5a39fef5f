"""Checks on decoded events that Avro cannot express: the key matches the product, sizes are physical,
marketplaces are configured, event times are plausible, images decode. A failure is a ValidationError whose
message names the field; a message that starts with a code word (`event_time:`, `bad_image:`, ...) says which
kind of failure it is, for grouping dead letters."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Collection, Mapping

from PIL import Image

from models.world import VIEWS

# Media type -> (the signature its bytes start with, Pillow's format name)
IMAGE_FORMATS = {"image/png": (b"\x89PNG\r\n\x1a\n", "PNG"), "image/jpeg": (b"\xff\xd8\xff", "JPEG")}
MEDIA_TYPES = tuple(IMAGE_FORMATS)
# The (bit depth, colour type) pairs the PNG specification allows (section 11.2.2)
PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Largest image side, in pixels: tunnel cameras take well under it and the model sees 48 px; a larger
# header is a decompression bomb (a few KB that decode to gigabytes).
MAX_IMAGE_SIDE = 4096
MAX_MM = 5_000.0
MAX_PRODUCT_ID = 128  # an ASIN is 10; room for any catalog's own scheme
MAX_EVENT_ID = 128  # a UUID is 36
# Highest price in any currency (a billion yen is under seven million dollars); NaN and infinity fail too. The
# model reads log(price): an absurd price is an absurd feature, and it made the model certify the lightest type.
MAX_PRICE = 1e9
MAX_G = 100_000.0
EVENT_TIME_FIELDS = {"tunnel_capture": "captured_at", "catalog_update": "updated_at", "shipment": "shipped_at",
                     "damage_report": "reported_at", "test_result": "tested_at"}


class ValidationError(ValueError):
    """A decoded event whose values cannot be right; it goes to the dead-letter topic."""


@dataclass(frozen=True)
class EventTimes:
    """The event times an input may carry, both ends included: none before `earliest`, none after `latest`,
    the worker's clock plus the drift allowed to producers' clocks (`ahead_s`)."""

    earliest: datetime
    latest: datetime
    ahead_s: float


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


def _key_matches(record: Mapping[str, Any], key: str | None) -> None:
    # messages are built only on failure: these checks run for every event
    if key != record["product_id"]:
        raise ValidationError(f"message key {key[:80] if key else key!r} differs from product_id "
                              f"{record['product_id'][:80]!r}")
    _require(bool(key.strip()), "product_id is empty")
    # ids are kept in state (the product id as a table key, the event ids of the last events applied) and
    # repeated in every output: bounded, so no state value or output outgrows its record
    if len(key) > MAX_PRODUCT_ID:
        raise ValidationError(f"product_id is {len(key):,} characters, more than {MAX_PRODUCT_ID}")
    if len(record["event_id"]) > MAX_EVENT_ID:
        raise ValidationError(f"event_id is {len(record['event_id']):,} characters, more than {MAX_EVENT_ID}")


def _physical(record: Mapping[str, Any], *fields: str) -> None:
    for field in fields:
        limit = MAX_G if field.endswith("_g") else MAX_MM
        value = record[field]
        _require(0 < value <= limit, f"{field}={value} is outside (0, {limit:g}]")


def _marketplace(record: Mapping[str, Any], marketplaces: Collection[str]) -> None:
    if record["marketplace"] not in marketplaces:
        raise ValidationError(f"marketplace {record['marketplace']!r} is not configured "
                              f"(known: {', '.join(sorted(marketplaces))})")


def _views(record: Mapping[str, Any]) -> None:
    _require(len(record["views"]) > 0, "no_views: the capture has no views (a tunnel pass needs at least one "
             "camera image)")
    for view in record["views"]:
        if view["view"] not in VIEWS:
            raise ValidationError(f"unknown_view: view {view['view']!r} is not a camera position the model knows "
                                  f"({', '.join(VIEWS)})")
        _image(view["view"], view["media_type"], view["image"])


def _image(view: str, media_type: str, data: bytes) -> None:
    """The image decodes as its media type within MAX_IMAGE_SIDE. Cheap enough for every capture (a PNG's
    chunks are checked, not inflated); the scoring process decodes each view again and treats one that still
    fails as missing (models/features.py)."""
    if media_type not in IMAGE_FORMATS:
        raise ValidationError(f"bad_image: view {view!r} has media type {media_type!r} "
                              f"(expected {' or '.join(MEDIA_TYPES)})")
    signature, image_format = IMAGE_FORMATS[media_type]
    if not data:
        raise ValidationError(f"bad_image: view {view!r} has an empty image")
    if not data.startswith(signature):
        raise ValidationError(f"bad_image: view {view!r} is not {media_type}: its {len(data)} bytes start with "
                              f"{data[:8].hex()}")
    if image_format == "PNG":
        problem = png_problem(data)
        if problem is None:
            return
        if isinstance(problem, tuple):
            raise _oversized(view, *problem)
        raise ValidationError(f"bad_image: view {view!r} does not decode as {media_type}: {problem}")
    try:
        with Image.open(io.BytesIO(data), formats=(image_format,)) as image:
            width, height = image.size
            if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
                raise _oversized(view, width, height)
            # a JPEG's verify() checks nothing: decode it, at 1/8 scale (every coefficient is still read)
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except ValidationError:
        raise
    except Image.UnidentifiedImageError:  # its message names a memory address, not the problem
        raise ValidationError(f"bad_image: view {view!r} does not decode as {media_type}: its header is "
                              "corrupt") from None
    except Exception as error:  # Pillow reports bad image data through many exception types
        raise ValidationError(f"bad_image: view {view!r} does not decode as {media_type}: {error}") from None


def _oversized(view: str, width: int, height: int) -> ValidationError:
    return ValidationError(f"bad_image: view {view!r} is {width} x {height} pixels, more than {MAX_IMAGE_SIDE} a "
                           "side (a decompression bomb, or not a tunnel camera)")


def png_problem(data: bytes) -> str | tuple[int, int] | None:
    """What is wrong with a PNG's structure (its signature already checked), without inflating its pixels:
    None if nothing; (width, height) if a side is over MAX_IMAGE_SIDE; else the problem in words. Checked:
    every chunk whole, its type four letters and its CRC right, up to and with IEND; IHDR first, with a size
    and a bit depth, colour type and methods the PNG specification allows; an IDAT before IEND. What Pillow's
    open() and verify() check, at a fraction of the cost (the worker validates every view of every capture)."""
    view, end, pos = memoryview(data), len(data), 8
    seen_idat = False
    while True:
        if pos + 12 > end:
            return "truncated PNG file (no IEND chunk)"
        length, kind = struct.unpack_from(">I4s", data, pos)
        if not kind.isalpha():  # bytes: ASCII letters only
            return f"broken PNG file (chunk {kind!r})"
        if length > 0x7FFFFFFF or pos + 12 + length > end:
            return f"truncated PNG file ({kind.decode()} chunk of {length:,} bytes)"
        body = pos + 8
        if zlib.crc32(view[pos + 4:body + length]) != struct.unpack_from(">I", data, body + length)[0]:
            return f"broken PNG file (bad checksum in {kind.decode()})"
        if pos == 8:
            if kind != b"IHDR" or length != 13:
                return "broken PNG file (it does not start with a 13-byte IHDR chunk)"
            width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, body)
            if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
                return width, height
            if not width or not height:
                return f"broken PNG file ({width} x {height} pixels)"
            if depth not in PNG_DEPTHS.get(colour, ()):
                return f"unknown PNG mode (bit depth {depth}, colour type {colour})"
            if compression or filtering or interlace > 1:
                return "unknown PNG compression, filter or interlace method"
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            return None if seen_idat else "broken PNG file (no IDAT chunk)"
        pos = body + length + 4


def _event_time(record: Mapping[str, Any], field: str, times: EventTimes) -> None:
    value = record[field]
    if value < times.earliest:
        raise ValidationError(f"event_time: {field} {value.isoformat()} is before {times.earliest.date()} "
                              "(PACKWISE_EVENT_TIME_EARLIEST)")
    if value > times.latest:
        now = times.latest - timedelta(seconds=times.ahead_s)
        raise ValidationError(f"event_time: {field} {value.isoformat()} is more than {times.ahead_s:g} s ahead of "
                              f"the worker's clock, {now.isoformat(timespec='seconds')} "
                              "(PACKWISE_EVENT_TIME_MAX_AHEAD_S)")


def validate(contract: str, record: Mapping[str, Any], key: str | None, marketplaces: Collection[str],
             times: EventTimes) -> None:
    """Raise ValidationError if an input event of `contract` cannot be right."""
    _key_matches(record, key)
    _event_time(record, EVENT_TIME_FIELDS[contract], times)
    if contract == "tunnel_capture":
        _physical(record, "measured_length_mm", "measured_width_mm", "measured_height_mm", "measured_weight_g")
        _views(record)
    elif contract == "catalog_update":
        _physical(record, "item_length_mm", "item_width_mm", "item_height_mm", "item_weight_g")
        price = record["price"]
        _require(0 <= price <= MAX_PRICE, f"price={price} is outside [0, {MAX_PRICE:g}] (in any currency)")
        _marketplace(record, marketplaces)
    elif contract == "shipment":
        _marketplace(record, marketplaces)
    elif contract == "damage_report":
        _require(bool(record["reason_code"].strip()), "reason_code is empty")
    elif contract == "test_result":
        _marketplace(record, marketplaces)
        tested, passed = record["samples_tested"], record["samples_passed"]
        _require(tested >= 1, f"samples_tested={tested} is less than 1 (a test needs a sample)")
        _require(0 <= passed <= tested, f"samples_passed={passed} is outside [0, samples_tested={tested}]")
        _require(bool(record["protocol"].strip()), "protocol is empty")
        _require(bool(record["lab"].strip()), "lab is empty")
