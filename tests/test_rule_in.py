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
