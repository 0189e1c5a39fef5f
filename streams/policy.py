"""The decision policy: pure functions of (model probabilities, damage statistics, marketplace config).

No I/O here (DESIGN.md invariant 4), so every case can be tested exhaustively and replayed.

For each package type, the observed shipments give a lower bound on the damage rate from the data alone
(Clopper-Pearson) and an upper bound from the data plus the model's calibrated probability worth
`model_prior_weight` pseudo-shipments. A type is *certifiable* when the data do not contradict it (lower
bound within the target) and either the model certifies it or the upper bound is within the target.
The model certifies with the verdicts its bundle made for the marketplace's own target, or for the loosest
stricter target it was calibrated for (conservative there); never with verdicts made for a looser target,
so a bundle calibrated only for looser targets certifies nothing in that marketplace. The reason names the
target used. When the data contradict a type the model certified, the model is set aside for that product. The
decision is the lightest certifiable type the item fits (bags and mailers have a largest item); with none,
the box, pending a person's test of the lightest promising lighter type it fits.

Physical test results (a lab's verdict on one package type) are evidence of their own: a pass certifies its
type unless the field data contradict it (field data always win); a fail rules out its type and every
lighter one, certified or worth testing, until the product materially changes (the processor then forgets
its test results). A decision that a test made, or that a failure held heavier than it would otherwise
be, says so first in its reason (`test_passed: ...`, `test_failed: ...`), and so does its relabel trigger.
A test stops being worth asking for (`withdrawal_reason`) on the same conditions that keep the policy from
proposing it: the decision reaches its type, a failure or the field data rule the type out, the item does
not fit it, or the model no longer finds it promising; the processor then withdraws the open request.

A decision made while the product awaits its first model verdict is *provisional*: the warehouse ships in
it but does not label stock for it, so the verdict that replaces it moves nothing physical (no relabel
trigger), and it asks for no test (the verdict, seconds away, says which lighter type is worth one).

Every decision says how its type was chosen (`chosen_by`), so that the outcomes of its shipments can be told
apart as evidence (DESIGN.md invariant 7): a guarantee about the model's certifications holds only on outcomes
its own choice did not select. A marketplace may keep an *audit* budget (`audit_share`, off by default): a
product decided in some type is then, with that probability, shipped one step lighter instead (the heaviest
lighter type the item fits), unless a failed test or the field data rule that type out. The draw is a hash of
the product and the decision's context, not a random state, so a redelivery re-decides the same; it does not
look at the model's score, so the audit's outcomes are honest evidence with a known propensity. Data end an
audit as they end any decision: once they contradict the audited type, the product goes back, and it is not
audited in a still lighter type (the candidate is always the adjacent one).
"""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass
from typing import Mapping, NamedTuple

from scipy.special import betaincinv

from models.packtypes import PACK_TYPES, PackType
from streams.marketplaces import Marketplace, certifying_target

TINY = 1e-9  # keeps Beta parameters positive where a side has no evidence at all


class DecisionStatus(str, enum.Enum):
    AUTO_CERTIFIED = "auto_certified"
    NEEDS_TEST = "needs_test"


class ChosenBy(str, enum.Enum):
    """How a decision's package type was chosen (the Avro enum ChosenBy): which outcomes of its shipments the
    model's own score did not select (models/REPORT.md, "Honest evidence")."""

    MODEL_CERTIFIED = "model_certified"  # the model's verdict certified it (the data do not contradict it)
    DATA_CERTIFIED = "data_certified"  # the upper bound (data, the model's probability as a prior) meets the target
    TEST_PASSED = "test_passed"  # a physical test passed it
    SAFE_DEFAULT = "safe_default"  # nothing lighter is certified (or a failure rules it out): the box, pending a test
    PROVISIONAL = "provisional"  # decided on the data alone while the product awaits its first model verdict
    AUDIT = "audit"  # drawn, with probability audit_propensity, one step lighter than the evidence certifies
    UNKNOWN = "unknown"  # read from a decision published before the field existed; the policy never decides it


class TestOutcome(str, enum.Enum):
    """A physical test's verdict on one package type: every sample passed, or not."""

    __test__ = False  # not a pytest test class, despite its name
    PASSED = "passed"
    FAILED = "failed"


