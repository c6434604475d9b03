"""The grey zone: a photo scoring from the release's ``rule_out`` up to the threshold is "borderline,
take another field", never "no signs" (issue 19, docs/captures.md 17). Real releases on real smears,
a real SQLite record store and real FHIR / PDF documents."""
import json
from pathlib import Path

import pytest

from leukedge.capture import CaptureConfig
from leukedge.compress.recipe import ScreeningRecipe
from leukedge.errors import ConfigError
from leukedge.imageio import load_image

#: the values the releases carry (scripts/experiments/rule_out.py on validation; None: no zone)
RELEASED = {"efficientnet-lite0-subtype": 0.2, "efficientnet-lite0-binary": 0.05, "densenet201-binary": None}


def test_the_value_is_checked_where_it_is_set():
    for bad in (1.0, 0.0, -0.1, True, "low"):
        with pytest.raises(ConfigError, match="rule_out"):
            CaptureConfig(rule_out=bad)
    for bad in (1.5, 0.0, True, "low"):
        with pytest.raises(ConfigError, match="rule_out"):
            ScreeningRecipe(rule_out=bad)
    with pytest.raises(ConfigError, match="below rule_in"):
        CaptureConfig(rule_in=0.5, rule_out=0.6)
    assert CaptureConfig(rule_in=0.9, rule_out=0.2).rule_out == 0.2


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_each_release_carries_its_validated_value_in_spec_recipe_and_card(name):
    from leukedge.spec import ModelSpec

    spec = ModelSpec.from_dict(json.loads(Path(f"models/{name}/spec.json").read_text()))
    assert spec.preprocess.capture.rule_out == RELEASED[name]
    card = json.loads(Path(f"models/{name}/card.json").read_text())
    assert card["model"]["photo_quality"]["rule_out"] == RELEASED[name]
    md = Path(f"models/{name}/card.md").read_text()
    if RELEASED[name] is None:
        assert "Grey zone" not in md
    else:
        assert f"from {RELEASED[name]:g} up to the decision threshold" in md
        recipe = json.loads(Path(f"models/{name}/recipe.json").read_text())
        assert recipe["screening"]["rule_out"] == RELEASED[name]
        assert spec.preprocess.capture.rule_out < spec.threshold


def _screen_at(s, img, rule_out, threshold):
    s.rule_out, s.threshold = rule_out, threshold
    return s.screen_image(img, heatmap=False)


def test_a_score_in_the_zone_is_a_borderline_retake_never_no_signs(smear_paths):
    """The same real photo: below the threshold it is "no signs" without a zone, "borderline" with
    the zone's edge below its score, "no signs" again with the edge above it; the zone never touches
    a positive answer, and a threshold at or below the edge leaves no zone."""
    from leukedge.edge_app.inference import BORDERLINE_GUIDANCE, Screener

    s = Screener("models/efficientnet-lite0-subtype", num_threads=1)
    img = load_image(smear_paths["Pre"][0])
    p = s.screen_image(img, heatmap=False).probability
    assert 0.0 < p < 1.0
    t_above = (p + 1.0) / 2                          # a threshold above the photo's score: it would be cleared
    plain = _screen_at(s, img, None, t_above)
    assert plain.decision == "negative" and not plain.borderline
    grey = _screen_at(s, img, p / 2, t_above)
    assert grey.decision == "retake" and grey.borderline and grey.quality == "ok"
    assert grey.probability == pytest.approx(p)       # the same score, only the answer differs
    assert grey.guidance == BORDERLINE_GUIDANCE
    j = grey.to_json()
    assert j["borderline"] is True and j["decision"] == "retake" and j["probability"] is None
    assert _screen_at(s, img, min(0.99, p * 1.01 + 1e-6), t_above).decision == "negative"  # edge above the score
    assert _screen_at(s, img, p / 2, p / 4).decision == "positive"       # threshold below the edge: no zone
    assert not _screen_at(s, img, p / 2, p / 4).borderline
    assert _screen_at(s, img, p / 2, p).decision == "positive"           # the threshold itself is positive


def test_the_release_default_comes_from_the_spec():
    from leukedge.edge_app.inference import Screener

    for name, value in RELEASED.items():
        if name.startswith("efficientnet"):
            assert Screener(f"models/{name}", num_threads=1).rule_out == value


