"""Magnification normalisation screened as tiles: the cut, the field rule, the Screener and `bench tiles`."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from fixtures_app import RELEASE_NAME, tiny_release  # noqa: F401  (fixture)
from leukedge.capture import (TILE_RULES, CaptureConfig, combine_tiles, estimate_cell_diameter, magnification_estimate,
                              prepare_field, tile_boxes)
from leukedge.capture_sim import apply_capture
from leukedge.edge_app.tiling import TileResult, feature_score, field_verdict, tile_quality
from leukedge.imageio import load_image
from leukedge.preprocess import PreprocessConfig, field_tiles, preprocess_uint8

ROOT = Path(__file__).resolve().parents[1]
#: The ``predict --json`` keys of a single-input result (no ``tiles`` / ``tiling``): those before tiling
#: existed, ``rule_in`` (session 23) and ``borderline`` (session 25).
OLD_JSON_KEYS = ["path", "probability", "decision", "ood", "quality", "probabilities", "error", "ood_score",
                 "threshold", "model", "model_version", "model_sha256", "image_sha256", "timings_ms",
                 "model_variant", "parity", "signature", "rule_in", "borderline"]


# ----- the cut -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(224, 224), (300, 224), (448, 448), (500, 380), (672, 600), (230, 650)])
def test_tiles_cover_the_field(shape):
    side = 224
    boxes = tile_boxes(shape, side, 9)
    covered = np.zeros(shape, bool)
    for y, x in boxes:
        assert 0 <= y <= shape[0] - side and 0 <= x <= shape[1] - side
        covered[y:y + side, x:x + side] = True
    assert covered.all(), (shape, boxes)
    assert len(boxes) == int(np.ceil(shape[0] / side)) * int(np.ceil(shape[1] / side)) <= 9


def test_a_field_larger_than_the_grid_is_cut_into_max_tiles_centred():
    boxes = tile_boxes((1000, 1000), 224, 9)
    assert len(boxes) == 9
    ys, xs = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    assert ys == xs and ys[0] + ys[-1] + 224 == 1000          # the 3x3 grid is centred
    assert len(tile_boxes((1000, 1000), 224, 4)) == 4


def test_a_half_magnification_photo_is_cut_into_more_than_one_tile(smear_paths):
    rgb = load_image(smear_paths["Pre"][0])
    d = estimate_cell_diameter(rgb)
    cfg = PreprocessConfig(input_size=224, capture=CaptureConfig(magnification=True, cell_diameter=d))
    photo = apply_capture("magnification", rgb, 0.5)
    cut = field_tiles(photo, cfg)
    assert cut.info["fallback"] is None and cut.info["cell_diameter"] is not None
    assert 1.4 < cut.info["scale"] <= 3.0 and min(cut.field_shape) >= 300
    assert len(cut.inputs) > 1 and len(cut.inputs) == len(cut.raw) == len(cut.boxes)
    assert all(t.shape == (224, 224, 3) and t.dtype == np.uint8 for t in cut.inputs)
    # the tiles differ (different parts of the field), and each is the finished raw tile
    assert len({t.tobytes() for t in cut.inputs}) == len(cut.inputs)
    # the same smear at full magnification needs no rescale: one input, the centre of preprocess_uint8
    whole = field_tiles(rgb, cfg)
    assert whole.info["scale"] == 1.0 and len(whole.inputs) == 1
    assert np.array_equal(whole.inputs[0], preprocess_uint8(rgb, cfg))


def test_a_failed_cell_estimate_falls_back_to_the_single_centre_input():
    # a photo of empty plasma (no cells; camera noise only): the scale cannot be measured
    rng = np.random.default_rng(0)
    rgb = np.clip(np.array([236, 226, 232]) + rng.normal(0, 6, (300, 300, 3)), 0, 255).astype(np.uint8)
    assert estimate_cell_diameter(rgb) is None
    cfg = PreprocessConfig(input_size=224, capture=CaptureConfig(magnification=True, cell_diameter=15.0))
    cut = field_tiles(rgb, cfg)
    assert len(cut.inputs) == 1 and "red-cell diameter not measurable" in cut.info["fallback"]
    assert np.array_equal(cut.inputs[0], preprocess_uint8(rgb, cfg))


def test_lab_smears_of_every_class_are_not_rescaled(smear_paths):
    """The lab's own photos keep their scale (the cell-size spread of the lab stays within the
    default tolerance), while a 0.5x photo of the same smears is rescaled by about 2."""
    ds = {c: [estimate_cell_diameter(load_image(p)) for p in ps] for c, ps in smear_paths.items()}
    assert all(d is not None for v in ds.values() for d in v), ds      # dense smears are measurable too
    ref = float(np.median([d for v in ds.values() for d in v]))
    cap = CaptureConfig(magnification=True, cell_diameter=ref)
    # the scale prepare_field applies (a 224-px lab photo is never shrunk below the input)
    factors = [prepare_field(load_image(p), cap, 224)[1]["scale"] for ps in smear_paths.values() for p in ps]
    assert sum(f == 1.0 for f in factors) >= 0.9 * len(factors), factors
    half = [magnification_estimate(apply_capture("magnification", load_image(p), 0.5), cap)[0]
            for p in smear_paths["Benign"][:4] + smear_paths["Early"][:4]]
    assert np.median(half) > 1.5 and sum(f > 1.0 + cap.scale_tolerance for f in half) >= 6, half


def test_without_magnification_the_cut_is_the_one_input(smear_paths):
    rgb = load_image(smear_paths["Pro"][0])
    for cfg in (PreprocessConfig(input_size=64), PreprocessConfig(input_size=64, capture=CaptureConfig(fov_crop=True))):
        cut = field_tiles(rgb, cfg)
        assert len(cut.inputs) == 1 and np.array_equal(cut.inputs[0], preprocess_uint8(rgb, cfg))


# ----- the field rule ----------------------------------------------------------------------------
def _tile(i, p, quality="ok", ratio=0.5):
    return TileResult(i, (0, 0), p, np.array([p]), quality, ratio)


def test_field_rule_combines_the_usable_in_distribution_tiles():
    tiles = [_tile(0, 0.9, ratio=1.5), _tile(1, 0.2), _tile(2, 0.4), _tile(3, 0.95, quality="over-exposed")]
    for rule in TILE_RULES:
        v = field_verdict(tiles, rule, image_ratio=0.3)
        assert v.quality == "ok" and not v.ood and v.used == [1, 2]     # OOD tile 0 and the blank tile 3 left out
        assert v.probability == pytest.approx(combine_tiles([0.2, 0.4], rule)) and v.deciding == 2
    assert field_verdict(tiles, "max").ood_details["tiles_flagged"] == 1


def test_field_is_ood_when_more_than_half_of_its_usable_tiles_are_or_the_photo_is():
    half = [_tile(0, 0.5, ratio=2.0), _tile(1, 0.5, ratio=0.5)]
    assert not field_verdict(half, "max").ood                          # 1 of 2: not more than half
    most = half + [_tile(2, 0.5, ratio=1.2)]
    v = field_verdict(most, "max")
    assert v.ood and v.ood_score == pytest.approx(1.2)                  # 2 of 3: the 2nd largest ratio
    assert field_verdict(half, "max", image_ratio=1.1).ood             # the photo's colour statistics
    assert feature_score([0.1, 3.0, 0.2, 0.3]) == pytest.approx(0.2)  # 1 of 4 flagged -> score < 1


def test_field_without_a_usable_tile_asks_for_a_retake_with_the_tiles_reason(smear_paths):
    tiles = [_tile(0, 0.9, "over-exposed"), _tile(1, 0.8, "over-exposed"), _tile(2, 0.1, "under-exposed")]
    v = field_verdict(tiles, "max")
    assert v.quality == "over-exposed" and v.used == []
    # like a one-input retake, the (hidden) score and OOD distance are still there, over every tile
    assert v.probability == pytest.approx(0.9) and v.deciding == 0 and v.ood_details["tiles_flagged"] == 0
    assert field_verdict(tiles, "mean").probability == pytest.approx(0.6)
    # the per-tile check on real pixels: a smear tile is ok, blank plasma and the dark rim are not
    rgb = load_image(smear_paths["Pre"][0])
    assert tile_quality(rgb[:112, :112]) == "ok"
    assert tile_quality(np.full((112, 112, 3), 253, np.uint8)) == "over-exposed"
    assert tile_quality(np.full((112, 112, 3), 4, np.uint8)) == "under-exposed"


# ----- the Screener ------------------------------------------------------------------------------
def _magnified(release, rule="max", cell_diameter=None, rgb=None):
    """The release with magnification on in a copy of its spec (what `bench tiles` does)."""
    from leukedge.spec import with_magnification

    spec = with_magnification(release.spec, cell_diameter or estimate_cell_diameter(rgb))
    spec = dataclasses.replace(spec, preprocess=spec.preprocess.replace(
        capture=dataclasses.replace(spec.preprocess.capture, tile_rule=rule)))
    return dataclasses.replace(release, spec=spec)


@pytest.fixture(scope="module")
def loaded(tiny_release):
    from leukedge.edge_app.inference import load_release

    return load_release(tiny_release)


def test_screener_with_magnification_screens_tiles_and_applies_the_rule(loaded, smear_paths):
    from leukedge.edge_app.inference import Screener
    from leukedge.preprocess import normalize

    rgb = load_image(smear_paths["Pre"][1])
    photo = apply_capture("magnification", rgb, 0.5)
    for rule in TILE_RULES:
        s = Screener(_magnified(loaded, rule, rgb=rgb), num_threads=1)
        res = s.screen_image(photo)
        assert res.error is None and res.tiles > 1 and res.tiling["rule"] == rule
        per = res.tiling["per_tile"]
        assert len(per) == res.tiles and res.tiling["fallback"] is None
        # every tile's probability is the model's on that tile of the one preprocessing
        cut = field_tiles(photo, s.spec.preprocess)
        assert len(cut.inputs) == res.tiles
        for t, x in zip(per, cut.inputs):
            assert t["probability"] == pytest.approx(float(s.runner.run(normalize(x, s.spec.preprocess))["probability"][0]))
        used = [t["probability"] for t in per if t["used"]]
        assert used and res.probability == pytest.approx(combine_tiles(used, rule))
        # the image and heatmap shown are the deciding tile's
        k = res.tiling["deciding"]
        assert per[k]["probability"] == max(used) and np.array_equal(res.image, cut.inputs[k])
        assert res.heatmap.shape == res.image.shape[:2]
        js = res.to_json()
        assert js["tiles"] == res.tiles and js["tiling"]["used"] == res.tiling["used"]
        json.dumps(js)


def test_screener_falls_back_to_the_centre_input_with_a_logged_reason(loaded, tmp_path, caplog):
    import cv2

    from leukedge.edge_app.inference import Screener

    # a photo of empty plasma (camera noise, no cells): the estimator finds no cells
    rng = np.random.default_rng(1)
    plasma = np.clip(np.array([236, 226, 232]) + rng.normal(0, 6, (300, 300, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "plasma.png"
    cv2.imwrite(str(path), cv2.cvtColor(plasma, cv2.COLOR_RGB2BGR))
    s = Screener(_magnified(loaded, cell_diameter=15.0), num_threads=1)
    with caplog.at_level(logging.INFO, logger="leukedge.edge_app.inference"):
        res = s.screen_image(path)
    assert res.tiles == 1 and "red-cell diameter not measurable" in res.tiling["fallback"]
    assert any("red-cell diameter not measurable" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)
    assert np.array_equal(res.image, preprocess_uint8(load_image(path), s.spec.preprocess))


def _single_input_reference(screener, path):
    """What screen_image computed before tiling existed, from the same primitives."""
    from leukedge.heatmap import normalise
    from leukedge.preprocess import normalize

    rgb = load_image(path)
    shown = preprocess_uint8(rgb, screener.spec.preprocess)
    out = screener.runner.run(normalize(shown, screener.spec.preprocess))
    p = float(screener.spec.positive_probability(np.asarray(out["probability"], np.float64).reshape(-1)))
    gate = screener.release.ood
    ood = gate.check(gate.vector(out), rgb) if gate is not None else (False, None, None)
    return shown, p, normalise(out["cam"], (shown.shape[1], shown.shape[0])) if "cam" in out else None, ood


def test_the_gate_is_fitted_on_what_the_tile_screen_feeds_it(loaded, smear_paths, tmp_path):
    """`calibrate-ood` on a tile-screened spec (collect_views(tiles=True)) sees exactly the Screener's
    usable tiles of a view, and its field rule (field_flags) gives the Screener's OOD answer."""
    import cv2

    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.ood_views import collect_views, field_flags, identity_views, view_rates

    rgb = load_image(smear_paths["Early"][2])
    rel = _magnified(loaded, rgb=rgb)
    half = apply_capture("magnification", rgb, 0.5)
    photos = [half, apply_capture("eyepiece", half, 2, seed=3), rgb]
    paths = []
    for i, ph in enumerate(photos):
        paths.append(tmp_path / f"p{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(ph, cv2.COLOR_RGB2BGR))
    s = Screener(rel, num_threads=1)
    gate = rel.ood
    assert gate is not None
    f, st, d, g = collect_views(s.runner, rel.spec, paths, identity_views, gate.stats, tiles=True, return_groups=True)
    f1, _, d1 = collect_views(s.runner, rel.spec, paths, identity_views, gate.stats)      # the centre input
    assert len(f1) == 3 and list(d1) == ["identity"] * 3
    dist = gate.feature_distance(f)
    # a threshold between the tile distances of the first photo, so that the rule is exercised
    # (half-way between two tile distances: a threshold equal to one of them makes the comparison a float tie)
    d0 = np.sort(dist[g == 0])
    gate.threshold = float((d0[len(d0) // 2 - 1] + d0[len(d0) // 2]) / 2) if len(d0) > 1 else gate.threshold
    fl = field_flags(gate, f, st, g)
    for k, path in enumerate(paths):
        res = s.screen_image(path, heatmap=False)
        ok = [t for t in res.tiling["per_tile"] if t["quality"] == "ok"]
        rows = np.flatnonzero(g == k)
        assert len(rows) == len(ok) and [x.split("|t")[1] for x in d[rows]] == [str(t["index"]) for t in ok]
        assert np.allclose(dist[rows] / gate.threshold, [t["feature_ratio"] for t in ok], atol=1e-3)
        assert np.all(st[rows] == st[rows[0]])                                      # photo-level statistics
        assert bool(fl["features"][k]) == (res.ood_details["features"] > 1.0)
    assert (g == 0).sum() > 1 and set(g) == {0, 1, 2}                               # 0.5x photo: several tiles
    rates = view_rates(gate, f, st, g)
    assert rates["n"] == 3 and rates["flagged_by_features"] == pytest.approx(fl["features"].mean())


def test_evaluate_scores_a_photo_as_the_app_screens_it(tiny_release, smear_paths, tmp_path):
    """`leukedge evaluate` (score_paths) with magnification on: a lower-magnification photo is cut into
    the app's tiles and combined by the spec's rule; a lab photo is one tile with the untiled score;
    the heatmap is measured on the deciding tile's input."""
    import cv2

    from leukedge.evaluate import Item, evaluate_predictor
    from leukedge.heatmap_eval import measure_heatmaps
    from leukedge.predictors import load_predictor, score_paths
    from leukedge.preprocess import normalize

    plain = load_predictor(tiny_release)
    rgb = load_image(smear_paths["Pro"][1])
    half = tmp_path / "Pro" / "half.png"
    half.parent.mkdir()
    cv2.imwrite(str(half), cv2.cvtColor(apply_capture("magnification", rgb, 0.5), cv2.COLOR_RGB2BGR))
    # a lab photo at the training cell size and the model's input size: one tile
    side = plain.spec.preprocess.input_size
    src = load_image(smear_paths["Benign"][1])
    lab = tmp_path / "lab.png"
    y0, x0 = (src.shape[0] - side) // 2, (src.shape[1] - side) // 2
    cv2.imwrite(str(lab), cv2.cvtColor(np.ascontiguousarray(src[y0:y0 + side, x0:x0 + side]), cv2.COLOR_RGB2BGR))
    for rule in TILE_RULES:
        tiled = load_predictor(tiny_release)
        # the training cell size is the lab photo's own (None: unmeasurable, the centre input: one tile too)
        d = estimate_cell_diameter(load_image(lab)) or estimate_cell_diameter(rgb)
        tiled.spec = _magnified(_Rel(tiled.spec), rule, cell_diameter=d).spec
        sc = score_paths(tiled, [str(half), str(lab)])
        cut = field_tiles(load_image(half), tiled.spec.preprocess)
        per = tiled.predict(np.stack([normalize(x, tiled.spec.preprocess) for x in cut.inputs]))
        assert sc.extra["tiles"][0] == len(cut.inputs) > 1
        assert sc.probability[0] == pytest.approx(combine_tiles(per["probability"], rule))
        k = int(np.argmax(per["probability"]))
        assert sc.extra["tile"][0] == k and np.allclose(sc.extra["cam"][0], per["cam"][k], atol=1e-6)
        one = score_paths(plain, [str(lab)])
        assert sc.extra["tiles"][1] == 1 and sc.probability[1] == pytest.approx(one.probability[0], abs=1e-6)
    # the evaluation says how many photos were tiled, and measures the map on the deciding tile
    items = [Item("Pro/half.png", str(half), "Pro", "test"), Item("lab.png", str(lab), "Benign", "test")]
    result, rows, extra = evaluate_predictor(tiled, items, n_boot=10)
    assert result["tiling"]["tiled"] == 1 and result["tiling"]["images"] == 2 and extra["tile"][0] == k
    _, hq = measure_heatmaps(tiled, rows, tmp_path, extra["cam"], tile=extra["tile"])
    _, hq_centre = measure_heatmaps(tiled, rows, tmp_path, extra["cam"])
    assert hq[0]["lift"] != pytest.approx(hq_centre[0]["lift"])      # a different input under the map
    assert hq[1]["lift"] == pytest.approx(hq_centre[1]["lift"])      # one tile: the same input


@dataclasses.dataclass
class _Rel:
    spec: object


@pytest.mark.parametrize("which", ["tiny", "densenet201-binary"])
def test_magnification_off_is_unchanged(which, tiny_release, smear_paths):
    from leukedge.edge_app.inference import Screener

    folder = tiny_release if which == "tiny" else ROOT / "models" / which
    s = Screener(folder, num_threads=1)
    assert s.spec.preprocess.capture is None or not s.spec.preprocess.capture.magnification
    for path in (smear_paths["Benign"][2], smear_paths["Pre"][0], smear_paths["Early"][0]):
        res = s.screen_image(path)
        shown, p, heat, (ood, score, details) = _single_input_reference(s, path)
        assert res.image.tobytes() == shown.tobytes()
        assert res.probability == p
        assert res.ood == ood and res.ood_score == round(score, 4) and res.ood_details == details
        if heat is not None:
            assert res.heatmap.tobytes() == heat.tobytes()
        assert res.tiles is None and res.tiling is None
        assert list(res.to_json()) == OLD_JSON_KEYS


def test_the_committed_tile_screen_leaves_lab_photos_as_one_input(smear_paths):
    """efficientnet-lite0-subtype has magnification on (session 20, trained without it): a lab
    photo is not rescaled and its one tile is the old single input (same image and probability);
    the same smear as a 0.5x full-field photo is rescaled and screened as several tiles."""
    from leukedge.edge_app.inference import Screener

    s = Screener(ROOT / "models" / "efficientnet-lite0-subtype", num_threads=1)
    cap = s.spec.preprocess.capture
    assert cap.magnification and cap.scale_tolerance == 0.3 and cap.tile_rule == "noisy_or"
    for path in (smear_paths["Benign"][2], smear_paths["Pre"][0], smear_paths["Early"][0]):
        res = s.screen_image(path)
        shown, p, _, _ = _single_input_reference(s, path)
        assert res.tiles == 1 and res.tiling["scale"] == 1.0 and res.tiling["fallback"] is None
        assert res.image.tobytes() == shown.tobytes() and res.probability == pytest.approx(p, abs=1e-6)
    half = s.screen_image(apply_capture("magnification", load_image(smear_paths["Early"][1]), 0.5))
    assert half.tiling["scale"] > 1.3 and half.tiles > 1


# ----- bench tiles ------------------------------------------------------------------------------
def test_bench_tiles_cli_writes_rules_per_factor_and_chooses_one(tmp_path, aria_dir):
    from leukedge.cli import main

    out = tmp_path / "tiles.json"
    rc = main(["-q", "bench", "tiles", "--model", str(ROOT / "models" / "efficientnet-lite0-subtype"),
               "--data", str(aria_dir), "--limit", "3", "--factors", "0.5,1.0", "--eyepiece-level", "1",
               "--threads", "1", "--json", str(out), "--md", str(tmp_path / "tiles.md")])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "leukedge-tiles v1" and doc["data"]["split"] == "val" and doc["data"]["n_smears"] == 3
    # the release screens as tiles itself (session 20): its own spec's diameter, not a measured one
    assert doc["capture"]["magnification"] and doc["capture"]["magnification_in_release"]
    assert doc["capture"]["cell_diameter_measured_on_training"] is None and 10 < doc["capture"]["cell_diameter"] < 22
    conds = [(r["photo"], r["factor"]) for r in doc["results"]]
    assert conds == [("magnification", 0.5), ("magnification", 1.0), ("magnification+eyepiece", 0.5),
                     ("magnification+eyepiece", 1.0)]
    for r in doc["results"]:
        assert r["n"] == 3 and set(r["rules"]) == set(TILE_RULES)
        for v in r["rules"].values():
            g = v["gated"]
            assert g["tp"] + g["fn"] + g["tn"] + g["fp"] + g["retake"] + g["flagged"] == 3
            assert v["ungated"]["tp"] + v["ungated"]["fn"] + v["ungated"]["tn"] + v["ungated"]["fp"] == 3
        assert sum(r["magnification_off"][k] for k in ("correct", "retake", "flagged", "wrong", "error")) == 3
    assert doc["results"][0]["tiles_mean"] > 1                       # 0.5x photos are tiled
    # the cell-size estimate rescales the 0.5x photos and leaves the lab's own (1.0x) as they are
    assert doc["results"][0]["rescaled"] >= 2 and doc["results"][0]["scale_median"] > 1.3
    assert doc["results"][1]["rescaled"] <= 1 and doc["capture"]["scale_tolerance"] == CaptureConfig.scale_tolerance
    assert doc["chosen"]["rule"] in TILE_RULES
    md = (tmp_path / "tiles.md").read_text()
    assert "Chosen rule" in md and "| magnification+eyepiece | 0.5 |" in md and "photos rescaled" in md


@pytest.mark.parametrize("args, message", [(["--factors", "half"], "--factors"),
                                           (["--factors", "1.5"], "magnification factor must be in"),
                                           (["--eyepiece-level", "7"], "--eyepiece-level"),
                                           (["--field", "mosaic", "--factors", "0.25"], "needs magnification factors")])
def test_bench_tiles_bad_input_is_a_one_line_error(args, message, capsys, aria_dir):
    from leukedge.cli import main

    assert main(["bench", "tiles", "--model", str(ROOT / "models" / "efficientnet-lite0-subtype"),
                 "--data", str(aria_dir), *args]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cell_diameter_comes_from_the_spec_when_recorded_else_from_training_smears(tiny_spec, smear_paths):
    from leukedge.benchmarks.tile_rule import cell_diameter_for
    from leukedge.spec import with_magnification
    from leukedge.errors import DataError

    recorded = dataclasses.replace(tiny_spec, preprocess=tiny_spec.preprocess.replace(
        capture=CaptureConfig(fov_crop=True, cell_diameter=14.2)))            # magnification off, diameter kept
    assert cell_diameter_for(recorded, []) == (14.2, "spec (recorded at training)")
    paths = [p for c in ("Benign", "Pre", "Pro") for p in smear_paths[c][:4]]
    d, source = cell_diameter_for(tiny_spec, paths, fit_n=12)
    assert 8 < d < 22 and "training smears" in source
    with pytest.raises(DataError, match="no training rows"):
        cell_diameter_for(tiny_spec, [])
    on = with_magnification(recorded, 14.2)
    cap = on.preprocess.capture
    assert cap.magnification and cap.fov_crop and cap.cell_diameter == 14.2
    assert recorded.preprocess.capture.magnification is False          # the original spec is untouched


def test_mosaic_field_is_made_of_different_smears_not_mirrors(smear_paths):
    from leukedge.capture_sim import mosaic_field

    imgs = [load_image(p) for p in smear_paths["Pre"][:9]]
    photo = mosaic_field(imgs, 0.5, np.random.default_rng(0))
    assert photo.shape == imgs[0].shape and photo.dtype == np.uint8
    assert np.array_equal(mosaic_field(imgs, 1.0, np.random.default_rng(0)), imgs[0])
    assert np.array_equal(photo, mosaic_field(imgs, 0.5, np.random.default_rng(0)))      # seeded
    # made of the neighbours, not of copies of one smear: nine flat smears of distinct grey levels
    flat = [np.full((90, 90, 3), 10 * (k + 1), np.uint8) for k in range(9)]
    levels = set(np.unique(mosaic_field(flat, 0.5, np.random.default_rng(3))[..., 0]).tolist())
    assert len(levels & {10 * (k + 1) for k in range(9)}) >= 4
    assert set(np.unique(apply_capture("magnification", flat[0], 0.5, seed=0))) == {10}     # the mirror field: one
    # cells are half their size: the estimate sees it
    d0 = float(np.median([estimate_cell_diameter(im) for im in imgs]))
    assert 0.35 < estimate_cell_diameter(photo) / d0 < 0.8
    with pytest.raises(Exception, match="1/3"):
        mosaic_field(imgs, 0.2, np.random.default_rng(0))


def test_bench_tiles_mosaic_field_uses_neighbouring_smears_of_the_group(tmp_path, aria_dir):
    from leukedge.benchmarks.tile_rule import neighbours_of
    from leukedge.cli import main
    from leukedge.split import read_manifest

    split = ROOT / "models" / "efficientnet-lite0-subtype" / "split.csv"
    val = [r for r in read_manifest(split, aria_dir) if r["split"] == "val"]
    row = val[10]
    near = neighbours_of(row, val)
    assert len(near) == 8 and all(r["group"] == row["group"] and r["path"] != row["path"] for r in near)
    out = tmp_path / "tiles.json"
    assert main(["-q", "bench", "tiles", "--model", str(ROOT / "models" / "efficientnet-lite0-subtype"),
                 "--data", str(aria_dir), "--limit", "2", "--factors", "0.5", "--eyepiece-level", "0",
                 "--field", "mosaic", "--threads", "1", "--json", str(out), "--md", str(tmp_path / "t.md")]) == 0
    doc = json.loads(out.read_text())
    assert doc["field"] == "mosaic" and doc["mosaic_short_groups"] == 0
    assert doc["results"][0]["n"] == 2 and doc["results"][0]["tiles_mean"] > 1
    assert "mosaics of each smear" in (tmp_path / "t.md").read_text()

