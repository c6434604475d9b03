"""Heatmap localisation and faithfulness measure (issue 23): the mask on real smears, the measures on
maps whose answer is known, the deletion curve of a model that looks at one region, and the
``heatmap_quality`` block that `leukedge evaluate` writes and the card shows."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from leukedge import heatmap_quality as HQ
from leukedge.imageio import load_image
from leukedge.preprocess import PreprocessConfig, preprocess_uint8
from leukedge.spec import ModelSpec


@pytest.fixture(scope="module")
def smears(smear_paths):
    cfg = PreprocessConfig(input_size=224)
    return [preprocess_uint8(load_image(p), cfg) for c in ("Benign", "Pre", "Pro") for p in smear_paths[c][:3]]


def test_mask_finds_the_stained_cells(smears):
    for img in smears:
        mask = HQ.stained_cell_mask(img)
        assert 0.003 < mask.mean() < 0.35  # one to a dozen white cells among many red cells
        score = (img[..., 0].astype(float) + img[..., 2]) / 2 - img[..., 1]
        assert score[mask].mean() > score[~mask].mean() + 10  # the mask is the purple part


def test_uniform_map_scores_chance_and_the_mask_itself_scores_high(smears):
    img = smears[3]
    mask = HQ.stained_cell_mask(img)
    flat = np.ones(mask.shape, np.float32)
    assert HQ.lift(flat, mask) == pytest.approx(1.0)
    hit, chance = HQ.pointing(flat, mask)
    assert hit == chance and 0 < chance < 1
    on_cells = mask.astype(np.float32)
    assert HQ.lift(on_cells, mask) == pytest.approx(1.0 / mask.mean())
    assert HQ.pointing(on_cells, mask)[0] == 1.0
    off_cells = (~mask).astype(np.float32)
    assert HQ.lift(off_cells, mask) == 0.0


def test_generic_correlation_is_one_for_the_same_map_everywhere():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.random((1, 7, 7)), 5, axis=0)
    assert np.allclose(HQ.generic_correlation(same), 1.0)
    different = rng.random((40, 7, 7))
    assert np.nanmean(HQ.generic_correlation(different)) < 0.5


def test_deletion_of_a_model_that_looks_at_one_region_drops_faster_in_saliency_order(smears):
    img = smears[0]
    region = (slice(32, 96), slice(112, 176))

    def predict(batch):  # "probability" = detail (local contrast) inside one region only
        crop = batch[:, region[0], region[1]].astype(np.float64)
        return np.clip(crop.std(axis=(1, 2, 3)) / 40.0, 0, 1)

    heat = np.zeros(img.shape[:2], np.float32)
    heat[region] = 1.0
    c = HQ.perturbation_curves(predict, img, heat, n_random=3, seed=1)
    assert len(c["deletion"]) == HQ.STEPS + 1
    assert c["deletion_auc"] < c["deletion_auc_random"] - 0.1
    assert c["insertion_auc"] > c["insertion_auc_random"] + 0.1
    assert c["deletion"][-1] < c["deletion"][0]


def test_a_second_target_is_scored_on_the_same_images_and_can_disagree(smears):
    """Column 0 looks at the highlighted region, column 1 at another one: the map is faithful to the
    first target only, and both come from one call per perturbed batch."""
    img = smears[0]
    shown, other = (slice(32, 96), slice(112, 176)), (slice(140, 204), slice(20, 84))
    calls = []

    def detail(batch, region):
        return np.clip(batch[:, region[0], region[1]].astype(np.float64).std(axis=(1, 2, 3)) / 40.0, 0, 1)

    def predict(batch):
        calls.append(len(batch))
        return np.stack([detail(batch, shown), detail(batch, other)], axis=1)

    heat = np.zeros(img.shape[:2], np.float32)
    heat[shown] = 1.0
    c = HQ.perturbation_curves(predict, img, heat, n_random=3, seed=1, extra_prefixes=(HQ.CLASS_PREFIX,))
    assert len(calls) == 1 and set(HQ.CLASS_FAITHFULNESS_KEYS) <= set(c)
    assert c["deletion_vs_random"] < -0.1                      # faithful to the target it highlights
    assert c["class_deletion_vs_random"] > c["deletion_vs_random"] + 0.1
    assert c["class_deletion"][0] == pytest.approx(detail(img[None], other)[0])
    with pytest.raises(ValueError, match="expected 1"):
        HQ.perturbation_curves(predict, img, heat, n_random=1)  # two columns, one target named


def test_mean_with_ci_and_groups():
    v = np.r_[np.zeros(50), np.ones(50)]
    s = HQ.mean_with_ci(v, 500, 0)
    assert s["value"] == 0.5 and s["ci95"][0] < 0.5 < s["ci95"][1]
    g = HQ.mean_with_ci(v, 500, 0, groups=np.repeat(np.arange(10), 10))
    assert g["ci95"][1] - g["ci95"][0] > s["ci95"][1] - s["ci95"][0]  # 10 clusters: a wider interval


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory, tiny_keras, tiny_spec, small_dataset):
    """A release folder with the exporter's float32 .tflite (probability, cam, features) and split.csv."""
    from leukedge.compress.export import convert
    from leukedge.compress.quantization import QuantizationConfig
    from leukedge.split import SplitConfig, make_split, write_manifest

    d = tmp_path_factory.mktemp("hq") / "tiny"
    d.mkdir()
    spec = ModelSpec.from_dict(tiny_spec.to_dict())
    spec.save(d / "spec.json")
    (d / "tiny.float32.tflite").write_bytes(convert(tiny_keras, spec, QuantizationConfig("float32")))
    write_manifest(make_split(small_dataset, SplitConfig(block_size=10, seed=1)), d / "split.csv")
    return d


