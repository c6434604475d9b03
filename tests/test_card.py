"""Model card of a real (tiny) release folder: built from its files; the hashes protect the model file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leukedge.spec import ModelSpec, OperatingPoint


@pytest.fixture(scope="module")
def release(tmp_path_factory, tiny_keras, tiny_spec, small_dataset):
    """models/tiny/: spec.json, a real float32 .tflite of the tiny model, split.csv, evaluation.json."""
    from leukedge.evaluate import run_evaluation
    from leukedge.split import SplitConfig, make_split, write_manifest

    d = tmp_path_factory.mktemp("models") / "tiny"
    d.mkdir()
    spec = ModelSpec.from_dict(tiny_spec.to_dict())
    spec.operating_points = [OperatingPoint("default", 0.5, "highest specificity with sensitivity >= 0.99", 0.99, 0.6)]
    spec.threshold = 0.5
    spec.save(d / "spec.json")
    from leukedge.compress.export import convert
    from leukedge.compress.quantization import QuantizationConfig

    # the exporter of `leukedge compress`: outputs probability, cam (in-graph Grad-CAM), features
    (d / "tiny.float32.tflite").write_bytes(convert(tiny_keras, spec, QuantizationConfig("float32")))
    write_manifest(make_split(small_dataset, SplitConfig(block_size=10, seed=1)), d / "split.csv")
    run_evaluation(d, small_dataset, json_out=d / "evaluation.json", report_dir=d, mask_corners=0.15,
                   gradcam=2, n_boot=200)
    return d


def test_card_from_release_files(release):
    from leukedge.card import write_card
    from leukedge.fileio import sha256_file

    j, md = write_card(release)
    card = json.loads(j.read_text())
    figures = {f"figures/{f.name}": sha256_file(f) for f in (release / "figures").glob("*.png")}
    assert figures and card["files"] == {"tiny.float32.tflite": sha256_file(release / "tiny.float32.tflite"),
                                         "spec.json": sha256_file(release / "spec.json"),
                                         **figures}  # every file the runtime reads (the app shows the figures)
    assert card["file_sizes"]["tiny.float32.tflite"] == (release / "tiny.float32.tflite").stat().st_size
    ev = json.loads((release / "evaluation.json").read_text())
    assert card["evaluation"]["metrics"] == ev["metrics"]
    assert card["evaluation"]["model_file"] == "tiny.float32.tflite"
    assert card["threshold"]["rule"].startswith("highest specificity")
    assert card["data"]["license"] == "CC BY 4.0" and card["data"]["split_manifest_sha256"]
    assert "WITHOUT ImageNet" in card["training"]["statement"]
    assert any("Single hospital" in x for x in card["limitations"])
    assert "haematologist" in card["intended_use"]["action"]
    assert "figures/roc.png" in card["figures"]
    assert {t["metric"] for t in card["targets"]} >= {"accuracy", "roc_auc"}
    text = md.read_text()
    for heading in ("## Intended use", "## Performance", "## Limitations", "## Files", "ROC-AUC"):
        assert heading in text


def test_card_hashes_are_verified_by_the_predictor(release, tmp_path, release_key):
    from leukedge.card import write_card
    from leukedge.errors import ModelError
    from leukedge.predictors import load_predictor
    from leukedge.release_sign import sign_release

    write_card(release)
    with pytest.raises(ModelError, match="unsigned release"):
        load_predictor(release)
    assert load_predictor(release, allow_unsigned=True).signature == "unsigned"
    sign_release(release, release_key)
    pred = load_predictor(release)
    assert pred.kind == "tflite" and pred.signature == "verified"
    tampered = tmp_path / "tiny"
    shutil.copytree(release, tampered)
    data = bytearray((tampered / "tiny.float32.tflite").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "tiny.float32.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError):
        load_predictor(tampered)


def test_card_without_evaluation_and_missing_spec(tmp_path, tiny_spec):
    from leukedge.card import write_card
    from leukedge.errors import ModelError

    with pytest.raises(ModelError):
        write_card(tmp_path)
    spec = ModelSpec.from_dict(tiny_spec.to_dict())
    spec.weights = "imagenet"
    spec.save(tmp_path / "spec.json")
    j, md = write_card(tmp_path)
    card = json.loads(j.read_text())
    assert list(card["files"]) == ["spec.json"] and "evaluation" not in card
    assert "ImageNet weights" in card["training"]["statement"]
    assert "No evaluation.json" in md.read_text()


def test_evaluate_single_tflite_file(release, small_dataset):
    from leukedge.evaluate import run_evaluation

    res = run_evaluation(release / "tiny.float32.tflite", small_dataset, n_boot=200, gradcam=0)
    assert res["model"]["kind"] == "tflite" and res["threshold_rule"].startswith("highest specificity")
    ev = json.loads((release / "evaluation.json").read_text())
    # the same file, the same images: the same numbers
    assert res["metrics"]["roc_auc"]["value"] == pytest.approx(ev["metrics"]["roc_auc"]["value"])


def test_release_gallery_uses_the_tflite_cam_and_matches_gradienttape(release, tiny_keras, small_dataset):
    """The heatmaps of the report come from the .tflite's cam output and equal the GradientTape reference."""
    import numpy as np

    from leukedge.preprocess import preprocess_file
    from leukedge.train.gradcam import GradCAM

    z = np.load(release / "cams.npz")
    assert "tflite cam" in str(z["source"])
    assert (release / "figures" / "gradcam_gallery.png").exists()
    spec = ModelSpec.load(release)
    x = np.stack([preprocess_file(small_dataset / p, spec.preprocess) for p in z["paths"]])
    ref, _ = GradCAM(tiny_keras)(x)
    assert ref.shape == z["cams"].shape
    np.testing.assert_allclose(z["cams"], ref, rtol=1e-3, atol=1e-4 * float(ref.max()))


def test_benchmark_refreshes_only_the_cards_benchmarks(release, tmp_path):
    """`bench --save-release` puts bench/*.json into the card without re-hashing: a model file
    changed after the card was written stays caught."""
    from leukedge.card import refresh_benchmarks, write_card
    from leukedge.fileio import sha256_file

    d = tmp_path / "tiny"
    shutil.copytree(release, d)
    write_card(d)
    raw = sorted((Path(__file__).resolve().parents[1] / "docs/bench/raw").glob("*litert.json"))[0]
    (d / "bench").mkdir(exist_ok=True)
    shutil.copy(raw, d / "bench" / "x86_64-test-2c-litert.json")
    f32 = d / "tiny.float32.tflite"
    before = sha256_file(f32)
    f32.write_bytes(f32.read_bytes() + b"tampered")
    assert refresh_benchmarks(d)
    card = json.loads((d / "card.json").read_text())
    assert list(card["benchmarks"]) == ["x86_64-test-2c-litert.json"]
    assert card["files"]["tiny.float32.tflite"] == before != sha256_file(f32)
    assert "x86_64-test-2c-litert.json" in (d / "card.md").read_text()
    (d / "card.json").write_text(json.dumps({"files": {}}))          # not a full card: left alone
    assert not refresh_benchmarks(d) and json.loads((d / "card.json").read_text()) == {"files": {}}
