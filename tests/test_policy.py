"""The decision policy, exhaustively: certify, need a test, relabel both ways, marketplaces, evidence kinds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.packtypes import PACK_TYPES, PackType
from streams.marketplaces import DEFAULT_MARKETPLACES, Marketplace
from streams.policy import (
    ChosenBy, Counts, Decision, DecisionStatus, ModelView, RelabelCause, TestOutcome, audit_draw, data_lower_bound,
    decide, relabel, upper_bound, withdrawal_reason,
)

NA, EU, JP = (DEFAULT_MARKETPLACES[code] for code in ("NA", "EU", "JP"))
MUG_MM = (120.0, 90.0, 95.0)  # fits the small box
LAMP_MM = (420.0, 300.0, 200.0)  # needs the large box


TARGETS = tuple(sorted({m.target_damage_rate for m in DEFAULT_MARKETPLACES.values()}))


def model(probabilities: list[float], certified: list[bool], version: str = "pw-test",
          targets: tuple[float, ...] = TARGETS) -> ModelView:
    """The same verdicts at every target given (by default each marketplace's own)."""
    return ModelView(dict(zip(PACK_TYPES, probabilities)), {t: dict(zip(PACK_TYPES, certified)) for t in targets},
                     version)


# A product the model is sure about from poly_bag upwards.
CONFIDENT = model([0.03, 0.001, 0.0005, 0.0001], [False, True, True, True])


def test_no_model_no_data_ships_in_a_box_pending_a_test_of_the_lightest_type() -> None:
    decision = decide(None, {}, NA, MUG_MM)
    assert decision.package_type is PackType.BOX and decision.status is DecisionStatus.NEEDS_TEST
    assert decision.model_version is None
    assert decision.test is not None and decision.test.package_type is PackType.SIOC
    assert decision.test.weight_saved_g == pytest.approx(150.0 - 5.0)
    assert "box until a physical test" in decision.reason


def test_model_alone_certifies_its_lightest_certified_type() -> None:
    decision = decide(CONFIDENT, {}, NA, MUG_MM)
    assert decision.package_type is PackType.POLY_BAG and decision.status is DecisionStatus.AUTO_CERTIFIED
    assert decision.model_version == "pw-test"
    assert "model certifies poly_bag" in decision.reason
    # sioc at 3% is beyond 4x the 0.5% target: not worth a person's time.
    assert decision.test is None


def test_model_finds_a_lighter_type_promising_enough_to_test() -> None:
    hopeful = model([0.012, 0.001, 0.0005, 0.0001], [False, True, True, True])
    decision = decide(hopeful, {}, NA, MUG_MM)
    assert decision.package_type is PackType.POLY_BAG
    assert decision.test is not None and decision.test.package_type is PackType.SIOC
    assert decision.test.weight_saved_g == pytest.approx(20.0 - 5.0)
    assert decision.test.model_probability == pytest.approx(0.012)


def test_statistics_alone_certify_after_enough_clean_shipments() -> None:
    few = decide(None, {PackType.POLY_BAG: Counts(100, 0)}, NA, MUG_MM)
    many = decide(None, {PackType.POLY_BAG: Counts(700, 0)}, NA, MUG_MM)
    assert few.package_type is PackType.BOX and few.status is DecisionStatus.NEEDS_TEST
    assert many.package_type is PackType.POLY_BAG and many.status is DecisionStatus.AUTO_CERTIFIED
    assert "0 damages in 700 poly_bag shipments" in many.reason
    # the rule of three: 0 in n puts the 95% upper bound near 3/n
    assert many.evidence_for(PackType.POLY_BAG).damage_rate_upper == pytest.approx(3 / 700, rel=0.05)


def test_damage_data_refute_the_model_which_is_then_set_aside_for_the_product() -> None:
    decision = decide(CONFIDENT, {PackType.POLY_BAG: Counts(200, 6)}, NA, MUG_MM)
    poly = decision.evidence_for(PackType.POLY_BAG)
    assert poly.model_certified and poly.contradicted and not poly.certifiable
    assert poly.damage_rate_lower == pytest.approx(data_lower_bound(Counts(200, 6), NA))
    # The model also certified padded_mailer and box, but it was wrong about this product.
    assert decision.package_type is PackType.BOX and decision.status is DecisionStatus.NEEDS_TEST
    assert "refute the model's certification" in decision.reason


def test_data_alone_certify_a_type_once_the_model_is_set_aside() -> None:
    counts = {PackType.POLY_BAG: Counts(200, 6), PackType.PADDED_MAILER: Counts(900, 0)}
    decision = decide(CONFIDENT, counts, NA, MUG_MM)
    assert decision.package_type is PackType.PADDED_MAILER and decision.status is DecisionStatus.AUTO_CERTIFIED


def test_the_lower_bound_comes_from_the_data_alone() -> None:
    assert data_lower_bound(Counts(0, 0), NA) == 0.0 and data_lower_bound(Counts(50, 0), NA) == 0.0
    # 3 damages in 15 shipments prove more than 5% at 95% (one-sided Clopper-Pearson).
    assert data_lower_bound(Counts(15, 3), NA) == pytest.approx(0.0568, abs=5e-4)


def test_box_fallback_when_even_a_box_breaks() -> None:
    fragile = model([0.3, 0.2, 0.1, 0.05], [False, False, False, False])
    decision = decide(fragile, {PackType.BOX: Counts(50, 5)}, NA, LAMP_MM)
    assert decision.package_type is PackType.BOX and decision.status is DecisionStatus.NEEDS_TEST
    assert decision.test is None  # nothing lighter is promising


def test_every_decision_carries_its_evidence() -> None:
    decision = decide(CONFIDENT, {PackType.SIOC: Counts(10, 2), PackType.BOX: Counts(3, 0)}, NA, MUG_MM)
    assert [e.package_type for e in decision.evidence] == PACK_TYPES
    sioc = decision.evidence_for(PackType.SIOC)
    assert (sioc.shipments, sioc.damages, sioc.model_probability) == (10, 2, 0.03)
    assert all(0.0 <= e.damage_rate_lower <= e.damage_rate_upper <= 1.0 for e in decision.evidence)
    assert decision.target_damage_rate == NA.target_damage_rate


def test_marketplaces_differ_in_target_and_weights() -> None:
    counts = {PackType.POLY_BAG: Counts(680, 0)}
    assert decide(None, counts, NA, MUG_MM).package_type is PackType.POLY_BAG
    assert decide(None, counts, EU, MUG_MM).package_type is PackType.BOX  # stricter target
    na_test = decide(None, {}, NA, LAMP_MM).test
    jp_test = decide(None, {}, JP, LAMP_MM).test
    assert na_test and jp_test and na_test.weight_saved_g > jp_test.weight_saved_g  # JP boxes are lighter
    assert NA.box_for(LAMP_MM).name == "L" and NA.box_for(MUG_MM).name == "S"


def test_a_verdict_made_for_a_looser_target_certifies_nothing_in_a_stricter_marketplace() -> None:
    """A bundle certified at 0.5% only: its verdicts hold in NA (0.5%), not in EU (0.4%) or JP (0.3%), where the
    products go to a test, and the reason says why."""
    view = model([0.03, 0.001, 0.0005, 0.0001], [False, True, True, True], targets=(0.005,))
    na = decide(view, {}, NA, MUG_MM)
    assert na.package_type is PackType.POLY_BAG and na.status is DecisionStatus.AUTO_CERTIFIED
    assert na.model_target == 0.005 and "model certifies poly_bag at target 0.50%" in na.reason
    for market in (EU, JP):
        decision = decide(view, {}, market, MUG_MM)
        assert decision.package_type is PackType.BOX and decision.status is DecisionStatus.NEEDS_TEST
        assert decision.model_target is None and not any(e.model_certified for e in decision.evidence)
        assert (f"model pw-test certifies nothing at target {100 * market.target_damage_rate:.2f}%: it was "
                "calibrated for 0.50%") in decision.reason


def test_each_marketplace_takes_the_verdicts_made_for_its_own_target() -> None:
    """Verdicts per target: EU takes the 0.4% ones (poly_bag), JP the 0.3% ones (padded_mailer), NA the 0.5% ones
    (sioc), though each would certify more or less with another's."""
    view = ModelView(dict(zip(PACK_TYPES, [0.002, 0.001, 0.0005, 0.0001])),
                     {0.005: dict(zip(PACK_TYPES, [True, True, True, True])),
                      0.004: dict(zip(PACK_TYPES, [False, True, True, True])),
                      0.003: dict(zip(PACK_TYPES, [False, False, True, True]))}, "pw-test")
    chosen = {code: decide(view, {}, market, MUG_MM) for code, market in (("NA", NA), ("EU", EU), ("JP", JP))}
    assert {code: d.package_type for code, d in chosen.items()} == {
        "NA": PackType.SIOC, "EU": PackType.POLY_BAG, "JP": PackType.PADDED_MAILER}
    assert {code: d.model_target for code, d in chosen.items()} == {"NA": 0.005, "EU": 0.004, "JP": 0.003}
    assert "model certifies poly_bag at target 0.40% (p=" in chosen["EU"].reason


def test_a_stricter_targets_verdicts_serve_a_looser_marketplace_and_the_reason_says_so() -> None:
    view = model([0.03, 0.001, 0.0005, 0.0001], [False, True, True, True], targets=(0.003,))
    decision = decide(view, {}, EU, MUG_MM)
    assert decision.package_type is PackType.POLY_BAG and decision.model_target == 0.003
    assert "model certifies poly_bag at target 0.30%, stricter than the marketplace's 0.40%" in decision.reason


def test_a_model_without_thresholds_for_any_target_certifies_nothing() -> None:
    """A verdict that names no target (kept by a worker before per-target certification, from a bundle no longer
    loaded) is set aside: the model's probability still counts as a prior, its certification does not."""
    view = ModelView(CONFIDENT.probabilities, {}, "pw-old")
    decision = decide(view, {}, NA, MUG_MM)
    assert decision.package_type is PackType.BOX and decision.model_target is None
    assert "model pw-old certifies nothing at target 0.50%: it was calibrated for no target it names" in decision.reason
    assert decision.evidence_for(PackType.POLY_BAG).model_probability == 0.001


def test_relabel_to_heavier_when_damage_exceeds_the_target() -> None:
    before = decide(CONFIDENT, {}, NA, MUG_MM)
    after = decide(CONFIDENT, {PackType.POLY_BAG: Counts(200, 6)}, NA, MUG_MM)
    trigger = relabel(before.package_type, after)
    assert trigger is not None and trigger.cause is RelabelCause.DAMAGE_EXCEEDS_TARGET
    assert (trigger.from_package_type, trigger.to_package_type) == (PackType.POLY_BAG, PackType.BOX)
    assert (trigger.evidence.shipments, trigger.evidence.damages) == (200, 6)
    assert "6 damages in 200 poly_bag shipments" in trigger.reason


def test_relabel_to_lighter_when_evidence_certifies_it() -> None:
    after = decide(None, {PackType.POLY_BAG: Counts(700, 0)}, NA, MUG_MM)
    trigger = relabel(PackType.BOX, after)
    assert trigger is not None and trigger.cause is RelabelCause.LIGHTER_CERTIFIABLE
    assert trigger.to_package_type is PackType.POLY_BAG


def test_relabel_on_catalog_change_and_on_rescore() -> None:
    after = decide(model([0.3, 0.2, 0.001, 0.0001], [False, False, True, True]), {}, NA, MUG_MM)
    assert relabel(PackType.POLY_BAG, after, catalog_changed=True).cause is RelabelCause.CATALOG_CHANGED
    assert relabel(PackType.POLY_BAG, after).cause is RelabelCause.RESCORED


def test_no_trigger_without_a_move() -> None:
    decision = decide(CONFIDENT, {}, NA, MUG_MM)
    assert relabel(None, decision) is None
    assert relabel(PackType.POLY_BAG, decision) is None


def test_model_prior_weight_decides_how_fast_data_overrule_the_model() -> None:
    light = Marketplace(**{**NA.__dict__, "model_prior_weight": 10.0})
    heavy = Marketplace(**{**NA.__dict__, "model_prior_weight": 5000.0})
    counts = Counts(100, 2)
    assert upper_bound(0.001, counts, light) > upper_bound(0.001, counts, heavy)


probabilities = st.lists(st.floats(0.0, 0.5), min_size=4, max_size=4)
verdicts = st.lists(st.booleans(), min_size=4, max_size=4)
count_pairs = st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 40)), min_size=4, max_size=4)


