"""The committed releases in models/ are intact, self-describing and run on real smears."""
import json
from pathlib import Path

import numpy as np
import pytest

from leukedge.fileio import sha256_file
from leukedge.predictors import load_predictor, score_paths
from leukedge.spec import ModelSpec

RELEASES = sorted(p for p in Path("models").glob("*") if (p / "card.json").exists())


def test_there_are_releases():
    names = {p.name for p in RELEASES}
    assert {"efficientnet-lite0-binary", "efficientnet-lite0-subtype", "densenet201-binary"} <= names


@pytest.mark.parametrize("release", RELEASES, ids=lambda p: p.name)
def test_card_hashes_match_and_files_are_small_enough(release):
    card = json.loads((release / "card.json").read_text())
    assert card["files"], "the card lists no model file"
    for name, sha in card["files"].items():
        f = release / name
        assert f.exists() and sha256_file(f) == sha, name
        assert f.stat().st_size < 100 * 2**20, f"{name} is over 100 MB"
    assert f"{release.name}.int8.tflite" in card["files"]
    assert f"{release.name}.float32.tflite" in card["files"]
    spec = ModelSpec.load(release)
    assert spec.name == release.name and spec.outputs[:1] == ["probability"]
    assert any(o.name == "default" for o in spec.operating_points)
    ev = card["evaluation"]["metrics"]
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc"):
        assert ev[key]["ci95"][0] <= ev[key]["value"] <= ev[key]["ci95"][1]


@pytest.mark.parametrize("release", RELEASES, ids=lambda p: p.name)
def test_int8_release_scores_real_smears_like_its_evaluation(release, smear_paths):
    pred = load_predictor(release)  # verifies sha256 against the card
    assert pred.name.endswith(".int8.tflite")
    paths = [str(p) for c in ("Benign", "Pro") for p in smear_paths[c][:4]]
    scores = score_paths(pred, paths)
    assert not scores.errors
    assert np.all((scores.probability >= 0) & (scores.probability <= 1))
    assert scores.extra["cam"].shape[0] == len(paths) and scores.extra["features"].shape[0] == len(paths)
    # the release's own predictions.csv (written by evaluate) has the same probabilities for these files
    import csv

    with open(release / "predictions.csv") as fh:
        saved = {Path(r["path"]).name: float(r["probability"]) for r in csv.DictReader(fh)}
    compared = 0
    for path, p in zip(scores.paths, scores.probability):
        if Path(path).name in saved:
            assert abs(saved[Path(path).name] - p) < 1e-4
            compared += 1
    assert compared >= 1, "none of the smears is in the release's test predictions"


@pytest.mark.parametrize("release", RELEASES, ids=lambda p: p.name)
def test_app_model_screen_text_of_each_release(release):
    """The app's model screen (card lines) renders every released card, OOD rates included."""
    from leukedge.edge_app import presenter
    from leukedge.edge_app.inference import load_release

    rel = load_release(release)
    card = json.loads((release / "card.json").read_text())
    rates = rel.ood_rates()
    assert rates and all(0.0 <= v <= 1.0 for v in rates.values())
    assert rates["pbc-lymphocytes"] == card["ood"]["rates"]["pbc-lymphocytes"]["flagged"]
    lines = presenter.card_lines(rel)
    gate = next(line for line in lines if line.startswith("Out-of-distribution gate"))
    assert f"pbc-lymphocytes {presenter.pct(rates['pbc-lymphocytes'])}" in gate and "train" not in gate
    assert rates["pbc-lymphocytes"] >= 0.95          # lymphocyte crops from another lab: nearly all flagged
    assert any(line.startswith("recall:") for line in lines)


def test_tampered_release_file_is_refused(tmp_path):
    import shutil

    from leukedge.errors import ModelError

    src = Path("models/efficientnet-lite0-binary")
    dst = tmp_path / src.name
    dst.mkdir()
    card = json.loads((src / "card.json").read_text())
    for f in [*card["files"], "card.json", "card.sig"]:  # the signed release's runtime files (no reports)
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / f, dst / f)
    load_predictor(dst)  # the copy verifies (signed by the project key, complete)
    data = bytearray((dst / f"{src.name}.int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / f"{src.name}.int8.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_predictor(dst)


def test_a_release_copied_under_another_name_still_runs_its_int8_file(tmp_path, smear_paths):
    """A release folder copied to ``runs/x/`` must run the same int8 file as the original: once it
    silently fell back to the alphabetically first file (float32) in `predict`, `bench`, `evaluate`."""
    import shutil

    from leukedge.edge_app.inference import Screener, load_release
    from leukedge.errors import ModelError

    src = Path("models/efficientnet-lite0-subtype")
    copy = tmp_path / "candidate"
    shutil.copytree(src, copy)
    rel = load_release(copy)
    assert rel.model_path.name == f"{src.name}.int8.tflite" and rel.variant == "int8"
    assert load_predictor(copy).name == f"{src.name}.int8.tflite"
    img = str(smear_paths["Pre"][0])
    a = Screener(load_release(src)).screen_image(img, heatmap=False).probability
    assert a is not None and Screener(rel).screen_image(img, heatmap=False).probability == a
    with pytest.raises(ModelError, match="no pruned-int8 model file"):
        load_release(copy, variant="pruned-int8")
    (copy / f"{src.name}.int8.tflite").unlink()
    with pytest.raises(ModelError, match="listed in the model card but missing"):
        load_release(copy, allow_unsigned=True)
    from leukedge.predictors import release_model_file
    with pytest.raises(ModelError, match=r"no int8 model file \(found \['efficientnet-lite0-subtype.float32"):
        release_model_file(copy, src.name, "int8")
