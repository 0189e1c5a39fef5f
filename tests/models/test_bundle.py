"""The bundle as the workers see it: written by training, loaded by one function, scoring decoded Avro
records in batches with either side missing, and refusing broken bundles with one clear sentence."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from models import cli, features
from models.bundle import Bundle, BundleError, Prediction, load_bundle, save_bundle
from models.network import DamageNet
from models.packtypes import PACK_TYPES, PackType
from models.world import capture_record, catalog_record
from tests.models.conftest import TRAIN_TARGETS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    return save_bundle(trained.multimodal, tmp_path_factory.mktemp("bundles") / "multimodal")


@pytest.fixture(scope="module")
def bundle(bundle_dir) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def records(trained):
    products = [trained.data.world.products[i] for i in trained.data.splits["test"][:12]]
    return products, [catalog_record(p) for p in products], [capture_record(p, np.random.default_rng([p.seed, 20]))
                                                             for p in products]


def test_bundle_is_versioned_and_fingerprinted(bundle: Bundle, bundle_dir, trained) -> None:
    assert re.fullmatch(r"pw-\d{8}-[0-9a-f]{8}", bundle.version)
    assert bundle.version.endswith(trained.data.fingerprint[:8])
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["seed"] == 11 and manifest["data_fingerprint"] == trained.data.fingerprint
    card = json.loads((bundle_dir / "metrics.json").read_text())
    assert set(card["test_metrics"]["per_type"]) == {p.value for p in PACK_TYPES}


def test_predict_scores_records_like_training_did(bundle: Bundle, records, trained) -> None:
    products, catalogs, captures = records
    predictions = bundle.predict(catalogs, captures)
    assert [p.product_id for p in predictions] == [p.product_id for p in products]
    expected = bundle.probabilities(trained.data.features.select(torch.as_tensor(trained.data.splits["test"][:12])))
    got = np.asarray([[p.probabilities[t] for t in PACK_TYPES] for p in predictions])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    for prediction in predictions:
        assert isinstance(prediction, Prediction) and prediction.bundle_version == bundle.version
        assert set(prediction.certified) == set(bundle.targets) == set(TRAIN_TARGETS)
        for target, thresholds in bundle.thresholds.items():
            for t, pack in enumerate(PACK_TYPES):
                assert prediction.certified[target][pack] == (prediction.probabilities[pack] <= thresholds[t])
            light = [p for p in PACK_TYPES if prediction.certified[target][p]]
            assert prediction.lightest_certified[target] == (light[0] if light else None)


def test_a_loaded_bundle_runs_its_image_backbone_traced_and_scores_exactly_as_the_trained_network(
        bundle: Bundle, records, trained) -> None:
    """The worker scores with the traced backbone (no Python between its modules); the verdicts must be the
    trained network's to the last bit, whatever the batch size and however many views a capture has."""
    assert isinstance(bundle.model.image.backbone, torch.jit.ScriptModule)
    eager = trained.multimodal.model.eval()
    assert not isinstance(eager.image.backbone, torch.jit.ScriptModule)
    products, catalogs, captures = records
    captures = [dict(c, views=c["views"][:1 + i % len(c["views"])]) for i, c in enumerate(captures)]
    for size in (1, 2, 5, len(products)):
        f = features.from_records(bundle.tokenizer, catalogs[:size], captures[:size], bundle.image_size)
        with torch.inference_mode():
            assert torch.equal(bundle.model(f), eager(f))