class RelabelCause(str, enum.Enum):
    DAMAGE_EXCEEDS_TARGET = "damage_exceeds_target"
    LIGHTER_CERTIFIABLE = "lighter_certifiable"
    CATALOG_CHANGED = "catalog_changed"
    RESCORED = "rescored"  # a new capture or model version changed the model's verdict


@dataclass(frozen=True)
class ModelView:
    """What the model said about one product: calibrated probabilities, and its certification verdicts per
    target its bundle was calibrated for (each with its own guarantee; see models/calibrate.py)."""

    probabilities: Mapping[PackType, float]
    certified: Mapping[float, Mapping[PackType, bool]]  # calibration target -> verdict per package type
    version: str

    def verdicts_for(self, target: float) -> tuple[float | None, Mapping[PackType, bool]]:
        """The verdicts a marketplace with `target` may take, and the calibration target they were made for:
        its own, else the loosest stricter one; none when the bundle was calibrated only for looser targets."""
        used = certifying_target(self.certified, target)
        return used, (self.certified[used] if used is not None else {})


class Counts(NamedTuple):
    shipments: int = 0
    damages: int = 0


class Evidence(NamedTuple):  # a tuple: the statistics path builds four per product it touches
    package_type: PackType
    model_probability: float | None
    model_certified: bool
    shipments: int
    damages: int
    damage_rate_lower: float
    damage_rate_upper: float
    contradicted: bool  # observed damages: even the optimistic bound exceeds the target
    certifiable: bool  # for this item: the evidence certifies the type and the item fits it
    test_passed: bool = False  # a physical test passed it (and no failure of it or a heavier type rules it out)
    test_ruled_out: bool = False  # a physical test failed it or a heavier type


@dataclass(frozen=True)
class TestProposal:
    package_type: PackType
    weight_saved_g: float
    model_probability: float | None


@dataclass(frozen=True)
class Decision:
    package_type: PackType
    status: DecisionStatus
    reason: str
    evidence: tuple[Evidence, ...]
    target_damage_rate: float
    model_version: str | None
    test: TestProposal | None
    provisional: bool = False  # decided while awaiting the product's first model verdict
    test_outcome: str | None = None  # "test_passed" / "test_failed": a physical test made this decision
    model_target: float | None = None  # the calibration target whose model verdicts counted (None: none did)
    chosen_by: ChosenBy = ChosenBy.SAFE_DEFAULT
    audit_propensity: float | None = None  # an audit's: the probability it was drawn with (the audit share)

    def evidence_for(self, pack: PackType) -> Evidence:
        return self.evidence[pack.index]


@dataclass(frozen=True)
class Relabel:
    from_package_type: PackType
    to_package_type: PackType
    cause: RelabelCause
    reason: str
    evidence: Evidence  # of from_package_type


@functools.lru_cache(maxsize=1 << 16)
def _clopper_pearson_lower(damages: int, shipments: int, level: float) -> float:
    return float(betaincinv(damages, shipments - damages + 1, 1.0 - level))


@functools.lru_cache(maxsize=1 << 16)
def _beta_upper(damages: float, clean: float, level: float) -> float:
    return float(betaincinv(damages + 1, clean + TINY, level))


def data_lower_bound(counts: Counts, market: Marketplace) -> float:
    """The damage rate the observed data alone prove at least (one-sided Clopper-Pearson): the model's
    prior never argues observed damage away."""
    damages = min(counts.damages, counts.shipments)
    if damages == 0:
        return 0.0
    return _clopper_pearson_lower(damages, counts.shipments, market.credible_level)


def upper_bound(model_probability: float | None, counts: Counts, market: Marketplace) -> float:
    """Upper bound on the damage rate at market.credible_level: Clopper-Pearson on the data (0 damages in
    n shipments: about 3/n at 95%), with `model_prior_weight` pseudo-shipments at the model's probability."""
    damages = min(counts.damages, counts.shipments)
    clean = counts.shipments - damages
    if model_probability is None:
        return _beta_upper(damages, clean, market.credible_level)
    p = min(max(model_probability, 0.0), 1.0)
    weight = market.model_prior_weight
    return _beta_upper(damages + weight * p, clean + weight * (1.0 - p), market.credible_level)