def test_a_borderline_field_is_recorded_as_no_result_with_its_own_words(tmp_path, smear_paths):
    """Through the real record store, the sample verdict and the FHIR / PDF exports: a borderline
    field is a retake (not usable, so it can neither refer nor clear the sample), says "borderline
    score" rather than "image quality too low", and keeps no score."""
    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.records import field_status, sample_verdict, score_text
    from leukedge.edge_app.records.wording import BORDERLINE_WORDS, FIELD_WORDS

    s = Screener("models/efficientnet-lite0-subtype", num_threads=1)
    img = load_image(smear_paths["Pre"][0])
    p = s.screen_image(img, heatmap=False).probability
    grey = _screen_at(s, img, p / 2, (p + 1.0) / 2)
    assert field_status(grey) == "retake"
    assert sample_verdict(["retake", "negative"], finished=True).code == "cannot_assess"
    assert sample_verdict(["retake", "negative"]).code == "retake"
    assert score_text("retake", grey.probability, quality=grey.quality) == BORDERLINE_WORDS
    assert score_text("retake", None, quality="blurry") == FIELD_WORDS["retake"]
    assert score_text("retake", None) == FIELD_WORDS["retake"]
    from leukedge.edge_app.presenter import field_words

    assert "borderline" in field_words("retake", grey.probability, "ok")


def test_a_borderline_field_through_the_store_fhir_and_pdf(tmp_path, smear_paths):
    """A real SQLite record, a FHIR bundle validated by fhir.resources, a parsed PDF: the field is a
    retake with quality ok, no score is stored or exported, and it is called borderline."""
    from test_exports import _flat, parse_pdf

    from leukedge.edge_app.exports.fhir import export_sample_fhir, parse_bundle
    from leukedge.edge_app.exports.pdf_report import export_sample_pdf
    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.records import RecordStore

    s = Screener("models/efficientnet-lite0-subtype", num_threads=1)
    path = smear_paths["Pre"][0]
    p = s.screen_image(path, heatmap=False).probability
    s.rule_out, s.threshold = p / 2, (p + 1.0) / 2
    grey = s.screen_image(path)
    assert grey.borderline and grey.decision == "retake"
    store = RecordStore(tmp_path / "db" / "h.sqlite3")
    try:
        smp = store.start_sample("B-7")
        store.add_field(smp.uid, grey, source=path, release=s.release)
        store.finish_sample(smp.uid)
        rec = store.sample(smp.uid)
        f = rec.fields[0]
        assert (f.status, f.quality, f.probability) == ("retake", "ok", None)
        assert rec.verdict.code == "cannot_assess"                  # one field that cannot clear nor refer
        bundle = parse_bundle(export_sample_fhir(rec, tmp_path / "fhir", s.release.card).read_bytes())
        obs = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "Observation"][0]
        assert obs.valueCodeableConcept.coding[0].code == "retake"
        assert "borderline" in obs.valueCodeableConcept.text
        assert obs.component[0].valueQuantity is None and "borderline" in obs.component[0].dataAbsentReason.text
        text = _flat(parse_pdf(export_sample_pdf(rec, tmp_path / "pdf", s.release.card).read_bytes())["text"])
        assert "borderline score" in text and f"{p:.2f}" not in text
    finally:
        store.close()


def test_the_result_screen_and_the_table_say_borderline_not_bad_quality(smear_paths):
    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.presenter import BORDERLINE_TEXT, RETAKE_V, VERDICT_TEXT, present
    from leukedge.edge_app.stream import TableWriter

    s = Screener("models/efficientnet-lite0-subtype", num_threads=1)
    img = load_image(smear_paths["Pre"][0])
    p = s.screen_image(img, heatmap=False).probability
    grey = _screen_at(s, img, p / 2, (p + 1.0) / 2)
    out = present(grey, s.release)
    assert out["verdict"] == RETAKE_V and out["headline"] == BORDERLINE_TEXT[0]
    assert out["next_step"] == BORDERLINE_TEXT[1] and "quality" not in out["next_step"]
    assert "borderline" in out["detail"] and out["probability"] == ""     # the score stays hidden
    dark = s.screen_image(__import__("numpy").full((224, 224, 3), 3, "uint8"), heatmap=False)
    assert not dark.borderline and present(dark, s.release)["next_step"] == VERDICT_TEXT[RETAKE_V][2]
    row = TableWriter.row(grey)
    assert "retake (borderline)" in row and f"{p:.3f}" not in row