@st.composite
def situations(draw):
    scored = draw(st.booleans())
    view = model(draw(probabilities), draw(verdicts)) if scored else None
    counts = {pack: Counts(n, min(d, n)) for pack, (n, d) in zip(PACK_TYPES, draw(count_pairs))}
    return view, counts, draw(st.sampled_from(PACK_TYPES)), draw(st.sampled_from(list(DEFAULT_MARKETPLACES)))


@settings(max_examples=300, deadline=None)
@given(situations(), st.integers(1, 20), st.booleans())
def test_more_damage_evidence_never_moves_to_a_lighter_package(situation, extra: int, with_shipments: bool) -> None:
    view, counts, pack, code = situation
    market = DEFAULT_MARKETPLACES[code]
    before = decide(view, counts, market, MUG_MM)
    old = counts[pack]
    shipments = old.shipments + extra if with_shipments else max(old.shipments, old.damages + extra)
    worse = {**counts, pack: Counts(shipments, old.damages + extra)}
    after = decide(view, worse, market, MUG_MM)
    assert after.package_type.index >= before.package_type.index


@settings(max_examples=200, deadline=None)
@given(situations(), st.integers(1, 500))
def test_clean_shipments_never_move_to_a_heavier_package(situation, extra: int) -> None:
    view, counts, pack, code = situation
    market = DEFAULT_MARKETPLACES[code]
    before = decide(view, counts, market, MUG_MM)
    old = counts[pack]
    after = decide(view, {**counts, pack: Counts(old.shipments + extra, old.damages)}, market, MUG_MM)
    assert after.package_type.index <= before.package_type.index


