"""An over-exposed or blurred photo with a strong leukemia score is answered "refer"; such a photo
never clears a patient (issue 19, docs/captures.md 15). Real releases on real smears."""
import dataclasses
import json
from pathlib import Path

import pytest

from leukedge.capture import CaptureConfig
from leukedge.capture_sim import apply_capture
from leukedge.compress.recipe import ScreeningRecipe
from leukedge.edge_app.quality import RULE_IN_STATUSES, QualityConfig
from leukedge.errors import ConfigError
from leukedge.imageio import load_image

RELEASES = ["efficientnet-lite0-binary", "efficientnet-lite0-subtype", "densenet201-binary"]


def test_the_rule_answers_only_strong_scores_on_washed_out_or_soft_photos():
    q = QualityConfig(rule_in=0.9)
    assert set(RULE_IN_STATUSES) == {"over-exposed", "blurry"}
    assert q.rules_in("blurry", 0.95, 0.6) and q.rules_in("over-exposed", 0.9, 0.6)
    assert not q.rules_in("blurry", 0.89, 0.6)                      # below rule_in
    assert not q.rules_in("blurry", 0.95, 0.97)                     # below a stricter operating point
    for status in ("under-exposed", "too small", "off-centre", "ok"):
        assert not q.rules_in(status, 1.0, 0.5)
    assert not q.rules_in("blurry", None, 0.5)
    assert not QualityConfig().rules_in("blurry", 1.0, 0.5)         # no rule_in: every such photo is a retake


def test_the_value_is_checked_where_it_is_set():
    for bad in (1.5, -0.1, True, "high"):
        with pytest.raises(ConfigError, match="rule_in"):
            ScreeningRecipe(rule_in=bad)
        with pytest.raises(ConfigError, match="rule_in"):
            CaptureConfig(rule_in=bad)


@pytest.mark.parametrize("name", RELEASES)
def test_each_release_carries_its_validated_value_in_spec_and_card(name):
    from leukedge.spec import ModelSpec

    spec = ModelSpec.from_dict(json.loads(Path(f"models/{name}/spec.json").read_text()))
    assert spec.preprocess.capture.rule_in == 0.9
    assert QualityConfig.for_spec(spec).rule_in == 0.9
    assert QualityConfig.for_spec(spec).min_sharpness == (spec.preprocess.capture.min_sharpness or 15.0)
    card = json.loads(Path(f"models/{name}/card.json").read_text())
    assert card["model"]["photo_quality"]["rule_in"] == 0.9
    assert "at least 0.9 (refer)" in Path(f"models/{name}/card.md").read_text()


@pytest.mark.parametrize("name", ["efficientnet-lite0-binary", "densenet201-binary"])
def test_a_degraded_photo_is_referred_or_sent_back_never_cleared(name, smear_paths):
    """Every smear the quality gate finds too bright or blurred is either a retake or, with a
    probability >= 0.9, "refer" (quality still saying what was wrong); leukemia smears blurred
    past the limit are referred, benign ones sent back (a benign smear is referred only when the
    model refers its sharp photo too: DenseNet201 does so for one training smear here)."""
    from leukedge.edge_app.inference import Screener

    s = Screener(f"models/{name}", num_threads=1)
    off = Screener(s.release, num_threads=1, quality=dataclasses.replace(s.quality_cfg, rule_in=None))
    referred = benign_back = 0
    for i, (cls, p) in enumerate((c, p) for c in ("Benign", "Early", "Pre", "Pro") for p in smear_paths[c][:4]):
        img = apply_capture("defocus", load_image(p), 3, seed=i)
        res = s.screen_image(img, heatmap=False)
        if res.quality == "ok":
            continue
        assert res.quality in RULE_IN_STATUSES
        assert res.decision in ("positive", "retake"), res.to_json()
        assert res.rule_in == (res.decision == "positive") == res.to_json()["rule_in"]
        assert off.screen_image(img, heatmap=False).decision == "retake"
        if res.rule_in:
            assert res.probability >= 0.9 and res.to_json()["probability"] == res.probability
            if cls == "Benign":  # only where the model refers the sharp photo too (its own error, not the rule's)
                assert s.screen_image(load_image(p), heatmap=False).decision == "positive", p.name
            else:
                referred += 1
        elif cls == "Benign":
            assert res.to_json()["probability"] is None             # a hidden score stays hidden
            benign_back += 1
    assert referred >= 2 and benign_back >= 2, (referred, benign_back)


def test_the_app_says_why_a_blurred_photo_has_a_result(smear_paths):
    from leukedge.edge_app import presenter
    from leukedge.edge_app.i18n import set_language
    from leukedge.edge_app.inference import Screener

    s = Screener("models/efficientnet-lite0-binary", num_threads=1)
    res = next(r for i, p in enumerate(smear_paths["Pro"])
               if (r := s.screen_image(apply_capture("defocus", load_image(p), 5, seed=i), heatmap=False)).rule_in)
    shown = presenter.present(res, s.release)
    assert shown["verdict"] == presenter.REFER and shown["probability"]
    assert shown["detail"].startswith("This photo is blurred, but the signs of leukemia")
    try:
        set_language("fr")
        assert presenter.present(res, s.release)["detail"].startswith("Cette photo est floue")
    finally:
        set_language("en")


def test_compress_writes_the_value_into_the_spec():
    from leukedge.compress.config import CompressConfig
    from leukedge.compress.pipeline import _screening_spec, screening_changes
    from leukedge.spec import ModelSpec

    spec = ModelSpec.from_dict(json.loads(Path("models/efficientnet-lite0-subtype/spec.json").read_text()))
    spec = dataclasses.replace(spec, preprocess=spec.preprocess.replace(
        capture=dataclasses.replace(spec.preprocess.capture, rule_in=None)))
    cfg = CompressConfig(source="s", out="o", rule_in=0.85)
    assert screening_changes(cfg, spec)
    new = _screening_spec(cfg, spec)
    assert new.preprocess.capture.rule_in == 0.85
    assert new.preprocess.capture.min_sharpness == spec.preprocess.capture.min_sharpness   # the rest kept
    assert not screening_changes(cfg, new)
