"""The bundle as the workers see it: written by training, loaded by one function, scoring decoded Avro
records in batches with either side missing, and refusing broken bundles with one clear sentence."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from models import cli
from models.bundle import Bundle, BundleError, Prediction, load_bundle, save_bundle
from models.packtypes import PACK_TYPES, PackType
from models.world import capture_record, catalog_record

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
        for t, pack in enumerate(PACK_TYPES):
            assert prediction.certified[pack] == (prediction.probabilities[pack] <= bundle.thresholds[t])
        light = [p for p in PACK_TYPES if prediction.certified[p]]
        assert prediction.lightest_certified == (light[0] if light else None)


def test_predict_masks_a_missing_side(bundle: Bundle, records) -> None:
    _, catalogs, captures = records
    text_only = bundle.predict(catalogs[:3], [None] * 3)
    image_only = bundle.predict([None] * 3, captures[:3])
    both = bundle.predict(catalogs[:3], captures[:3])
    for a, b in zip(text_only, both):
        assert a.probabilities != b.probabilities
    assert all(0 < p.probabilities[PackType.SIOC] < 1 for p in text_only + image_only)
    nothing = bundle.predict([None], [None])[0]
    assert not any(nothing.certified.values()) and nothing.lightest_certified is None


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