def test_reasons_count_one_damage_in_the_singular() -> None:
    """What an operator reads in `watch`: "1 damage in 9 shipments", not "1 damages"."""
    decision = decide(CONFIDENT, {PackType.POLY_BAG: Counts(9, 1)}, NA, MUG_MM)
    trigger = relabel(PackType.POLY_BAG, decision)
    assert "1 damage in 9 poly_bag shipments" in decision.reason and "1 damages" not in decision.reason
    assert trigger is not None and "1 damage in 9 poly_bag shipments" in trigger.reason
    assert "0 damages in 700" in decide(None, {PackType.POLY_BAG: Counts(700, 0)}, NA, MUG_MM).reason


# -- provisional decisions: before the product's first model verdict ----------------------------------------

def test_a_decision_awaiting_its_first_verdict_is_provisional_and_asks_no_test() -> None:
    """The verdict comes within seconds; a test chosen without it would be the lightest type for every product."""
    decision = decide(None, {}, NA, MUG_MM, awaiting_verdict=True)
    assert decision.provisional and decision.package_type is PackType.BOX
    assert decision.test is None and "; test " not in decision.reason
    assert "provisional" in decision.reason
    # the model could not score the product (it was asked): statistics decide for good, and a test is asked
    final = decide(None, {}, NA, MUG_MM)
    assert not final.provisional and final.test is not None
    # a verdict ends the provisional state whatever the caller says
    assert not decide(CONFIDENT, {}, NA, MUG_MM, awaiting_verdict=True).provisional


