"""A release's own photo-quality limit (issue 19): the sharpness below which the app asks to
"focus", chosen on validation for the model and written into its spec by `compress`."""
import pytest

from leukedge.capture import CaptureConfig
from leukedge.capture_sim import apply_capture
from leukedge.compress.recipe import ScreeningRecipe
from leukedge.edge_app.quality import QualityConfig, check_quality, measure
from leukedge.errors import ConfigError
from leukedge.imageio import load_image


def test_the_limit_is_checked_where_it_is_set():
    with pytest.raises(ConfigError, match="min_sharpness"):
        ScreeningRecipe(min_sharpness=-1.0)
    with pytest.raises(ConfigError, match="min_sharpness"):
        CaptureConfig(min_sharpness="soft")
    assert QualityConfig.for_spec(None).min_sharpness == QualityConfig().min_sharpness == 15.0


@pytest.mark.parametrize("name", ["efficientnet-lite0-subtype", "efficientnet-lite0-binary"])
def test_a_release_answers_photos_as_sharp_as_its_validated_limit(name, smear_paths):
    """Between the release's limit (10) and the app's default (15) a motion-blurred smear is
    answered by the release's Screener where the default would ask for a retake."""
    from leukedge.edge_app.inference import Screener

    s = Screener(f"models/{name}", num_threads=1)
    assert s.quality_cfg.min_sharpness == s.spec.preprocess.capture.min_sharpness == 10.0
    between = 0
    for i, p in enumerate(p for c in ("Benign", "Early", "Pre", "Pro") for p in smear_paths[c]):
        img = apply_capture("motion", load_image(p), 7, seed=i)
        if 10.0 <= measure(img)["sharpness"] < 15.0:
            assert check_quality(img, QualityConfig()).status == "blurry"
            res = s.screen_image(img, heatmap=False)
            assert res.quality == "ok" and res.probability is not None
            between += 1
    assert between >= 2, "no motion-blurred smear between the two limits: pick more smears"


def test_densenet201_keeps_the_default_limit():
    """Its gate does not flag strong blur (docs/captures.md 14): a lower limit would miss leukemia."""
    from leukedge.edge_app.inference import Screener

    s = Screener("models/densenet201-binary", num_threads=1)
    assert s.quality_cfg.min_sharpness == 15.0


@pytest.mark.parametrize("name,limit", [("efficientnet-lite0-subtype", 10.0), ("densenet201-binary", None)])
def test_the_card_says_where_refocus_retakes_start(name, limit):
    import json
    from pathlib import Path

    card = json.loads(Path(f"models/{name}/card.json").read_text())
    assert card["model"]["photo_quality"]["min_sharpness"] == limit
    line = next(x for x in Path(f"models/{name}/card.md").read_text().splitlines() if x.startswith("Photo quality"))
    assert ("below sharpness 10 " in line) if limit else ("15, the app's default" in line)
