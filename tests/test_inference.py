"""The app's inference module on a tiny real release and real smears (no window)."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from conftest import pick
from fixtures_app import RELEASE_NAME, tiny_release  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def screener(tiny_release):
    from leukedge.edge_app.inference import Screener

    return Screener(tiny_release, num_threads=1)


def test_screen_real_smear_gives_probability_heatmap_and_model_identity(screener, smear_paths, tiny_release):
    from leukedge.fileio import sha256_file

    res = screener.screen_image(smear_paths["Pre"][0])
    assert res.error is None
    assert 0.0 <= res.probability <= 1.0
    assert res.quality == "ok"
    assert res.decision in ("positive", "negative", "out-of-distribution")
    assert res.image.shape == (32, 32, 3) and res.image.dtype == np.uint8
    assert res.heatmap.shape == (32, 32)
    assert res.heatmap.min() >= 0.0 and 0.9 < res.heatmap.max() <= 1.0 and res.heatmap.std() > 0.01
    overlay = res.overlay(0.5)
    assert overlay.shape == res.image.shape and np.abs(overlay.astype(int) - res.image).mean() > 5
    assert res.model_name == RELEASE_NAME
    assert res.model_sha256 == sha256_file(tiny_release / f"{RELEASE_NAME}.int8.tflite")
    assert res.image_sha256 == sha256_file(smear_paths["Pre"][0])
    assert {"decode", "quality", "preprocess", "inference", "heatmap", "ood", "total"} <= set(res.timings)
    js = res.to_json()
    assert list(js)[:7] == ["path", "probability", "decision", "ood", "quality", "probabilities", "error"]


def test_probability_equals_litert_on_the_one_preprocessing(screener, smear_paths, tiny_release):
    from leukedge.preprocess import preprocess_file
    from leukedge.runtime import LiteRunner

    runner = LiteRunner(tiny_release / f"{RELEASE_NAME}.int8.tflite", num_threads=1)
    for path in smear_paths["Benign"][:3] + smear_paths["Pro"][:3]:
        direct = float(runner.run(preprocess_file(path, screener.spec.preprocess))["probability"][0])
        assert screener.screen_image(path).probability == pytest.approx(direct, abs=1e-6)


def test_camera_frame_array_is_screened_like_the_file(screener, smear_paths):
    from leukedge.imageio import load_image

    path = smear_paths["Early"][1]
    a, b = screener.screen_image(path), screener.screen_image(load_image(path))
    assert b.path is None and b.probability == pytest.approx(a.probability)


def test_tampered_model_or_ood_file_is_refused(tiny_release, tmp_path):
    from leukedge.edge_app.inference import Screener, load_release
    from leukedge.errors import ModelError

    for victim in (f"{RELEASE_NAME}.int8.tflite", "ood.npz", "spec.json"):
        copy = tmp_path / victim.replace(".", "_") / RELEASE_NAME
        shutil.copytree(tiny_release, copy)
        data = bytearray((copy / victim).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / victim).write_bytes(bytes(data))
        with pytest.raises(ModelError, match="does not match the model card"):
            Screener(copy)
    with pytest.raises(ModelError, match="no such model folder"):
        load_release(tmp_path / "nope")
    # a model file of a release opens that release with its variant; a lone file is refused
    rel = load_release(tiny_release / f"{RELEASE_NAME}.int8.tflite")
    assert rel.model_path == tiny_release / f"{RELEASE_NAME}.int8.tflite" and rel.folder == tiny_release
    with pytest.raises(ModelError, match="variant pruned-int8 was asked"):
        load_release(tiny_release / f"{RELEASE_NAME}.int8.tflite", "pruned-int8")
    lone = tmp_path / "lone.tflite"
    shutil.copy(tiny_release / f"{RELEASE_NAME}.int8.tflite", lone)
    with pytest.raises(ModelError, match="a single model file, not a release folder"):
        load_release(lone)


def test_unreadable_images_give_an_error_not_an_exception(screener, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    for p in (bad, tmp_path / "missing.png"):
        res = screener.screen_image(p)
        assert res.error and res.probability is None and res.decision is None
    assert screener.screen_image(np.zeros((4, 4), np.uint8)).error


def test_quality_gate_asks_for_a_retake(screener, smear_paths):
    from leukedge.imageio import load_image

    rgb = load_image(smear_paths["Pre"][2])
    cases = {
        "blurry": cv2.GaussianBlur(rgb, (0, 0), 3),
        "over-exposed": np.clip(rgb.astype(int) + 120, 0, 255).astype(np.uint8),
        "under-exposed": (rgb * 0.15).astype(np.uint8),
        "too small": rgb[:60, :60].copy(),
    }
    for want, img in cases.items():
        res = screener.screen_image(img)
        assert res.quality == want, (want, res.quality_details)
        assert res.decision == "retake" and res.guidance
    assert screener.screen_image(rgb).quality == "ok"


def test_ood_gate_flags_lymphocyte_crops_not_real_smears(screener, aria_dir, lymph_dir):
    lymph = sorted(lymph_dir.glob("*/*.jpg"))[5::101][:10]
    smears = [p for c in ("Benign", "Early", "Pre", "Pro") for p in pick(aria_dir, c, 3, step=71)]
    flagged_lymph = np.mean([screener.screen_image(p).ood for p in lymph])
    flagged_smear = np.mean([screener.screen_image(p).ood for p in smears])
    assert flagged_lymph >= 0.9, flagged_lymph
    assert flagged_smear <= 0.25, flagged_smear
    res = screener.screen_image(lymph[0])
    assert res.decision == "out-of-distribution" and res.ood_score > 1.0


def test_only_validated_operating_points(screener, smear_paths):
    from leukedge.errors import ModelError

    names = [o.name for o in screener.operating_points()]
    assert names == ["default", "high-sensitivity"]
    assert screener.set_operating_point("high-sensitivity") == pytest.approx(0.3)
    assert screener.screen_image(smear_paths["Pre"][0]).threshold == pytest.approx(0.3)
    with pytest.raises(ModelError, match="operating point"):
        screener.set_operating_point("0.42")
    screener.set_operating_point("default")


def test_video_file_frame_source_feeds_the_screener(screener, smear_paths, tmp_path):
    from leukedge.edge_app.frames import VideoFileSource
    from leukedge.imageio import load_image

    video = tmp_path / "smears.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (224, 224))
    for p in smear_paths["Early"][:3]:
        writer.write(cv2.cvtColor(load_image(p), cv2.COLOR_RGB2BGR))
    writer.release()
    src = VideoFileSource(video, loop=False)
    frames = [src.read() for _ in range(3)]
    assert src.read() is None
    src.close()
    assert all(f.shape == (224, 224, 3) and f.dtype == np.uint8 for f in frames)
    # MJPG re-encoding changes pixels a little, the decision input barely.
    want = screener.screen_image(smear_paths["Early"][0]).probability
    assert screener.screen_image(frames[0]).probability == pytest.approx(want, abs=0.1)


def test_presenter_wording_for_each_decision(screener):
    from leukedge.edge_app import presenter
    from leukedge.edge_app.inference import Screening

    rel = screener.release
    base = dict(path="x.jpg", model_name=rel.name, model_version=rel.version, model_sha256=rel.model_sha256,
                threshold=0.5, quality="ok")
    subtypes = {"Benign": 0.09, "Early": 0.5, "Pre": 0.3, "Pro": 0.11}
    pos = presenter.present(Screening(probability=0.91, decision="positive", probabilities=subtypes, **base), rel)
    assert pos["headline"] == presenter.POSITIVE and "0.91" in pos["probability"] and pos["show_heatmap"]
    assert "Pre 0.30" in pos["subtypes"] and "out of 100 samples with leukemia" in pos["detail"]
    assert pos["verdict"] == "refer" and "haematologist" in pos["next_step"]
    neg = presenter.present(Screening(probability=0.2, decision="negative", **base), rel)
    assert neg["headline"] == presenter.NEGATIVE and neg["subtypes"] == ""
    assert "does not rule leukemia out" in neg["next_step"]
    ood = presenter.present(Screening(probability=0.99, decision="out-of-distribution", ood=True, **base), rel)
    assert ood["headline"] == presenter.OOD and ood["probability"] == "" and not ood["show_heatmap"]
    blur = presenter.present(Screening(probability=0.7, decision="retake", **{**base, "quality": "blurry"}), rel)
    assert blur["headline"] == presenter.RETAKE and "Focus" in blur["detail"] and blur["probability"] == ""
    assert blur["verdict"] == "retake" and ood["verdict"] == "cannot_assess" and "refer the sample" in ood["next_step"]
    lines = presenter.card_lines(rel)
    assert any(line.startswith("recall:") for line in lines) and any("high-sensitivity" in line for line in lines)


def test_photos_of_other_things_are_flagged(screener):
    data = pytest.importorskip("skimage.data")
    for name in ("astronaut", "coffee", "immunohistochemistry"):
        res = screener.screen_image(np.ascontiguousarray(getattr(data, name)()[..., :3]))
        assert res.ood and res.decision == "out-of-distribution", (name, res.ood_details)