def test_the_first_verdict_replacing_a_provisional_decision_is_no_relabel() -> None:
    provisional = decide(None, {}, NA, MUG_MM, awaiting_verdict=True)
    verdict = decide(CONFIDENT, {}, NA, MUG_MM)
    assert verdict.package_type is not provisional.package_type
    assert relabel(provisional.package_type, verdict, previous_provisional=True) is None
    # the same move from a decision that was final is physical work, and says so
    trigger = relabel(provisional.package_type, verdict)
    assert trigger is not None and trigger.cause is RelabelCause.LIGHTER_CERTIFIABLE


# -- fit: bags and mailers have sizes too -------------------------------------------------------------------

def test_a_bag_or_mailer_the_item_does_not_fit_is_never_chosen_nor_tested() -> None:
    # LAMP_MM is 200 mm thick: too thick for the default poly bag and padded mailer
    assert not NA.fits(PackType.POLY_BAG, LAMP_MM) and not NA.fits(PackType.PADDED_MAILER, LAMP_MM)
    assert NA.fits(PackType.SIOC, LAMP_MM) and NA.fits(PackType.BOX, LAMP_MM)
    assert decide(CONFIDENT, {}, NA, MUG_MM).package_type is PackType.POLY_BAG
    lamp = decide(CONFIDENT, {}, NA, LAMP_MM)
    assert lamp.package_type is PackType.BOX and lamp.status is DecisionStatus.AUTO_CERTIFIED
    assert "does not fit" in lamp.reason
    # statistics alone (shipments someone squeezed into bags) do not make it fit either
    assert decide(None, {PackType.POLY_BAG: Counts(900, 0)}, NA, LAMP_MM).package_type is PackType.BOX
    # a promising bag it does not fit is not worth a person's test; sioc (its own container) is
    hopeful = model([0.3, 0.004, 0.003, 0.0001], [False, False, False, True])
    assert decide(hopeful, {}, NA, MUG_MM).test.package_type is PackType.POLY_BAG
    assert decide(hopeful, {}, NA, LAMP_MM).test is None
    assert decide(None, {}, NA, LAMP_MM).test.package_type is PackType.SIOC


