"""A phone's full-resolution photo: red cells many times wider in pixels than the lab camera's.

The ``resolution`` capture family makes one from a real smear; the releases' ``min_scale``
(recipe key ``screening.min_scale``) lets magnification normalisation shrink it back to the
training cell size (docs/captures.md 18). Real releases on real smears.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from leukedge.capture import CaptureConfig, estimate_cell_diameter, prepare_field, tile_boxes
from leukedge.capture_sim import BENCH_ONLY, FAMILIES, apply_capture
from leukedge.compress.recipe import ScreeningRecipe
from leukedge.errors import ConfigError
from leukedge.imageio import load_image
from leukedge.spec import ModelSpec

#: the value the releases with magnification normalisation carry (None: magnification off)
RELEASED = {"efficientnet-lite0-subtype": 0.05, "efficientnet-lite0-binary": 0.05, "densenet201-binary": None}


def test_the_resolution_family_samples_the_same_smear_with_more_pixels(smear_paths):
    rgb = load_image(smear_paths["Pro"][0])
    for k in FAMILIES["resolution"].severities:
        out = apply_capture("resolution", rgb, k)
        assert out.shape[:2] == (round(rgb.shape[0] * k), round(rgb.shape[1] * k))
        d0, d1 = estimate_cell_diameter(rgb), estimate_cell_diameter(out)
        assert abs(np.log(d1 / (k * d0))) < 0.2, (k, d0, d1)            # cells k times wider
    with pytest.raises(ConfigError, match="resolution factor"):
        apply_capture("resolution", rgb, 12)
    assert "resolution" in BENCH_ONLY


def test_min_scale_is_checked_where_it_is_set():
    for bad in (0.0, 1.5, True, "small"):
        with pytest.raises(ConfigError, match="min_scale"):
            ScreeningRecipe(min_scale=bad)
    with pytest.raises(ConfigError, match="magnification"):
        ScreeningRecipe(magnification=False, min_scale=0.1)
    with pytest.raises(ConfigError, match="min_scale"):
        CaptureConfig(min_scale=0.0)
    assert ScreeningRecipe(min_scale=0.05).min_scale == 0.05


def test_the_recipe_key_reaches_the_spec():
    from leukedge.compress.config import CompressConfig
    from leukedge.compress.pipeline import _screening_spec
    from leukedge.compress.recipe_keys import from_config

    spec = ModelSpec.from_dict(json.loads(Path("models/efficientnet-lite0-subtype/spec.json").read_text()))
    cfg = CompressConfig(source="s", out="o", min_scale=0.2)
    assert _screening_spec(cfg, spec).preprocess.capture.min_scale == 0.2
    assert from_config(cfg).screening.min_scale == 0.2
    assert _screening_spec(CompressConfig(source="s", out="o"), spec) is spec       # not set: the source's


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_each_release_carries_its_min_scale_in_spec_and_recipe(name):
    spec = ModelSpec.from_dict(json.loads(Path(f"models/{name}/spec.json").read_text()))
    cap = spec.preprocess.capture
    if RELEASED[name] is None:
        assert not cap.magnification
        return
    assert cap.magnification and cap.min_scale == RELEASED[name]
    recipe = json.loads(Path(f"models/{name}/recipe.json").read_text())
    assert recipe["screening"]["min_scale"] == RELEASED[name]


def test_a_full_resolution_eyepiece_photo_is_brought_back_to_the_training_cell_size(smear_paths):
    """A 6x eyepiece photo (a 12 MP phone's pixels per cell): with the release's min_scale the field
    reaches the model at the training cell size; with the old 0.5 it stayed at ~3x."""
    spec = ModelSpec.from_dict(json.loads(Path("models/efficientnet-lite0-subtype/spec.json").read_text()))
    cap = dataclasses.replace(spec.preprocess.capture, shrink="exact")   # the rule this test is about
    rgb = load_image(smear_paths["Pre"][1])
    photo = apply_capture("resolution", FAMILIES["eyepiece"].apply(rgb, 1, np.random.default_rng(0)), 6)
    lab = estimate_cell_diameter(rgb)
    field, info = prepare_field(photo, cap, spec.preprocess.input_size)
    assert abs(np.log(info["cell_diameter"] / (6 * lab))) < 0.2                  # measured 6x the lab photo's
    # cells at the training size, or a little above where the field would shrink below one model input
    assert info["scale"] < 0.25 and 0.99 < info["cell_diameter"] * info["scale"] / cap.cell_diameter < 1.6
    assert min(field.shape[:2]) >= spec.preprocess.input_size
    old, info_old = prepare_field(photo, dataclasses.replace(cap, min_scale=0.5), spec.preprocess.input_size)
    assert info_old["scale"] == 0.5 and info_old["cell_diameter"] * 0.5 > 2.2 * cap.cell_diameter  # left at ~3x
    assert old.shape[0] > 2 * field.shape[0]


@pytest.mark.parametrize("name", ["efficientnet-lite0-subtype", "efficientnet-lite0-binary"])
def test_the_release_answers_a_full_resolution_phone_photo_like_the_lab_photo(name, smear_paths):
    """Through the release's Screener (like `leukedge predict`): a leukemia and a benign smear,
    photographed through the eyepiece at 1x, 4x and 6x the lab's pixels per cell, are not flagged
    and never get the opposite of the lab photo's decision (at most "borderline, take another
    field"); the leukemia smear is referred at every size."""
    from leukedge.edge_app.inference import Screener

    s = Screener(f"models/{name}", num_threads=1)
    for cls in ("Pre", "Benign"):
        rgb = load_image(smear_paths[cls][0])
        lab = s.screen_image(rgb, heatmap=False)
        eye = FAMILIES["eyepiece"].apply(rgb, 1, np.random.default_rng(3))
        for k in (1, 4, 6):
            res = s.screen_image(apply_capture("resolution", eye, k) if k > 1 else eye, heatmap=False)
            assert not res.ood and res.decision in (lab.decision, "retake"), (name, cls, k, res.decision, res.ood_score)
            assert res.decision == "positive" or cls == "Benign", (name, k, res.probability)
            assert res.decision != "retake" or res.borderline, (name, cls, k, res.quality)


def test_the_shrink_rule_is_checked_where_it_is_set():
    from leukedge.compress.config import CompressConfig
    from leukedge.compress.pipeline import _screening_spec
    from leukedge.compress.recipe_keys import from_config

    for bad in ("least", 1, True):
        with pytest.raises(ConfigError, match="shrink"):
            ScreeningRecipe(shrink=bad)
        with pytest.raises(ConfigError, match="shrink"):
            CaptureConfig(shrink=bad)
    with pytest.raises(ConfigError, match="magnification"):
        ScreeningRecipe(magnification=False, shrink="fewest")
    doc = json.loads(Path("models/efficientnet-lite0-subtype/spec.json").read_text())
    doc["preprocess"]["capture"].pop("shrink", None)
    spec = ModelSpec.from_dict(doc)
    assert spec.preprocess.capture.shrink == "exact"                      # a spec made before the key
    cfg = CompressConfig(source="s", out="o", shrink="fewest")
    new = _screening_spec(cfg, spec).preprocess.capture
    assert new.shrink == "fewest" and new.steps()[1]["shrink"] == "fewest"
    assert from_config(cfg).screening.shrink == "fewest"
    assert ModelSpec.from_dict(json.loads(json.dumps(dataclasses.replace(spec, preprocess=spec.preprocess.replace(
        capture=new)).to_dict()))).preprocess.capture.shrink == "fewest"   # spec.json round trip


@pytest.mark.parametrize("k", [2, 4])
def test_fewest_shrinks_a_full_resolution_photo_to_one_input_with_cells_inside_the_tolerance(k, smear_paths):
    """``exact`` brings the cells of a k-times photo to the training size, leaving a field larger than
    one input (tiles); ``fewest`` shrinks further, to the smallest cell size a lab photo is left at,
    or to one input, whichever is larger. A lab photo is left alone by both."""
    spec = ModelSpec.from_dict(json.loads(Path("models/efficientnet-lite0-subtype/spec.json").read_text()))
    exact = dataclasses.replace(spec.preprocess.capture, shrink="exact")
    fewest = dataclasses.replace(exact, shrink="fewest")
    side = spec.preprocess.input_size
    for path in (smear_paths["Benign"][0], smear_paths["Pre"][0]):
        rgb = load_image(path)
        lab = [prepare_field(rgb, c, side)[1]["scale"] for c in (exact, fewest)]
        assert lab[0] == lab[1]
        photo = apply_capture("resolution", rgb, k)
        (fe, ie), (ff, i_f) = (prepare_field(photo, c, side) for c in (exact, fewest))
        assert ie["cell_diameter"] == i_f["cell_diameter"] and i_f["scale"] <= ie["scale"] < 1
        cells = i_f["cell_diameter"] * i_f["scale"]
        assert cells >= exact.cell_diameter / (1 + exact.scale_tolerance) - 0.1       # inside the tolerance
        assert min(ff.shape[:2]) >= side and ff.shape[0] * ff.shape[1] <= fe.shape[0] * fe.shape[1]
        assert len(tile_boxes(ff.shape, side)) <= len(tile_boxes(fe.shape, side))
    # the last (Pre) smear's photo: exact leaves a field just over one input (4 overlapping tiles),
    # fewest one input, as its lab photo is screened
    assert len(tile_boxes(fe.shape, side)) == 4 and ff.shape[:2] == (side, side)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_each_release_carries_the_shrink_rule_of_its_recipe(name):
    spec = ModelSpec.from_dict(json.loads(Path(f"models/{name}/spec.json").read_text()))
    recipe = json.loads(Path(f"models/{name}/recipe.json").read_text())
    assert spec.preprocess.capture.shrink == (recipe["screening"].get("shrink") or "exact")
