"""`packwise demo` and `packwise clean`: the summary a newcomer reads, the model it reuses, what it leaves behind."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from models.packtypes import PackType
from streams import demo
from streams.demo import CertifiedOutcome, DemoSummary, certified_outcomes
from streams.marketplaces import load_marketplaces
from streams.settings import Settings
from streams.watch import WatchState
from tests.samples import SAMPLES, T0


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def decided(product: str, second: float, package_type: str, status: str, marketplace: str = "NA") -> dict[str, Any]:
    return {**SAMPLES["pack_type_decision"], "product_id": product, "marketplace": marketplace,
            "package_type": package_type, "status": status, "decided_at": at(second)}


def shipped(product: str, second: float, package_type: str, marketplace: str = "NA") -> dict[str, Any]:
    shipment = f"{product}-{second}"
    return {**SAMPLES["shipment"], "event_id": f"e-{shipment}", "shipment_id": shipment, "product_id": product,
            "package_type": package_type, "marketplace": marketplace, "shipped_at": at(second)}


def reported(shipment: dict[str, Any]) -> dict[str, Any]:
    return {**SAMPLES["damage_report"], "event_id": f"r-{shipment['shipment_id']}", "product_id":
            shipment["product_id"], "shipment_id": shipment["shipment_id"], "package_type": shipment["package_type"]}


def test_damage_is_counted_on_shipments_made_under_an_auto_certified_decision_in_their_type() -> None:
    """A product certified in a poly bag, damaged, then moved to a box: its box shipments (before the first
    decision, and after the move) say nothing about the certification; its poly bag shipments do, including
    those the warehouse made before it saw the move."""
    decisions = [decided("P1", 0, "poly_bag", "auto_certified"), decided("P1", 10, "box", "needs_test"),
                 decided("P2", 0, "padded_mailer", "auto_certified", "EU")]
    before, first, damaged, late, after = (shipped("P1", -1, "box"), shipped("P1", 1, "poly_bag"),
                                           shipped("P1", 2, "poly_bag"), shipped("P1", 11, "poly_bag"),
                                           shipped("P1", 12, "box"))
    mailer = shipped("P2", 1, "padded_mailer", "EU")
    shipments = [before, first, damaged, damaged, late, after, mailer]  # `damaged` was sent twice (same event id)
    reports = [reported(damaged), reported(damaged), reported(after)]
    truth = [(0, "P1", PackType.BOX, False), (1, "P1", PackType.POLY_BAG, False),
             (1, "P1", PackType.POLY_BAG, True), (2, "P1", PackType.POLY_BAG, True), (2, "P1", PackType.BOX, True),
             (0, "P2", PackType.PADDED_MAILER, False)]  # (round, product, type, damaged), as the simulator logs
    assert certified_outcomes(decisions, shipments, reports, truth) == {
        ("NA", PackType.POLY_BAG): CertifiedOutcome(shipments=3, reported=1, damaged=2),
        ("EU", PackType.PADDED_MAILER): CertifiedOutcome(shipments=1, reported=0, damaged=0)}
    # Without the simulator's truth (or one that does not line up), only what was reported is known.
    assert certified_outcomes(decisions, shipments, reports)[("NA", PackType.POLY_BAG)] == CertifiedOutcome(3, 1, None)
    assert certified_outcomes(decisions, shipments, reports, truth[1:])[("NA", PackType.POLY_BAG)].damaged is None
    # The sabotaged products break the model's promise on purpose: the summary also shows the rest alone.
    assert certified_outcomes(decisions, shipments, reports, truth, leave_out={"P1"}) == {
        ("EU", PackType.PADDED_MAILER): CertifiedOutcome(shipments=1, reported=0, damaged=0)}


def summary(outcomes: dict[tuple[str, PackType], CertifiedOutcome],
            unsabotaged: dict[tuple[str, PackType], CertifiedOutcome], state: WatchState) -> DemoSummary:
    return DemoSummary(products=300, decided=3, by_type={p: (1 if p is PackType.BOX else 0, 0) for p in PackType},
                       weight_g=100.0, box_weight_g=400.0, certified=outcomes, certified_unsabotaged=unsabotaged,
                       triggers={"damage_exceeds_target": 1}, open_tests=state.summary().open_tests,
                       grams_saved=state.summary().grams_saved)


def test_summary_shows_damage_under_certification_per_marketplace_and_type_beside_the_target() -> None:
    state = WatchState()
    state.apply("test_request", "P1", {**SAMPLES["test_request"], "product_id": "P1", "weight_saved_g": 230.0})
    outcomes = {("NA", PackType.POLY_BAG): CertifiedOutcome(400, 1, 2),
                ("EU", PackType.PADDED_MAILER): CertifiedOutcome(90, 0, 0)}
    unsabotaged = {("NA", PackType.POLY_BAG): CertifiedOutcome(380, 0, 1)}
    console = Console(file=io.StringIO(), width=300)
    demo.print_summary(console, summary(outcomes, unsabotaged, state), load_marketplaces(None))
    text = console.file.getvalue()
    assert text.startswith("\n")  # never glued to the last row of the live view above it
    def cells(marketplace: str, pack: str) -> list[str]:
        row = next(line for line in text.splitlines() if f" {marketplace} " in line and f" {pack} " in line)
        return [cell.strip() for cell in row.split("│") if cell.strip()]

    # marketplace, type, shipments, damage reports, damaged (all), damage rate, without the sabotaged, target
    assert cells("NA", "poly_bag") == ["NA", "poly_bag", "400", "1", "2", "0.50%", "0.26% of 380", "0.50%"]
    assert cells("EU", "padded_mailer") == ["EU", "padded_mailer", "90", "0", "0", "0.00%", "-", "0.40%"]
    assert "1 of 3 decided products has a test request open" in " ".join(text.split())
    assert "lighter type" in text and "230 g per unit" in text
    assert "1 damages" not in text
    assert "audit" not in text  # no audit ran: nothing said of them
    console = Console(file=io.StringIO(), width=300)
    demo.print_summary(console, dataclasses.replace(summary(outcomes, unsabotaged, state), audited=4),
                       load_marketplaces(None))
    assert "4 products ship as an audit (chosen_by audit)" in " ".join(console.file.getvalue().split())


def test_a_second_demo_says_it_reuses_the_trained_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import models.bundle

    monkeypatch.setattr(models.bundle, "load_bundle", lambda path: SimpleNamespace(targets=(0.003, 0.004, 0.005)))
    monkeypatch.setattr(demo, "warm_up", lambda *args: pytest.fail("a reused model needs no warm-up"))
    model = demo.demo_bundle(Settings(state_dir=str(tmp_path)), 8000, 2)
    assert model.path == tmp_path / "models" / "demo-history-8000-2" and not model.warmed_up
    assert f"reusing the demo model trained earlier from a warm-up history, in {model.path}" in capsys.readouterr().out


def test_a_demo_model_not_certified_at_every_marketplace_target_is_trained_again_from_a_warm_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A model cached before per-marketplace certification (one target, 0.5%) would certify nothing in EU or JP:
    the demo streams a warm-up history, builds its dataset and trains on it, at the world's report share."""
    import models.bundle

    monkeypatch.setattr(models.bundle, "load_bundle", lambda path: SimpleNamespace(targets=(0.005,)))
    monkeypatch.setattr(demo, "warm_up", lambda settings, products: 0.69)
    ran: list[list[str]] = []
    monkeypatch.setattr(demo.subprocess, "run", lambda argv, **kwargs: ran.append(argv) or SimpleNamespace(
        returncode=0))
    model = demo.demo_bundle(Settings(state_dir=str(tmp_path)), 8000, 2)
    assert "is not certified at 0.30%, 0.40%" in capsys.readouterr().out and model.warmed_up
    build, train = ran
    data = build[build.index("--out") + 1]
    assert build[3:5] == ["dataset", "build"] and data == str(tmp_path / "models" / "demo-history-8000-2-dataset")
    assert train[3] == "train" and train[train.index("--data") + 1] == data
    assert train[train.index("--out") + 1] == str(model.path)
    assert train[train.index("--targets") + 1] == "0.003,0.004,0.005"
    assert train[train.index("--report-share") + 1] == "0.6900"