def test_a_marketplace_with_bigger_bags_fits_the_item() -> None:
    roomy = Marketplace(**{**NA.__dict__, "poly_bag_max_item_mm": (600.0, 450.0, 250.0)})
    assert decide(CONFIDENT, {}, roomy, LAMP_MM).package_type is PackType.POLY_BAG


item_sizes = st.tuples(*[st.floats(1.0, 700.0)] * 3)


@settings(max_examples=300, deadline=None)
@given(situations(), item_sizes, st.booleans())
def test_no_decision_or_test_puts_an_item_in_a_package_it_does_not_fit(situation, item_mm, awaiting: bool) -> None:
    view, counts, _, code = situation
    market = DEFAULT_MARKETPLACES[code]
    decision = decide(view, counts, market, item_mm, awaiting_verdict=awaiting)
    assert market.fits(decision.package_type, item_mm)
    if decision.test is not None:
        assert market.fits(decision.test.package_type, item_mm)
        assert decision.test.weight_saved_g > 0


@given(situations(), item_sizes, st.dictionaries(st.sampled_from(PACK_TYPES), st.sampled_from(list(TestOutcome))))
def test_the_proposed_test_is_the_lightest_type_nothing_makes_moot(situation, item_mm, tests) -> None:
    """A test request stays open exactly while withdrawal_reason finds nothing against its type: so the worker
    never withdraws the test the policy proposes, nor keeps one it would not propose."""
    view, counts, _, code = situation
    market = DEFAULT_MARKETPLACES[code]
    decision = decide(view, counts, market, item_mm, tests=tests)
    reasons = [withdrawal_reason(decision, pack, market, item_mm) for pack in PACK_TYPES]
    worth = [pack for pack, reason in zip(PACK_TYPES, reasons) if reason is None]
    assert (decision.test.package_type if decision.test else None) == (worth[0] if worth else None)
    assert all(reasons[pack.index] for pack in PACK_TYPES[decision.package_type.index:])  # nothing heavier


def test_a_withdrawn_test_says_what_made_it_moot() -> None:
    hopeful = model([0.012, 0.008, 0.006, 0.0001], [False, False, False, True])
    decision = decide(hopeful, {PackType.SIOC: Counts(40, 5)}, EU, MUG_MM,
                      tests={PackType.POLY_BAG: TestOutcome.FAILED})
    assert decision.package_type is PackType.BOX
    assert withdrawal_reason(decision, PackType.BOX, EU, MUG_MM) == (
        "the decision is box: a pass of box would save nothing")
    assert withdrawal_reason(decision, PackType.POLY_BAG, EU, MUG_MM) == "a failed physical test rules out poly_bag"
    assert withdrawal_reason(decision, PackType.PADDED_MAILER, EU, MUG_MM) is None
    assert withdrawal_reason(decision, PackType.PADDED_MAILER, EU, (420.0, 300.0, 200.0)) == (
        "the item does not fit a padded_mailer")
    refuted = decide(hopeful, {PackType.POLY_BAG: Counts(40, 5)}, EU, MUG_MM)
    assert withdrawal_reason(refuted, PackType.POLY_BAG, EU, MUG_MM).startswith(
        "field data contradict poly_bag: 5 damages in 40 shipments (lower bound")
    unpromising = decide(model([0.3, 0.2, 0.1, 0.0001], [False, False, False, True]), {}, EU, MUG_MM)
    assert withdrawal_reason(unpromising, PackType.SIOC, EU, MUG_MM) == (
        "the model no longer finds sioc promising (p=30.00%)")


