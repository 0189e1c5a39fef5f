"""A simulated test lab for the simulated fulfillment center: given the open test requests the workers publish
(streams/simulator.py follows them), each shipping round it answers the ones that would save the most
packaging with a physical test whose outcome comes from the world's hidden truth. What a real lab sends back
on `test-results`.

One tested unit goes through the handling hazards of many shipments (drops, vibration, compression), so a unit
fails a test far more often than one shipment damages it: with per-shipment damage probability p, a unit fails
with 1 - (1 - p)^HAZARD_SHIPMENTS. Fragile items are tested on five units, others on one; the test passes only
when every unit comes through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from models.packtypes import PackType
from models.world import REASONS, Material, Product, event_uuid

HAZARD_SHIPMENTS = 30
FRAGILE = {Material.GLASS, Material.CERAMIC, Material.ELECTRONICS}
LAB_CODE = "LAB-SIM-1"
PROTOCOLS = {  # illustrative: which ISTA 6-Amazon.com protocol a lab would run for each package type
    PackType.SIOC: "ISTA 6-Amazon.com SIOC type A",
    PackType.POLY_BAG: "ISTA 6-Amazon.com SIOC type B",
    PackType.PADDED_MAILER: "ISTA 6-Amazon.com SIOC type C",
    PackType.BOX: "ISTA 6-Amazon.com over-boxing",
}


@dataclass(frozen=True)
class LabOutcome:
    samples_tested: int
    samples_passed: int
    failure_codes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.samples_passed == self.samples_tested


def run_test(product: Product, pack: PackType, rng: np.random.Generator) -> LabOutcome:
    """The lab's test of `product` in `pack`, from the product's hidden damage probability."""
    samples = 5 if product.material in FRAGILE else 1
    unit_fails = 1.0 - (1.0 - product.damage_probability_of(pack)) ** HAZARD_SHIPMENTS
    failed = int((rng.random(samples) < unit_fails).sum())
    return LabOutcome(samples, samples - failed, (REASONS[product.material.value],) * failed)


@dataclass
class SimulatedLab:
    """Answers up to `tests_per_round` open requests per round, biggest saving first, each request once."""

    products: dict[str, Product]
    tests_per_round: int
    rng: np.random.Generator
    send: Callable[[str, dict], None]  # (product id, TestResult record)
    answered: set[str] = field(default_factory=set)
    results: list[tuple[str, PackType, bool]] = field(default_factory=list)  # (product, type, passed)

    def round(self, open_requests: list[dict]) -> int:
        waiting = [r for r in open_requests if (r.get("request_id") or r["event_id"]) not in self.answered
                   and r["product_id"] in self.products]
        waiting.sort(key=lambda r: (-r["weight_saved_g"], r["product_id"]))
        for request in waiting[: self.tests_per_round]:
            request_id = request.get("request_id") or request["event_id"]
            product, pack = self.products[request["product_id"]], PackType(request["package_type"])
            outcome = run_test(product, pack, self.rng)
            self.send(product.product_id, {
                "event_id": event_uuid(self.rng), "product_id": product.product_id,
                "marketplace": request["marketplace"], "package_type": pack.value, "protocol": PROTOCOLS[pack],
                "samples_tested": outcome.samples_tested, "samples_passed": outcome.samples_passed,
                "failure_codes": list(outcome.failure_codes), "lab": LAB_CODE,
                "tested_at": datetime.now(timezone.utc), "request_id": request_id})
            self.answered.add(request_id)
            self.results.append((product.product_id, pack, outcome.passed))
        return min(len(waiting), self.tests_per_round)
