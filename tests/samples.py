"""One valid record of every contract, as the streams layer sees them after decoding (millisecond times)."""

from __future__ import annotations

import datetime as dt
from typing import Any

T0 = dt.datetime(2026, 11, 29, 12, 30, 15, 123000, tzinfo=dt.timezone.utc)
PNG_1PX = bytes.fromhex(  # one green pixel; its chunk checksums are right (the worker verifies them)
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d4944415478da6360f8cff01f00040101ff"
    "aeb555f50000000049454e44ae426082")

EVIDENCE = [
    {"package_type": pack, "model_probability": p, "model_certified": ok, "shipments": n, "damages": d,
     "damage_rate_lower": lo, "damage_rate_upper": hi}
    for pack, p, ok, n, d, lo, hi in [
        ("sioc", 0.08, False, 0, 0, 0.0, 0.3), ("poly_bag", 0.03, False, 12, 1, 0.004, 0.2),
        ("padded_mailer", 0.004, True, 40, 0, 0.0, 0.01), ("box", None, False, 3, 0, 0.0, 0.5)]
]

SAMPLES: dict[str, dict[str, Any]] = {
    "tunnel_capture": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b01", "product_id": "B07XJ8C8F5",
        "fulfillment_center": "FC-SEA1", "tunnel_id": "T3", "captured_at": T0,
        "views": [{"view": "top", "media_type": "image/png", "image": PNG_1PX},
                  {"view": "oblique", "media_type": "image/png", "image": PNG_1PX}],
        "measured_length_mm": 210.5, "measured_width_mm": 120.0, "measured_height_mm": 95.25,
        "measured_weight_g": 412.0,
    },
    "catalog_update": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b02", "product_id": "B07XJ8C8F5", "marketplace": "EU",
        "locale": "de_DE", "title": "Kaffeebecher aus Keramik, 350 ml", "description": "Spülmaschinenfest.",
        "bullet_points": ["Keramik", "350 ml"], "category": "Küche > Trinkgefäße", "price": 12.99,
        "currency": "EUR", "item_length_mm": 120.0, "item_width_mm": 90.0, "item_height_mm": 95.0,
        "item_weight_g": 380.0, "updated_at": T0,
    },
    "shipment": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b03", "product_id": "B07XJ8C8F5", "shipment_id": "SHP-1",
        "package_type": "padded_mailer", "marketplace": "EU", "fulfillment_center": "FC-SEA1", "shipped_at": T0,
    },
    "damage_report": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b04", "product_id": "B07XJ8C8F5", "shipment_id": "SHP-1",
        "package_type": "padded_mailer", "source": "returns_center", "reason_code": "BROKEN",
        "comment": "Henkel abgebrochen", "reported_at": T0,
    },
    "test_result": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b08", "product_id": "B07XJ8C8F5", "marketplace": "EU",
        "package_type": "poly_bag", "protocol": "ISTA 6-Amazon.com SIOC type B", "samples_tested": 5,
        "samples_passed": 5, "failure_codes": [], "lab": "LAB-DUS1", "tested_at": T0,
        "request_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b07",
    },
    "pack_type_decision": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b05", "product_id": "B07XJ8C8F5", "marketplace": "EU",
        "package_type": "padded_mailer", "status": "auto_certified",
        "reason": "model certifies padded_mailer at the 0.5% target", "evidence": EVIDENCE,
        "target_damage_rate": 0.005, "model_version": "pw-20261129-ab12cd", "decided_at": T0, "provisional": False,
        "packaging_weight_g": 60.0, "all_box_weight_g": 180.0, "chosen_by": "model_certified",
        "audit_propensity": None,
    },
    "relabel_trigger": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b06", "product_id": "B07XJ8C8F5", "marketplace": "EU",
        "from_package_type": "poly_bag", "to_package_type": "padded_mailer", "cause": "damage_exceeds_target",
        "reason": "3 damages in 40 shipments", "shipments": 40, "damages": 3, "damage_rate_lower": 0.02,
        "damage_rate_upper": 0.19, "model_version": None, "triggered_at": T0,
    },
    "test_request": {
        "event_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b07", "product_id": "B07XJ8C8F5", "marketplace": "EU",
        "package_type": "poly_bag", "current_package_type": "box", "weight_saved_g": 230.0,
        "model_probability": 0.012, "model_version": "pw-20261129-ab12cd", "requested_at": T0, "status": "open",
        "request_id": "0b6f1c1e-4a8e-4a55-9d2c-1f0d7a1f5b07", "closed_at": None, "reason": None, "superseded_by": None,
    },
    "dead_letter": {
        "reason": "shipment message has wrong magic byte 0x7b", "error_type": "SerdeError",
        "original_key": b"B07XJ8C8F5", "original_value": b'{"json": true}', "topic": "shipments",
        "partition": 2, "offset": 1234, "failed_at": T0, "original_size": 14,
        "original_sha256": "5b0f1a9bd8bd6f6b4e94b2b0b0e5bcc1df8b9b1ad0d7a1e6b8e4a0b1c2d3e4f5",
    },
}