# -- physical test results ------------------------------------------------------------------------------------

PASSED, FAILED = TestOutcome.PASSED, TestOutcome.FAILED
# The model finds poly_bag promising but certifies nothing lighter than the box.
UNSURE = model([0.02, 0.008, 0.006, 0.0001], [False, False, False, True])


def test_a_passed_test_certifies_its_type_and_moves_the_product_lighter() -> None:
    before = decide(UNSURE, {}, NA, MUG_MM)
    after = decide(UNSURE, {}, NA, MUG_MM, tests={PackType.POLY_BAG: PASSED})
    assert before.package_type is PackType.BOX
    assert after.package_type is PackType.POLY_BAG and after.status is DecisionStatus.AUTO_CERTIFIED
    assert after.reason.startswith("test_passed: poly_bag passed a physical test")
    trigger = relabel(PackType.BOX, after)
    assert trigger is not None and trigger.cause is RelabelCause.LIGHTER_CERTIFIABLE
    assert trigger.reason.startswith("test_passed")


def test_field_data_refuting_a_passed_test_win() -> None:
    decision = decide(UNSURE, {PackType.POLY_BAG: Counts(200, 6)}, NA, MUG_MM, tests={PackType.POLY_BAG: PASSED})
    assert decision.package_type is not PackType.POLY_BAG
    assert not decision.evidence_for(PackType.POLY_BAG).certifiable
    assert not decision.reason.startswith("test_passed")


def test_a_failed_test_rules_out_its_type_and_every_lighter_one() -> None:
    decision = decide(CONFIDENT, {}, NA, MUG_MM, tests={PackType.POLY_BAG: FAILED})
    # the model certifies poly_bag and up; the lab says poly_bag breaks it, so sioc is out too
    assert decision.package_type is PackType.PADDED_MAILER
    assert decision.reason.startswith("test_failed: poly_bag failed a physical test")
    assert not decision.evidence_for(PackType.SIOC).certifiable
    assert not decision.evidence_for(PackType.POLY_BAG).certifiable
    trigger = relabel(PackType.POLY_BAG, decision)
    assert trigger is not None and trigger.reason.startswith("test_failed")
    # ... and neither is worth another test, however promising the model finds them
    hopeful = model([0.001, 0.001, 0.012, 0.0001], [False, False, False, True])
    ruled_out = decide(hopeful, {}, NA, MUG_MM, tests={PackType.POLY_BAG: FAILED})
    assert ruled_out.package_type is PackType.BOX
    assert ruled_out.test is not None and ruled_out.test.package_type is PackType.PADDED_MAILER


def test_a_failure_outranks_a_pass_of_a_lighter_type() -> None:
    decision = decide(UNSURE, {}, NA, MUG_MM, tests={PackType.SIOC: PASSED, PackType.PADDED_MAILER: FAILED})
    assert decision.package_type is PackType.BOX and decision.test is None


def test_statistics_certify_a_type_the_lab_failed_no_more() -> None:
    decision = decide(None, {PackType.POLY_BAG: Counts(900, 0)}, NA, MUG_MM, tests={PackType.POLY_BAG: FAILED})
    assert decision.package_type is PackType.BOX  # nothing heavier than poly_bag has data or a model yet


# -- how the type was chosen, and audits: honest evidence (DESIGN.md invariant 7) -----------------------------

def chosen_by_read_from(decision: Decision) -> ChosenBy:
    """What an operator reading the decision's reason would say chose its type."""
    reason, pack = decision.reason, decision.package_type.value
    if reason.startswith("provisional until"):
        return ChosenBy.PROVISIONAL
    if reason.startswith("audit: "):
        return ChosenBy.AUDIT
    if f"test_passed: {pack} passed a physical test" in reason:  # after a refutation of the model, if any
        return ChosenBy.TEST_PASSED
    if f"model certifies {pack} at" in reason:
        return ChosenBy.MODEL_CERTIFIED
    if f"{pack} shipments: upper bound" in reason:
        return ChosenBy.DATA_CERTIFIED
    assert "no package type meets target" in reason, reason
    return ChosenBy.SAFE_DEFAULT


