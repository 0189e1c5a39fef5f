"""A corpus of hostile inputs, as strangers' producers send them: every way an input message can be wrong that
the contracts and the broker allow, each with the words its dead letter's reason must carry, and the good
events that surround them. Used against the Processor (tests/test_hostile.py) and a real worker
(tests/test_worker.py)."""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from streams.serde import HEADER, MAGIC_BYTE, Serde
from tests.samples import PNG_1PX, SAMPLES

BASES = {"tunnel_capture": "tunnel-captures", "catalog_update": "catalog-updates", "shipment": "shipments",
         "damage_report": "damage-reports", "test_result": "test-results"}


@dataclass(frozen=True)
class Hostile:
    label: str
    contract: str  # the topic it is sent to carries this contract
    key: bytes | None
    value: bytes | None
    reason: str  # what the dead letter's reason must contain


def _png(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with right checksums and a tiny body: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _raw(serde: Serde, contract: str, record: dict[str, Any]) -> bytes:
    """Wire bytes without the writer's validation: what a careless producer can send."""
    return serde.encode(contract, record, validate=False)


def _raw_time(serde: Serde, contract: str, record: dict[str, Any], field: str, millis: int) -> bytes:
    """Wire bytes whose event time is `millis` as written, even where no datetime can hold it."""
    import copy
    import io

    import fastavro

    schema = copy.deepcopy(serde.contract(contract).schema)
    next(f for f in schema["fields"] if f["name"] == field)["type"] = "long"
    out = io.BytesIO(HEADER.pack(MAGIC_BYTE, serde.contract(contract).schema_id))
    out.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), {**record, field: millis})
    return out.getvalue()


def corpus(serde: Serde) -> list[Hostile]:
    """Every hostile message, for each input contract where it applies."""
    out: list[Hostile] = []

    def fresh(contract: str, **changes: Any) -> dict[str, Any]:
        return {**SAMPLES[contract], "event_id": str(uuid.uuid4()), **changes}

    def add(label: str, contract: str, reason: str, value: bytes | None,
            key: bytes | None | Callable[[], bytes | None] = None) -> None:
        product = SAMPLES[contract]["product_id"].encode()
        out.append(Hostile(label, contract, product if key is None else key, value, reason))

    decision = serde.encode("pack_type_decision", SAMPLES["pack_type_decision"])
    for contract in BASES:
        good = serde.encode(contract, fresh(contract))
        add("json", contract, "wrong magic byte", b'{"product_id": "B07XJ8C8F5"}')
        add("empty value", contract, "empty value", b"")
        add("short header", contract, "shorter than the 5-byte header", b"\x00\x01")
        add("unknown schema id", contract, "unknown schema id", HEADER.pack(MAGIC_BYTE, 0x7ffffffe) + b"\x02")
        add("another contract", contract, "wrong_contract", decision)
        add("truncated body", contract, "truncated or corrupt", good[:len(good) // 2])
        add("trailing bytes", contract, "bytes after the Avro body", good + b"\x00\x00")
        add("key of another product", contract, "differs from product_id", good, b"SOMEONE-ELSE")
        add("key not UTF-8", contract, "not UTF-8", good, b"\xff\xfe")
        long_id = "P" * 129  # one past the limit
        add("product id past its limit", contract, "product_id is 129 characters",
            _raw(serde, contract, fresh(contract, product_id=long_id)), long_id.encode())
        add("event id past its limit", contract, "event_id is 129 characters",
            _raw(serde, contract, fresh(contract, event_id="e" * 129)))
        add("empty product id", contract, "product_id is empty", _raw(serde, contract, fresh(contract, product_id=" ")),
            b" ")
        for when, reason in [(datetime(9999, 12, 31, tzinfo=timezone.utc), "event_time"),
                             (datetime(2100, 1, 1, tzinfo=timezone.utc), "event_time"),
                             (datetime(1, 1, 1, tzinfo=timezone.utc), "event_time"),
                             (datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc), "event_time")]:
            field = {"tunnel_capture": "captured_at", "catalog_update": "updated_at", "shipment": "shipped_at",
                     "damage_report": "reported_at", "test_result": "tested_at"}[contract]
            add(f"event time {when.year}", contract, reason, _raw(serde, contract, fresh(contract, **{field: when})))
        for millis in (2**62, -2**62):
            add(f"event time {millis} ms", contract, "event_time", _raw_time(serde, contract, fresh(contract), field, millis))
    add("null key", "shipment", "differs from product_id", serde.encode("shipment", fresh("shipment")), b"")
    for field, value in [("item_weight_g", 0.0), ("item_length_mm", -3.0), ("item_height_mm", float("nan")),
                         ("item_width_mm", float("inf")), ("item_weight_g", 1e9)]:
        add(f"catalog {field}={value}", "catalog_update", "is outside",
            _raw(serde, "catalog_update", fresh("catalog_update", **{field: value})))
    for price in (-1.0, float("nan"), float("inf"), 1e300):
        add(f"price {price}", "catalog_update", "price", _raw(serde, "catalog_update", fresh("catalog_update", price=price)))
    add("unknown marketplace", "catalog_update", "not configured",
        _raw(serde, "catalog_update", fresh("catalog_update", marketplace="XX")))
    add("unknown marketplace", "shipment", "not configured", _raw(serde, "shipment", fresh("shipment", marketplace="??")))
    add("empty reason code", "damage_report", "reason_code is empty",
        _raw(serde, "damage_report", fresh("damage_report", reason_code="  ")))
    add("unknown marketplace", "test_result", "not configured",
        _raw(serde, "test_result", fresh("test_result", marketplace="XX")))
    add("no samples tested", "test_result", "samples_tested=0",
        _raw(serde, "test_result", fresh("test_result", samples_tested=0, samples_passed=0)))
    add("more passed than tested", "test_result", "samples_passed=2",
        _raw(serde, "test_result", fresh("test_result", samples_tested=1, samples_passed=2)))
    capture = SAMPLES["tunnel_capture"]
    view = capture["views"][0]
    for label, views, reason in [
        ("no views", [], "no_views"),
        ("image not PNG", [{**view, "image": b"GIF89a" + b"\x00" * 40}], "bad_image"),
        ("truncated PNG", [{**view, "image": PNG_1PX[:40]}], "bad_image"),
        ("PNG with a bad checksum", [{**view, "image": PNG_1PX[:-5] + b"\x00" + PNG_1PX[-4:]}], "bad_image"),
        ("empty image", [{**view, "image": b""}], "bad_image"),
        ("media type gif", [{**view, "media_type": "image/gif"}], "bad_image"),
        ("decompression bomb", [{**view, "image": _png(100_000, 100_000)}], "bad_image"),
        ("unknown view", [{**view, "view": "underside"}], "unknown_view"),
    ]:
        add(label, "tunnel_capture", reason, _raw(serde, "tunnel_capture", fresh("tunnel_capture", views=views)))
    for field, value in [("measured_weight_g", float("nan")), ("measured_length_mm", 0.0)]:
        add(f"capture {field}={value}", "tunnel_capture", "is outside",
            _raw(serde, "tunnel_capture", fresh("tunnel_capture", **{field: value})))
    return out


def conflicting_duplicate(serde: Serde, contract: str) -> tuple[bytes, bytes]:
    """An event, then another with the same event id and a different payload."""
    first = {**SAMPLES[contract], "event_id": str(uuid.uuid4())}
    changed = {**first, "package_type": "box"} if contract == "shipment" else {**first, "reason_code": "other"}
    return serde.encode(contract, first), serde.encode(contract, changed)