def _evidence(pack: PackType, model: ModelView | None, verdicts: Mapping[PackType, bool], counts: Counts,
              lower: float, market: Marketplace, model_refuted: bool, fits: bool, passed: bool = False,
              ruled_out: bool = False) -> Evidence:
    """Once data refute one of the model's certifications for a product, none of its verdicts count for
    it, and its prior may only make bounds more cautious (so more damage never certifies a lighter type).
    A passed physical test certifies like the model's verdict, unless the data contradict it; a failed one
    (of this type or a heavier one) rules the type out whatever the rest says. `verdicts`: the model's, made
    for the marketplace's target (ModelView.verdicts_for)."""
    probability = model.probabilities[pack] if model else None
    model_certified = bool(verdicts.get(pack, False))
    upper = upper_bound(probability, counts, market)
    if model_refuted and probability is not None:
        upper = max(upper, upper_bound(None, counts, market))
    target = market.target_damage_rate
    contradicted = lower > target
    certifiable = (fits and not contradicted and not ruled_out
                   and (passed or (model_certified and not model_refuted) or upper <= target))
    return Evidence(pack, probability, model_certified, counts.shipments, counts.damages, lower, upper,
                    contradicted, certifiable, passed and not ruled_out, ruled_out)


def _refutation(verdicts: Mapping[PackType, bool], counts: Mapping[PackType, Counts], lowers: list[float],
                market: Marketplace) -> str | None:
    """Why the data refute the model for this product (the first certified type they contradict), if they do."""
    for pack, lower in zip(PACK_TYPES, lowers):
        if lower > market.target_damage_rate and verdicts.get(pack, False):
            seen = counts.get(pack, NO_COUNTS)
            return (f"{_damages(seen.damages)} in {seen.shipments} {pack.value} shipments (lower bound {_pct(lower)} > "
                    f"target {_pct(market.target_damage_rate)}) refute the model's certification; it is set aside "
                    "for this product")
    return None


NO_COUNTS = Counts()


def _pct(rate: float) -> str:
    return f"{100 * rate:.2f}%"


def _damages(n: int) -> str:
    return f"{n} damage" if n == 1 else f"{n} damages"