AUDITING = Marketplace(**{**NA.__dict__, "audit_share": 0.1})
ALWAYS = Marketplace(**{**NA.__dict__, "audit_share": 1.0})  # audits every product it may
PRODUCTS = [f"B{i:09d}" for i in range(4000)]


@settings(max_examples=300, deadline=None)
@given(situations(), item_sizes, st.booleans(),
       st.dictionaries(st.sampled_from(PACK_TYPES), st.sampled_from(list(TestOutcome))),
       st.sampled_from([0.0, 0.3, 1.0]), st.text(min_size=1, max_size=12))
def test_every_decision_says_how_its_type_was_chosen_as_its_reason_does(situation, item_mm, awaiting: bool, tests,
                                                                         share: float, product: str) -> None:
    view, counts, _, code = situation
    market = Marketplace(**{**DEFAULT_MARKETPLACES[code].__dict__, "audit_share": share})
    decision = decide(view, counts, market, item_mm, awaiting_verdict=awaiting, tests=tests, audit_key=product)
    assert decision.chosen_by is chosen_by_read_from(decision)
    assert decision.provisional == (decision.chosen_by is ChosenBy.PROVISIONAL)
    if not decision.provisional:  # a provisional decision says so first, whatever decided it (the data, a test)
        assert (decision.test_outcome == "test_passed") == (decision.chosen_by is ChosenBy.TEST_PASSED)
    if decision.chosen_by is ChosenBy.AUDIT:
        assert decision.audit_propensity == share > 0 and decision.status is DecisionStatus.NEEDS_TEST
    else:
        assert decision.audit_propensity is None
    if decision.chosen_by in (ChosenBy.MODEL_CERTIFIED, ChosenBy.DATA_CERTIFIED, ChosenBy.TEST_PASSED):
        assert decision.status is DecisionStatus.AUTO_CERTIFIED
    if decision.chosen_by is ChosenBy.SAFE_DEFAULT:
        assert decision.package_type is PackType.BOX and decision.status is DecisionStatus.NEEDS_TEST


def test_without_an_audit_share_nothing_is_audited() -> None:
    assert all(market.audit_share == 0.0 for market in DEFAULT_MARKETPLACES.values())  # off unless configured
    for product in PRODUCTS[:500]:
        assert decide(UNSURE, {}, NA, MUG_MM, audit_key=product) == decide(UNSURE, {}, NA, MUG_MM)
        assert decide(None, {}, NA, MUG_MM, audit_key=product).chosen_by is ChosenBy.SAFE_DEFAULT


def test_the_audited_share_is_the_audit_share_and_each_product_draws_the_same_every_time() -> None:
    decisions = [decide(UNSURE, {}, AUDITING, MUG_MM, audit_key=product) for product in PRODUCTS]
    audited = [d for d in decisions if d.chosen_by is ChosenBy.AUDIT]
    n, share = len(PRODUCTS), AUDITING.audit_share
    assert abs(len(audited) - n * share) <= 4 * math.sqrt(n * share * (1 - share))  # 400 +- 76
    assert {d.chosen_by for d in decisions} == {ChosenBy.AUDIT, ChosenBy.MODEL_CERTIFIED}  # UNSURE certifies the box
    for d in audited:  # one step lighter than the box the model certifies, pending a test of the lighter ones
        assert (d.package_type, d.status, d.audit_propensity) == (PackType.PADDED_MAILER, DecisionStatus.NEEDS_TEST,
                                                                  0.1)
        assert d.reason.startswith("audit: padded_mailer instead of box, drawn with probability 10.00%")
        assert d.test is not None and d.test.package_type is PackType.SIOC
    # a redelivery, a restart or another worker re-decides each product the same
    assert [decide(UNSURE, {}, AUDITING, MUG_MM, audit_key=product) for product in PRODUCTS] == decisions
    # the draw does not see the model's score: a model far less sure of the lighter types audits the same products
    wary = model([0.3, 0.2, 0.1, 0.0001], [False, False, False, True])
    assert [decide(wary, {}, AUDITING, MUG_MM, audit_key=product).chosen_by for product in PRODUCTS] == [
        d.chosen_by for d in decisions]