@pytest.mark.kafka
def test_clean_lists_what_demos_left_then_deletes_only_that(kafka_settings: Settings, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import build_parser
    from streams.topics import admin_client, create_topics, existing_partitions

    assert build_parser().parse_args(["clean", "--yes"]).yes is True
    base = kafka_settings.replace(state_dir=str(tmp_path))
    run = demo.demo_settings(base, "20261130-101010")
    create_topics(run)
    create_topics(base)  # not a demo's: stays
    run.worker_dir.mkdir(parents=True)
    (run.worker_dir / "table.db").write_bytes(b"x" * 300_000)
    log = tmp_path / "demo-worker-20261130-101010.log"
    log.write_text("worker log")
    kept = [base.worker_dir, tmp_path / "models" / "demo-history-16000-2", tmp_path / "kafka"]
    for folder in kept:
        folder.mkdir(parents=True)
    dataset = tmp_path / "models" / "demo-history-16000-2-dataset"  # the warm-up's landed topics: not needed again
    (dataset / "landed").mkdir(parents=True)

    def topics() -> set[str]:
        return set(existing_partitions(admin_client(base), base))

    demo_topics = {t for t in topics() if t.startswith(("demo-20261130-101010.", "packwise-demo-20261130-101010-"))}
    assert len(demo_topics) > 10

    assert demo.clean_demos(base, delete=False) == 0  # a dry run: lists, deletes nothing
    out = capsys.readouterr().out
    listed = {line.split()[1] for line in out.splitlines() if line.startswith("  topic ")}
    assert listed == demo_topics
    assert f"folder {run.worker_dir.parent} (0.3 MB)" in out and f"file {log} (0.0 MB)" in out
    assert f"folder {dataset} (0.0 MB)" in out
    assert "packwise clean --yes" in out
    assert demo_topics <= topics() and run.worker_dir.exists() and log.exists()

    assert demo.clean_demos(base, delete=True) == 0
    assert f"deleted {len(demo_topics)} topics" in capsys.readouterr().out
    deadline = time.monotonic() + 30
    while demo_topics & topics() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not demo_topics & topics()
    assert not run.worker_dir.parent.exists() and not log.exists() and all(folder.exists() for folder in kept)
    assert not dataset.exists()
    assert {t for t in topics() if t.startswith(base.topic_prefix)}  # the other topics are still there