def decide(
    model: ModelView | None,
    counts: Mapping[PackType, Counts],
    market: Marketplace,
    item_mm: tuple[float, float, float],
    awaiting_verdict: bool = False,
    tests: Mapping[PackType, TestOutcome] | None = None,
    audit_key: str | None = None,
) -> Decision:
    """The lightest package type the evidence certifies and the item fits, or the box pending a test.
    `awaiting_verdict`: the product's first model verdict is still to come (without a model view, the
    decision is then provisional); False when the model was asked and could not score the product.
    `tests`: the latest physical test outcome per package type, since the product last changed materially.
    `audit_key`: the product id, which draws its audit when the marketplace keeps an audit share (None: no audit)."""
    tests = tests or {}
    target = market.target_damage_rate
    model_target, verdicts = model.verdicts_for(target) if model else (None, {})
    seen = [counts.get(pack, NO_COUNTS) for pack in PACK_TYPES]
    lowers = [data_lower_bound(c, market) for c in seen]
    refutation = _refutation(verdicts, counts, lowers, market)
    fits = [market.fits(pack, item_mm) for pack in PACK_TYPES]
    failed = [pack for pack in PACK_TYPES if tests.get(pack) is TestOutcome.FAILED]
    heaviest_failed = failed[-1] if failed else None
    evidence = tuple(_evidence(pack, model, verdicts, c, lower, market, refutation is not None, fit,
                               tests.get(pack) is TestOutcome.PASSED,
                               heaviest_failed is not None and pack.index <= heaviest_failed.index)
                     for pack, c, lower, fit in zip(PACK_TYPES, seen, lowers, fits))
    certified = [e for e in evidence if e.certifiable]
    test_outcome = None
    if certified and certified[0].test_passed and not (
            (certified[0].model_certified and refutation is None) or certified[0].damage_rate_upper <= target):
        chosen, status, test_outcome = certified[0], DecisionStatus.AUTO_CERTIFIED, "test_passed"
        chosen_by = ChosenBy.TEST_PASSED
        reason = (f"test_passed: {chosen.package_type.value} passed a physical test; {_damages(chosen.damages)} in "
                  f"{chosen.shipments} shipments do not contradict it (lower bound {_pct(chosen.damage_rate_lower)} "
                  f"<= target {_pct(target)})")
    elif certified:
        chosen, status, chosen_by = certified[0], DecisionStatus.AUTO_CERTIFIED, ChosenBy.DATA_CERTIFIED
        if chosen.model_certified and refutation is None and chosen.damage_rate_upper > target:
            chosen_by = ChosenBy.MODEL_CERTIFIED
            assert model_target is not None  # a verdict was taken, so it was made for some target
            at = (f"at target {_pct(model_target)}" if model_target >= target else
                  f"at target {_pct(model_target)}, stricter than the marketplace's {_pct(target)}")
            reason = (f"model certifies {chosen.package_type.value} {at} "
                      f"(p={_pct(chosen.model_probability or 0.0)}); {_damages(chosen.damages)} in "
                      f"{chosen.shipments} shipments do not contradict it")
        else:
            reason = (f"{_damages(chosen.damages)} in {chosen.shipments} {chosen.package_type.value} shipments: "
                      f"upper bound {_pct(chosen.damage_rate_upper)} <= target {_pct(target)}")
    else:
        chosen, status, chosen_by = evidence[PackType.BOX.index], DecisionStatus.NEEDS_TEST, ChosenBy.SAFE_DEFAULT
        reason = f"no package type meets target {_pct(target)} yet; box until a physical test says otherwise"
    if model is not None and model_target is None:
        calibrated = ", ".join(_pct(t) for t in sorted(model.certified)) or "no target it names"
        reason += (f"; model {model.version} certifies nothing at target {_pct(target)}: it was calibrated for "
                   f"{calibrated}")
    if refutation:
        reason = f"{refutation}; {reason}"
    if heaviest_failed is not None and test_outcome is None:
        if decide(model, counts, market, item_mm, awaiting_verdict).package_type.index < chosen.package_type.index:
            test_outcome = "test_failed"  # the failure holds the product heavier than the rest would
        reason = (f"test_failed: {heaviest_failed.value} failed a physical test, which rules it out and every "
                  f"lighter type until the product changes; {reason}")
    too_small = [pack.value for pack, fit in zip(PACK_TYPES[: chosen.package_type.index], fits) if not fit]
    if too_small:
        size = "x".join(f"{side:.0f}" for side in sorted(item_mm, reverse=True))
        reason += f"; the item ({size} mm) does not fit a {' or '.join(too_small)}"
    provisional = awaiting_verdict and model is None
    audit = None if provisional or audit_key is None else _audit(audit_key, evidence, chosen.package_type, market,
                                                                   fits)
    propensity = None
    if audit is not None:
        reason = (f"audit: {audit.package_type.value} instead of {chosen.package_type.value}, drawn with probability "
                  f"{_pct(market.audit_share)} to measure it by a choice the model's score did not make; "
                  f"{chosen.package_type.value} would be: {reason}")
        chosen, status, chosen_by, propensity, test_outcome = (audit, DecisionStatus.NEEDS_TEST, ChosenBy.AUDIT,
                                                               market.audit_share, None)
    test = None if provisional else _test_proposal(evidence, chosen.package_type, market, item_mm, fits)
    if test and status is DecisionStatus.NEEDS_TEST:
        reason += f"; test {test.package_type.value} (saves {test.weight_saved_g:.0f} g per unit)"
    if provisional:
        reason = f"provisional until the model's first verdict: {reason}"
        chosen_by = ChosenBy.PROVISIONAL
    return Decision(chosen.package_type, status, reason, evidence, target,
                    model.version if model else None, test, provisional, test_outcome, model_target, chosen_by,
                    propensity)


def audit_draw(product_id: str, market_code: str, decided: PackType, candidate: PackType) -> float:
    """A uniform number in [0, 1) fixed by the product and the audit's context: no random state, so every
    re-decision of the product (a redelivery, a restart, another worker) draws the same. It does not see the
    model's score, so the audit's propensity is the audit share whatever the model says."""
    digest = hashlib.blake2b(f"{product_id}/{market_code}/{decided.value}/{candidate.value}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def _audit(product_id: str, evidence: tuple[Evidence, ...], decided: PackType, market: Marketplace,
           fits: list[bool]) -> Evidence | None:
    """The lighter type to ship in as an audit, if the draw falls within the marketplace's audit share: the heaviest
    type lighter than `decided` that the item fits, unless a failed test or the field data rule it out. Never one
    still lighter: once data refute the audited type, the product goes back and stays."""
    if market.audit_share <= 0.0:
        return None
    candidate = next((e for e in reversed(evidence[: decided.index]) if fits[e.package_type.index]), None)
    if candidate is None or candidate.test_ruled_out or candidate.contradicted:
        return None
    if audit_draw(product_id, market.code, decided, candidate.package_type) >= market.audit_share:
        return None
    return candidate