def test_audits_never_pick_a_type_the_item_does_not_fit_or_that_a_failure_or_the_data_rule_out() -> None:
    # the lamp fits no bag or mailer: its audit is sioc, its own container
    assert decide(UNSURE, {}, ALWAYS, LAMP_MM, audit_key="B1").package_type is PackType.SIOC
    # a failed test of the mailer rules it out, and never lets the audit skip to a lighter type
    failed = decide(UNSURE, {}, ALWAYS, MUG_MM, tests={PackType.PADDED_MAILER: FAILED}, audit_key="B1")
    assert failed.package_type is PackType.BOX and failed.chosen_by is ChosenBy.MODEL_CERTIFIED
    refuted = decide(UNSURE, {PackType.PADDED_MAILER: Counts(50, 5)}, ALWAYS, MUG_MM, audit_key="B1")
    assert refuted.package_type is PackType.BOX and refuted.chosen_by is ChosenBy.MODEL_CERTIFIED
    # nothing is lighter than sioc, and a provisional decision (the verdict is seconds away) is not audited
    assert decide(model([0.0001] * 4, [True] * 4), {}, ALWAYS, MUG_MM, audit_key="B1").chosen_by is (
        ChosenBy.MODEL_CERTIFIED)
    assert decide(None, {}, ALWAYS, MUG_MM, awaiting_verdict=True, audit_key="B1").chosen_by is ChosenBy.PROVISIONAL


@settings(max_examples=300, deadline=None)
@given(situations(), item_sizes, st.dictionaries(st.sampled_from(PACK_TYPES), st.sampled_from(list(TestOutcome))),
       st.text(min_size=1, max_size=12))
def test_an_audit_is_the_heaviest_lighter_type_the_item_fits_unless_ruled_out(situation, item_mm, tests,
                                                                               product: str) -> None:
    view, counts, _, code = situation
    market = Marketplace(**{**DEFAULT_MARKETPLACES[code].__dict__, "audit_share": 1.0})
    plain = decide(view, counts, market, item_mm, tests=tests)
    audited = decide(view, counts, market, item_mm, tests=tests, audit_key=product)
    lighter = [pack for pack in PACK_TYPES[: plain.package_type.index] if market.fits(pack, item_mm)]
    candidate = plain.evidence_for(lighter[-1]) if lighter else None
    if candidate is None or candidate.test_ruled_out or candidate.contradicted:
        assert audited == plain
    else:
        assert audited.chosen_by is ChosenBy.AUDIT and audited.package_type is candidate.package_type
        assert market.fits(audited.package_type, item_mm) and not candidate.certifiable
        if audited.test is not None:
            assert audited.test.package_type.index < audited.package_type.index


def test_data_refuting_the_audited_type_end_the_audit_for_good() -> None:
    box, mailer, bag = PackType.BOX, PackType.PADDED_MAILER, PackType.POLY_BAG
    product = next(p for p in PRODUCTS if audit_draw(p, "NA", box, mailer) < 0.1 <= audit_draw(p, "NA", mailer, bag))
    audit = decide(None, {}, AUDITING, MUG_MM, audit_key=product)
    assert audit.package_type is mailer and audit.chosen_by is ChosenBy.AUDIT
    start = relabel(box, audit)
    assert start is not None and start.reason.startswith("audit: moving box to padded_mailer; audit: ")
    # clean shipments keep the audit going; damages that refute the mailer send the product back to the box
    assert decide(None, {mailer: Counts(50, 0)}, AUDITING, MUG_MM, audit_key=product).chosen_by is ChosenBy.AUDIT
    refuted = decide(None, {mailer: Counts(50, 5)}, AUDITING, MUG_MM, audit_key=product)
    assert (refuted.package_type, refuted.chosen_by, refuted.audit_propensity) == (box, ChosenBy.SAFE_DEFAULT, None)
    back = relabel(mailer, refuted)
    assert back is not None and back.cause is RelabelCause.DAMAGE_EXCEEDS_TARGET
    # ... for good: not audited in a lighter type instead, whatever the share
    assert decide(None, {mailer: Counts(50, 5)}, ALWAYS, MUG_MM, audit_key=product).package_type is box
    # enough clean audit shipments certify the mailer on the data
    certified = decide(None, {mailer: Counts(900, 0)}, AUDITING, MUG_MM, audit_key=product)
    assert (certified.package_type, certified.chosen_by) == (mailer, ChosenBy.DATA_CERTIFIED)
