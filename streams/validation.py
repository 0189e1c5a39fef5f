"""Checks on decoded events that Avro cannot express: the key matches the product, sizes are physical,
marketplaces are configured, images are there. A failure is a ValidationError whose message names the field."""

from __future__ import annotations

from typing import Any, Collection, Mapping

MEDIA_TYPES = ("image/png", "image/jpeg")
MAX_MM = 5_000.0
MAX_G = 100_000.0


class ValidationError(ValueError):
    """A decoded event whose values cannot be right; it goes to the dead-letter topic."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


def _key_matches(record: Mapping[str, Any], key: str | None) -> None:
    # messages are built only on failure: these checks run for every event
    if key != record["product_id"]:
        raise ValidationError(f"message key {key!r} differs from product_id {record['product_id']!r}")
    _require(bool(key.strip()), "product_id is empty")


def _physical(record: Mapping[str, Any], *fields: str) -> None:
    for field in fields:
        limit = MAX_G if field.endswith("_g") else MAX_MM
        value = record[field]
        _require(0 < value <= limit, f"{field}={value} is outside (0, {limit:g}]")


def _marketplace(record: Mapping[str, Any], marketplaces: Collection[str]) -> None:
    if record["marketplace"] not in marketplaces:
        raise ValidationError(f"marketplace {record['marketplace']!r} is not configured "
                              f"(known: {', '.join(sorted(marketplaces))})")


def validate(contract: str, record: Mapping[str, Any], key: str | None, marketplaces: Collection[str]) -> None:
    """Raise ValidationError if an input event of `contract` cannot be right."""
    _key_matches(record, key)
    if contract == "tunnel_capture":
        _physical(record, "measured_length_mm", "measured_width_mm", "measured_height_mm", "measured_weight_g")
        for view in record["views"]:
            _require(view["media_type"] in MEDIA_TYPES, f"view {view['view']!r} has media type {view['media_type']!r}")
            _require(len(view["image"]) > 0, f"view {view['view']!r} has an empty image")
    elif contract == "catalog_update":
        _physical(record, "item_length_mm", "item_width_mm", "item_height_mm", "item_weight_g")
        _require(record["price"] >= 0, f"price={record['price']} is negative")
        _marketplace(record, marketplaces)
    elif contract == "shipment":
        _marketplace(record, marketplaces)
    elif contract == "damage_report":
        _require(bool(record["reason_code"].strip()), "reason_code is empty")