def _test_proposal(evidence: tuple[Evidence, ...], chosen: PackType, market: Marketplace,
                   item_mm: tuple[float, float, float], fits: list[bool]) -> TestProposal | None:
    """The lightest type lighter than `chosen` that the item fits, the data do not rule out and the model finds
    promising (any such type when the model could not score the product): the test that would save the most
    packaging."""
    for e, fit in zip(evidence[: chosen.index], fits):
        if _not_worth_testing(e, fit, chosen, market) is None:
            saved = market.packaging_weight_g(chosen, item_mm) - market.packaging_weight_g(e.package_type, item_mm)
            return TestProposal(e.package_type, saved, e.model_probability)
    return None


def _not_worth_testing(e: Evidence, fit: bool, chosen: PackType, market: Marketplace) -> str | None:
    """Why a physical test of e's type would not serve a product decided `chosen`, or None when it would."""
    pack, target = e.package_type, market.target_damage_rate
    if pack.index >= chosen.index:
        return f"the decision is {chosen.value}: a pass of {pack.value} would save nothing"
    if e.test_ruled_out:
        return f"a failed physical test rules out {pack.value}"
    if e.contradicted:
        return (f"field data contradict {pack.value}: {_damages(e.damages)} in {e.shipments} shipments (lower bound "
                f"{_pct(e.damage_rate_lower)} > target {_pct(target)})")
    if not fit:
        return f"the item does not fit a {pack.value}"
    if e.model_probability is not None and e.model_probability > market.promising_factor * target:
        return f"the model no longer finds {pack.value} promising (p={_pct(e.model_probability)})"
    return None


def withdrawal_reason(decision: Decision, tested: PackType, market: Marketplace,
                      item_mm: tuple[float, float, float]) -> str | None:
    """Why a test of `tested` no longer serves under `decision` (its open request is withdrawn), or None while
    the type is still worth testing: the same conditions as the test the policy proposes."""
    return _not_worth_testing(decision.evidence_for(tested), market.fits(tested, item_mm), decision.package_type,
                              market)


def relabel(previous: PackType | None, decision: Decision, catalog_changed: bool = False,
            previous_provisional: bool = False) -> Relabel | None:
    """The trigger to publish when `decision` moves a product off the package type it had, else None. Moving
    off a provisional decision is no relabel: no stock was labelled for it."""
    if previous is None or previous is decision.package_type or previous_provisional:
        return None
    before = decision.evidence_for(previous)
    target = decision.target_damage_rate
    if catalog_changed:
        cause = RelabelCause.CATALOG_CHANGED
        reason = f"catalog changed materially; re-scored: {decision.reason}"
    elif decision.package_type.index > previous.index and before.damages and before.damage_rate_lower > target:
        cause = RelabelCause.DAMAGE_EXCEEDS_TARGET
        reason = (f"{_damages(before.damages)} in {before.shipments} {previous.value} shipments: lower bound "
                  f"{_pct(before.damage_rate_lower)} > target {_pct(target)}; moving to {decision.package_type.value}")
    elif decision.package_type.index < previous.index:
        cause = RelabelCause.LIGHTER_CERTIFIABLE
        reason = f"{decision.package_type.value} is now certifiable: {decision.reason}"
    else:
        cause = RelabelCause.RESCORED
        reason = f"a new score no longer certifies {previous.value}: {decision.reason}"
    # the relabel_trigger contract's causes are a closed Avro enum without a default, so a new symbol would
    # break its old readers: a test outcome, or an audit, leads the reason instead
    lead = decision.test_outcome or ("audit" if decision.chosen_by is ChosenBy.AUDIT else None)
    if lead and not catalog_changed:
        reason = f"{lead}: moving {previous.value} to {decision.package_type.value}; {decision.reason}"
    return Relabel(previous, decision.package_type, cause, reason, before)