def test_evaluate_writes_heatmap_quality_and_the_card_shows_it(tiny_release, small_dataset, tmp_path):
    from leukedge.card import write_card
    from leukedge.evaluate import run_evaluation

    rep = tmp_path / "report"
    res = run_evaluation(tiny_release / "tiny.float32.tflite", small_dataset, json_out=tmp_path / "ev.json",
                         report_dir=rep, mask_corners=0, gradcam=1, n_boot=200, faithfulness=2)
    hq = json.loads((tmp_path / "ev.json").read_text())["heatmap_quality"]
    assert res["metrics"]["accuracy"]["value"] is not None  # the interface's keys stay
    pos = hq["leukemia_positive"]
    assert pos["n"] == res["n_positive"] and hq["all"]["n"] == res["n"]
    for k in ("lift", "pointing", "pointing_chance", "generic_r"):
        assert pos[k]["value"] is not None and len(pos[k]["ci95"]) == 2
    assert hq["faithfulness_n"] == 2 and pos["deletion_auc"]["n"] == 2 and len(hq["mean_curves"]["deletion"]) == 11
    assert (rep / "heatmap_quality.csv").exists() and (rep / "figures" / "heatmap_quality.png").exists()
    assert "Heatmap quality" in (rep / "evaluation.md").read_text()

    copy = tmp_path / "copy"
    shutil.copytree(tiny_release, copy)
    shutil.copy(tmp_path / "ev.json", copy / "evaluation.json")
    j, md = write_card(copy)
    card = json.loads(j.read_text())["evaluation"]["heatmap_quality"]
    assert card["lift"] == pos["lift"] and card["n"] == pos["n"]
    assert "Heatmap quality" in md.read_text()


def test_evaluate_without_heatmap_quality(tiny_release, small_dataset):
    from leukedge.evaluate import run_evaluation

    res = run_evaluation(tiny_release, small_dataset, n_boot=200, gradcam=0, mask_corners=0, heatmap_quality=False)
    assert "heatmap_quality" not in res


def test_cli_prints_the_heatmap_line_and_refuses_a_negative_faithfulness(tiny_release, small_dataset, capsys):
    from leukedge.cli import main

    assert main(["evaluate", "--model", str(tiny_release / "tiny.float32.tflite"), "--data", str(small_dataset),
                 "--split", str(tiny_release / "split.csv"), "--faithfulness", "-1"]) != 0
    assert "--faithfulness must be >= 0" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_release / "tiny.float32.tflite"), "--data", str(small_dataset),
                 "--split", str(tiny_release / "split.csv"), "--gradcam", "0", "--n-boot", "100",
                 "--mask-corners", "0"]) == 0
    assert "heatmap: lift" in capsys.readouterr().out


def test_a_subtype_model_is_measured_on_its_screening_probability_and_on_the_predicted_subtype(
        tmp_path, small_dataset, tiny_spec, smears):
    """The map is shown beside the screening score: its deletion/insertion curves record
    P(leukemia) = 1 - P(Benign); the predicted subtype's curves are the ``class_*`` keys."""
    from fixtures_models import untrained_subtype
    from leukedge.compress.export import convert
    from leukedge.compress.quantization import QuantizationConfig
    from leukedge.evaluate import load_model, run_evaluation
    from leukedge.heatmap_eval import faithfulness_target
    from leukedge.preprocess import normalize
    from leukedge.split import SplitConfig, make_split, write_manifest

    spec, model = untrained_subtype(tiny_spec, seed=3)
    d = tmp_path / "tiny-subtype"
    d.mkdir()
    spec.save(d / "spec.json")
    (d / "tiny-subtype.float32.tflite").write_bytes(convert(model, spec, QuantizationConfig("float32")))
    write_manifest(make_split(small_dataset, SplitConfig(block_size=10, seed=1)), d / "split.csv")

    pred, _ = load_model(d, "float32")
    u8 = np.stack([preprocess_uint8(s, spec.preprocess) for s in smears[:4]])
    probs = pred.predict(normalize(u8, spec.preprocess))["probabilities"]
    cols = faithfulness_target(pred, spec.preprocess, 2)(u8)
    assert cols.shape == (4, 2)
    np.testing.assert_allclose(cols[:, 0], 1.0 - probs[:, 0], atol=1e-6)   # screening probability
    np.testing.assert_allclose(cols[:, 1], probs[:, 2], atol=1e-6)         # the explained subtype

    res = run_evaluation(d, small_dataset, n_boot=100, gradcam=0, mask_corners=0, faithfulness=2)
    pos = res["heatmap_quality"]["leukemia_positive"]
    for k in ("deletion_vs_random", "class_deletion_vs_random", "class_insertion_vs_random"):
        assert pos[k]["n"] == 2
    assert "1 - P(negative class)" in res["heatmap_quality"]["method"]["faithfulness"]
