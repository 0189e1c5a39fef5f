"""`packwise train --data DIR`: the network trained on a dataset that `packwise dataset build` wrote (here from a
small simulated history, landed without Kafka), split by product and by time, and its bundle scored by the
worker's scorer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from models import cli
from models.dataset import CARD_JSON, TABLE
from models.history import certification_shortfall, load_history
from models.packtypes import PACK_TYPES
from models.world import EPOCH, World, WorldConfig, capture_record, catalog_record
from streams.scoring import Scorer
from tests.models.simulated_history import HISTORY_DAYS, WINDOW_DAYS, simulated_dataset, simulated_events, write_dataset

WORLD_SEED, PRODUCTS = 5, 400
TARGETS = "0.05,0.1"  # what a calibration split of ~110 products can reach (0.5% needs 598)


@pytest.fixture(scope="module")
def events() -> dict[str, list[dict]]:
    return simulated_events(World.generate(WorldConfig(seed=WORLD_SEED, n_products=PRODUCTS)), 12.0, WORLD_SEED)


@pytest.fixture(scope="module")
def dataset(events: dict[str, list[dict]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole history: every shipment mature."""
    folder = tmp_path_factory.mktemp("history") / "data"
    write_dataset(folder, events)
    return folder


@pytest.fixture(scope="module")
def earlier(events: dict[str, list[dict]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same history built 50 days before its end: the shipments of its last 80 days are not in it."""
    folder = tmp_path_factory.mktemp("history") / "earlier"
    write_dataset(folder, events, as_of_day=HISTORY_DAYS + WINDOW_DAYS - 50)
    return folder


@pytest.fixture(scope="module")
def bundle(earlier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "from-history"
    assert cli.main(["train", "--data", str(earlier), "--out", str(out), "--epochs", "1", "--seed", "2",
                     "--targets", TARGETS, "--report-share", "0.9"]) == 0
    return out


def test_a_bundle_trained_on_a_dataset_is_scored_by_the_worker(bundle: Path) -> None:
    products = World.generate(WorldConfig(seed=WORLD_SEED, n_products=3)).products
    records = [(catalog_record(p), capture_record(p, np.random.default_rng([p.seed, 20]))) for p in products]
    views = Scorer.load(bundle, threads=1).score_records(records + [(catalog_record(products[0]), None)])
    version = json.loads((bundle / "manifest.json").read_text())["version"]
    assert len(views) == 4 and {v.version for v in views} == {version}
    for view in views:
        assert set(view.probabilities) == set(PACK_TYPES)
        assert all(0.0 < p < 1.0 for p in view.probabilities.values())
        assert set(view.certified) == {0.05, 0.1}


def test_the_bundle_records_the_dataset_fingerprint_and_card(bundle: Path, earlier: Path) -> None:
    card = json.loads((earlier / CARD_JSON).read_text())
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = json.loads((bundle / "config.json").read_text())
    assert manifest["data_fingerprint"] == card["fingerprint"] and manifest["version"].endswith(card["fingerprint"][:8])
    assert "world" not in config and config["dataset"]["card"] == card and config["image_size"] == 48
    assert config["train"]["report_share"] == 0.9  # certified on reported damage at target x 0.9
    split = config["dataset"]["split"]
    assert split["products"]["calibration"] > 0 and split["periods"]["train"][1] < split["cutoff"]
    metrics = json.loads((bundle / "metrics.json").read_text())["test_metrics"]
    assert metrics["n_products"] == split["products"]["test"]
    assert sum(m["shipments"] for m in metrics["per_type"].values()) == split["shipments"]["test"]


def test_the_calibration_period_follows_the_training_period_on_other_products(dataset: Path) -> None:
    history = load_history(dataset, seed=2, targets=(0.05,), delta=0.05, show_progress=False)
    ids = {name: {history.product_ids[i] for i in idx} for name, idx in history.splits.items()}
    assert all(ids[a].isdisjoint(ids[b]) for a in ids for b in ids if a < b) and all(ids.values())
    assert history.periods["train"][1] < history.cutoff
    assert all(history.periods[name][0] >= history.cutoff for name in ("temperature", "calibration", "test"))
    # against the table itself: a held-out product counts its shipments from the cutoff on, a training product
    # those before it, whatever else it shipped
    rows = pq.read_table(dataset / TABLE).to_pylist()
    recent = [r for r in rows if r["shipped_at"] >= history.cutoff]
    assert len(recent) == pytest.approx(len(rows) / 3, abs=2)
    for name, before in (("train", True), ("calibration", False)):
        mine = [r for r in rows if r["product_id"] in ids[name] and (r["shipped_at"] < history.cutoff) == before]
        assert history.shipments[history.splits[name]].sum() == len(mine)
        assert history.damaged[history.splits[name]].sum() == sum(r["damaged"] for r in mine)
    cal = history.splits["calibration"]
    assert (history.first_observed[cal].sum(0) <= (history.shipments[cal] > 0).sum(0)).all()


def test_only_shipments_whose_type_the_model_did_not_pick_certify(events: dict[str, list[dict]],
                                                                   tmp_path: Path) -> None:
    """Half the products were decided by a model before they shipped (their poly_bag shipments chose by its
    certification, their other types by someone else): their outcomes no longer certify anything, while the
    products shipped before any decision certify as before; with calibrate_on="all" every outcome counts."""
    from tests.samples import SAMPLES

    decided = {r["product_id"] for r in events["catalog-updates"][::2]}
    decisions = [{**SAMPLES["pack_type_decision"], "event_id": f"D-{product}", "product_id": product,
                  "package_type": "poly_bag", "chosen_by": "model_certified", "decided_at": EPOCH}
                 for product in sorted(decided)]
    write_dataset(tmp_path / "data", {**events, "pack-type-decisions": decisions})
    unselected = load_history(tmp_path / "data", seed=2, targets=(0.05,), delta=0.05, show_progress=False)
    every = load_history(tmp_path / "data", seed=2, targets=(0.05,), delta=0.05, calibrate_on="all",
                         show_progress=False)
    assert unselected.product_ids == every.product_ids
    cal = unselected.splits["calibration"]
    mine = np.asarray([unselected.product_ids[i] in decided for i in cal])
    assert mine.any() and (~mine).any()
    assert not unselected.first_observed[cal][mine].any() and every.first_observed[cal][mine].any()
    assert (unselected.first_observed[cal][~mine] == every.first_observed[cal][~mine]).all()
    assert (unselected.first_damaged[cal][~mine] == every.first_damaged[cal][~mine]).all()
    left_out = unselected.describe()["certified_on"]["calibration_rows_left_out"]
    assert set(left_out) == {"model_certified", "off_decision"}
    assert sum(left_out.values()) == sum(unselected.shipments[cal][mine].sum(1))
    assert every.describe()["certified_on"]["calibration_rows_left_out"] == {}
    warning = certification_shortfall(unselected, 0.05, 0.05)  # what a run that certified nothing would say
    assert f"{sum(left_out.values()):,} recent shipments of calibration products were left out" in warning
    assert "--calibrate-on all" in warning and "left out" not in certification_shortfall(every, 0.05, 0.05)


def test_train_refuses_a_folder_that_is_not_a_dataset_or_too_small(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and f"{tmp_path} is not a packwise dataset" in error and "dataset build" in error
    small = tmp_path / "small"
    simulated_dataset(small, 30, seed=WORLD_SEED)
    assert cli.main(["train", "--data", str(small), "--out", str(tmp_path / "b"), "--targets", "0.05"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "too small to certify" in error
    assert "needs at least 59 calibration products" in error and not (tmp_path / "b").exists()
    # fewer damages reported, a stricter test on them: 0.05 x 0.5 needs 119 damage-free products
    assert cli.main(["train", "--data", str(small), "--out", str(tmp_path / "b"), "--targets", "0.05",
                     "--report-share", "0.5"]) == 2
    assert "needs at least 119 calibration products" in capsys.readouterr().err
    # a synthetic world certifies on audits, which see every damage
    assert cli.main(["train", "--products", "600", "--out", str(tmp_path / "b"), "--report-share", "0.7"]) == 2
    assert "--report-share applies to training on a history" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        cli.main(["train", "--data", str(small), "--out", str(tmp_path / "b"), "--report-share", "0"])
    assert refused.value.code == 2 and "0 is not a share" in capsys.readouterr().err


def test_evaluate_on_the_shipments_after_the_training_data(bundle: Path, dataset: Path, earlier: Path,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["evaluate", "--bundle", str(bundle), "--data", str(dataset), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "evaluation.json").read_text())
    trained = json.loads((bundle / "config.json").read_text())["dataset"]
    assert result["window"]["first_shipped_at"] > trained["card"]["time_range"]["last_shipped_at"]
    training = load_history(earlier, seed=2, targets=(0.05,), delta=0.05, show_progress=False)
    trained_on = {training.product_ids[i] for i in training.splits["train"]}
    rows = [r for r in pq.read_table(dataset / TABLE).to_pylist()
            if r["shipped_at"].isoformat() > trained["card"]["time_range"]["last_shipped_at"]
            and r["product_id"] not in trained_on]
    assert result["window"]["shipments"] == len(rows) > 0
    assert sum(m["shipments"] for m in result["metrics"]["per_type"].values()) == len(rows)
    assert sum(m["damaged"] for m in result["metrics"]["per_type"].values()) == sum(r["damaged"] for r in rows)
    assert set(result["by_marketplace"]) == {r["marketplace"] for r in rows}
    page = (tmp_path / "REPORT.md").read_text()
    assert "## Certification per marketplace" in page and "| NA | 0.50% | none (certifies nothing) |" in page
    # the dataset it was trained on holds nothing after its own data
    capsys.readouterr()
    assert cli.main(["evaluate", "--bundle", str(bundle), "--data", str(earlier), "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "has no shipments shipped after" in error