def test_the_image_backbone_runs_channels_last_whichever_layout_its_weights_were_saved_in(trained) -> None:
    """oneDNN's convolutions take a third or more off the backbone in channels-last layout. A bundle trained
    before the network ran so saved its weights in the default layout: loaded, they run channels-last too."""
    config = trained.multimodal.model.config
    saved = {name: tensor.contiguous() for name, tensor in trained.multimodal.model.state_dict().items()}
    for weights in (trained.multimodal.model.state_dict(), saved):
        net = DamageNet(config)
        net.load_state_dict(weights)
        convolutions = [m for m in net.image.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convolutions and all(c.weight.is_contiguous(memory_format=torch.channels_last)
                                    for c in convolutions)


def test_a_backbone_that_does_not_trace_scores_eagerly_with_a_warning(bundle: Bundle, bundle_dir, records,
                                                                     monkeypatch, caplog) -> None:
    def cannot_trace(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.jit, "trace", cannot_trace)
    eager = load_bundle(bundle_dir)
    assert not isinstance(eager.model.image.backbone, torch.jit.ScriptModule)
    assert "scores eagerly: it does not trace (RuntimeError: unsupported operator)" in caplog.text
    _, catalogs, captures = records
    assert [p.probabilities for p in eager.predict(catalogs, captures)] == \
        [p.probabilities for p in bundle.predict(catalogs, captures)]


def test_the_bundle_carries_thresholds_per_target_and_old_workers_read_the_strictest(bundle: Bundle, bundle_dir,
                                                                                     trained) -> None:
    calibration = json.loads((bundle_dir / "calibration.json").read_text())
    assert [entry["target"] for entry in calibration["targets"]] == sorted(TRAIN_TARGETS)
    for entry in calibration["targets"]:
        assert [c["threshold"] for c in entry["certification"]] == bundle.thresholds[entry["target"]].tolist()
        assert entry["products_needed"] > 0 and ("note" in entry) == (entry["products_needed"] > 900)
    assert calibration["calibration_products"] == 900
    # a worker from before per-target certification applies "certification" to every marketplace
    assert calibration["target"] == min(TRAIN_TARGETS)
    assert calibration["certification"] == calibration["targets"][0]["certification"]
    # a marketplace takes its own target's thresholds, else the loosest stricter one's, never a looser one's
    assert bundle.thresholds_for(0.01) == (0.01, pytest.approx(bundle.thresholds[0.01]))
    assert bundle.thresholds_for(0.015)[0] == 0.01
    used, none = bundle.thresholds_for(0.004)
    assert used is None and (none < 0).all()


def _rewritten(bundle_dir, tmp_path, calibration: dict):
    """A copy of the bundle with another calibration.json, its manifest checksum updated to match."""
    from models.bundle_files import sha256

    copy = tmp_path / "rewritten"
    shutil.copytree(bundle_dir, copy)
    (copy / "calibration.json").write_text(json.dumps(calibration))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["calibration.json"] = sha256(copy / "calibration.json")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_bundle_in_the_old_single_target_form_certifies_only_where_its_target_is_strict_enough(
        bundle_dir, tmp_path, records) -> None:
    """Before per-target certification a bundle had one "target" and one "certification" (0.5% by default)."""
    calibration = json.loads((bundle_dir / "calibration.json").read_text())
    old = {key: calibration[key] for key in ("pack_types", "temperature", "bias", "delta")}
    at_two_percent = next(e for e in calibration["targets"] if e["target"] == 0.02)
    old.update(target=0.02, certification=at_two_percent["certification"])
    bundle = load_bundle(_rewritten(bundle_dir, tmp_path, old))
    assert bundle.targets == (0.02,)
    assert bundle.thresholds_for(0.02)[0] == 0.02 and bundle.thresholds_for(0.05)[0] == 0.02
    assert bundle.thresholds_for(0.01)[0] is None  # a stricter marketplace: nothing
    _, catalogs, captures = records
    predictions = bundle.predict(catalogs, captures)
    assert all(set(p.certified) == {0.02} for p in predictions)
    assert any(any(p.certified[0.02].values()) for p in predictions)  # it does certify at its own target


def test_predict_masks_a_missing_side(bundle: Bundle, records) -> None:
    _, catalogs, captures = records
    text_only = bundle.predict(catalogs[:3], [None] * 3)
    image_only = bundle.predict([None] * 3, captures[:3])
    both = bundle.predict(catalogs[:3], captures[:3])
    for a, b in zip(text_only, both):
        assert a.probabilities != b.probabilities
    assert all(0 < p.probabilities[PackType.SIOC] < 1 for p in text_only + image_only)
    nothing = bundle.predict([None], [None])[0]
    assert not any(any(ok.values()) for ok in nothing.certified.values())
    assert set(nothing.lightest_certified.values()) == {None}


def test_predict_rejects_lists_of_different_length(bundle: Bundle, records) -> None:
    _, catalogs, captures = records
    with pytest.raises(ValueError, match="equal length"):
        bundle.predict(catalogs[:2], captures[:3])


def _broken_copy(bundle_dir, tmp_path, name: str, content: bytes | None):
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    if content is None:
        (copy / name).unlink()
    else:
        (copy / name).write_bytes(content)
    return copy


@pytest.mark.parametrize("name,content,problem", [
    ("weights.pt", None, "missing weights.pt"),
    ("weights.pt", b"not a torch file", "corrupt weights.pt"),
    ("manifest.json", b"{not json", "corrupt manifest.json"),
    ("manifest.json", None, "no manifest.json"),
    ("tokenizer.model", b"\x00\x01", "corrupt tokenizer.model"),
])
def test_broken_bundles_are_refused_with_one_sentence(bundle_dir, tmp_path, name, content, problem) -> None:
    broken = _broken_copy(bundle_dir, tmp_path, name, content)
    with pytest.raises(BundleError) as error:
        load_bundle(broken)
    message = str(error.value)
    assert str(broken) in message and problem in message and message.count("\n") == 0


def test_missing_bundle_directory(tmp_path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_cli_train_and_evaluate(tmp_path, capsys) -> None:
    out = tmp_path / "bundle"
    assert cli.main(["train", "--out", str(out), "--products", "500", "--epochs", "1", "--modality", "text",
                     "--seed", "3"]) == 0
    assert load_bundle(out).config["network"]["modality"] == "text"
    assert cli.main(["evaluate", "--bundle", str(out), "--products", "300", "--seed", "4",
                     "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "REPORT.md").read_text()
    assert "packwise evaluate" in page and "PR-AUC sioc" in page
    # 500 products leave 150 for calibration: nothing certified at any marketplace's target, and the page says so
    assert "## Certification per marketplace" in page and "| JP | 0.30% | 0.30% |" in page
    by_market = json.loads((tmp_path / "report" / "certification.json").read_text())
    assert set(by_market) == {"NA", "EU", "JP"}
    assert {m["certified_at"] for m in by_market.values()} == {0.005, 0.004, 0.003}
    assert all(c["certified"] == 0 for m in by_market.values() for c in m["per_type"].values())
    for plot in ("pr_curves.png", "reliability.png", "coverage_risk.png"):
        assert (tmp_path / "report" / plot).stat().st_size > 1000  # in the folder given, beside REPORT.md


def test_cli_errors_are_one_sentence_without_traceback(tmp_path, capsys) -> None:
    code = cli.main(["evaluate", "--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: bundle") and "Traceback" not in err and err.count("\n") == 1
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert cli.main(["train", "--out", str(tmp_path / "taken"), "--products", "600"]) == 2
    assert "already exists" in capsys.readouterr().err
