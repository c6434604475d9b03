"""Screening each model input in several rotated / mirrored views (leukedge.views)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from leukedge.capture import CaptureConfig
from leukedge.compress.recipe import ScreeningRecipe
from leukedge.errors import ConfigError
from leukedge.views import ORDER, mean_over_views, view, view_indices


def test_the_eight_views_are_the_eight_distinct_rotations_and_mirror_images():
    x = np.arange(3 * 4 * 2).reshape(3, 4, 2)            # not symmetric under any of them
    views = [view(x, i) for i in range(8)]
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8
    assert np.array_equal(views[0], x) and np.array_equal(views[1], x[:, ::-1])
    assert [ORDER[i] for i in view_indices(4)] == [(0, False), (1, False), (2, False), (3, False)]
    # a batch: the same views image by image
    batch = np.stack([x, x + 1])
    for i in range(8):
        assert np.array_equal(view(batch, i, axes=(1, 2))[1], view(x + 1, i))
    with pytest.raises(ValueError):
        view_indices(3)


def test_the_probability_is_averaged_and_every_other_output_is_the_unrotated_inputs():
    x = np.zeros((4, 4, 3), np.float32)
    x[0, 0] = 1.0                                          # a mark whose place says the orientation

    def run(img):
        corner = float(img[0, 0, 0])                       # 1 only for the unrotated input
        return {"probability": np.array([corner]), "cam": img[..., 0].copy()}

    one = mean_over_views(run, x, 1)
    assert one["probability"][0] == 1.0
    eight = mean_over_views(run, x, 8)
    # the mark is at (0, 0) in the identity view and in the mirror of a quarter turn: 2 of 8
    assert eight["probability"][0] == pytest.approx(2 / 8)
    assert np.array_equal(eight["cam"], x[..., 0])


def test_the_number_of_views_is_checked_where_it_is_set():
    for bad in (0, 3, 16, True, 2.5, "8"):
        with pytest.raises(ConfigError, match="views"):
            CaptureConfig(views=bad)
        with pytest.raises(ConfigError, match="views"):
            ScreeningRecipe(views=bad)
    assert CaptureConfig().views == 1 and ScreeningRecipe().views is None
    steps = CaptureConfig(views=8).steps()
    assert steps[-1]["step"] == "views" and steps[-1]["n"] == 8
    assert all(s["step"] != "views" for s in CaptureConfig().steps())


@pytest.fixture(scope="module")
def subtype_release():
    from leukedge.edge_app.inference import load_release

    return load_release("models/efficientnet-lite0-subtype")


def _with_views(release, k):
    spec = release.spec
    spec = dataclasses.replace(spec, preprocess=spec.preprocess.replace(
        capture=dataclasses.replace(spec.preprocess.capture, views=k)))
    return dataclasses.replace(release, spec=spec)


def test_with_eight_views_a_rotated_or_mirrored_photo_gets_the_same_answer(subtype_release, smear_paths):
    """The app's whole path (quality gate, preprocessing, tiles, int8 model): a photo turned by
    90 degrees or mirrored is screened with (nearly) the same probability; one view varies 10x more."""
    from leukedge.edge_app.inference import Screener
    from leukedge.imageio import load_image

    one = Screener(subtype_release, num_threads=1)
    eight = Screener(_with_views(subtype_release, 8), num_threads=1)
    spread1, spread8 = [], []
    for c in ("Benign", "Early", "Pro"):
        rgb = load_image(smear_paths[c][0])
        turned = [rgb, np.rot90(rgb), np.rot90(rgb, 2), rgb[:, ::-1], np.rot90(rgb[::-1])]
        p1 = [one.screen_image(np.ascontiguousarray(t), heatmap=False).probability for t in turned]
        p8 = [eight.screen_image(np.ascontiguousarray(t), heatmap=False).probability for t in turned]
        spread1.append(max(p1) - min(p1))
        spread8.append(max(p8) - min(p8))
    # not exactly equal: OpenCV's CLAHE is not exactly rotation-equivariant (up to ~10 grey levels
    # on a fifth of the pixels), so the preprocessed views differ a little; measured spreads:
    # one view 0.092 / 2e-5 / 2e-4, eight views 0.0095 / 4e-6 / 1e-5
    assert sum(spread8) < 0.2 * sum(spread1) and max(spread8) < 0.02, (spread1, spread8)


def test_evaluation_scores_with_the_specs_views(subtype_release, smear_paths):
    """Predictor.predict (evaluate, parity) averages the same views as the app."""
    from leukedge.predictors import TFLitePredictor
    from leukedge.preprocess import preprocess_file

    x = np.stack([preprocess_file(smear_paths[c][1], subtype_release.spec.preprocess) for c in ("Benign", "Pre")])
    spec8 = _with_views(subtype_release, 8).spec
    single = TFLitePredictor(subtype_release.model_path, subtype_release.spec, num_threads=1)
    averaged = TFLitePredictor(subtype_release.model_path, spec8, num_threads=1)
    each = [single.predict(np.stack([view(im, i) for im in x]))["probabilities"] for i in range(8)]
    got = averaged.predict(x)
    np.testing.assert_allclose(got["probabilities"], np.mean(each, axis=0), atol=1e-6)
    np.testing.assert_allclose(got["probability"], [spec8.positive_probability(p) for p in np.mean(each, axis=0)],
                               atol=1e-6)
    assert np.array_equal(got["cam"], single.predict(x)["cam"])          # the heatmap: the unrotated input's


def test_compress_chooses_the_threshold_again_when_the_views_change(smear_paths):
    """screening.views changes the probabilities, so compress re-chooses the operating points on
    the validation rows, scored by the float32 file with the new views."""
    import json
    from pathlib import Path

    from leukedge.compress.config import CompressConfig
    from leukedge.compress.pipeline import _screening_spec, _views_operating_points, views_of
    from leukedge.metrics import choose_threshold
    from leukedge.predictors import TFLitePredictor, score_paths
    from leukedge.spec import ModelSpec

    folder = Path("models/efficientnet-lite0-binary")
    spec = ModelSpec.from_dict(json.loads((folder / "spec.json").read_text()))
    assert views_of(spec) == 1
    spec8 = _screening_spec(CompressConfig(source="s", out="o", views=8), spec)
    assert views_of(spec8) == 8 and spec8.threshold == spec.threshold      # not chosen yet
    rows = [{"abspath": str(p), "class": c, "split": "val"} for c in ("Benign", "Early", "Pro") for p in smear_paths[c][:3]]
    rows.append({"abspath": str(smear_paths["Pre"][0]), "class": "Pre", "split": "train"})   # not validation: unused
    f32 = folder / "efficientnet-lite0-binary.float32.tflite"
    record = {}
    new = _views_operating_points(spec8, f32.read_bytes(), rows, record)
    sc = score_paths(TFLitePredictor(f32, spec8), [r["abspath"] for r in rows[:9]], keep=())
    want = choose_threshold([0, 0, 0] + [1] * 6, sc.probability)
    assert new.threshold == next(o.threshold for o in want if o.name == "default")
    assert [o.threshold for o in new.operating_points] == [o.threshold for o in want]
    assert "8 rotated / mirrored views" in new.operating_points[0].rule
    assert record["operating_points"]["views"] == 8 and record["operating_points"]["n"] == 9
    assert record["operating_points"]["threshold"]["old"] == spec.threshold
