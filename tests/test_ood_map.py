"""The OOD gate's feature-map output (issue 19): added to a real release file by a graph rewrite
that changes nothing else, read by the gate as per-channel mean and spread, and the released
gates built on it flag the lymphocyte crops while letting warm-light smears through."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_app import tiny_release  # noqa: F401  (fixture)

from leukedge.capture_sim import FAMILIES
from leukedge.compress.ood_map import OOD_OUTPUT, add_ood_output, find_tap
from leukedge.errors import ModelError
from leukedge.imageio import load_image
from leukedge.preprocess import preprocess
from leukedge.runtime import LiteRunner
from leukedge.tflite_graph import read_model, signature_outputs, write_model

SUBTYPE = Path("models/efficientnet-lite0-subtype")
LITE0 = [Path("models/efficientnet-lite0-subtype"), Path("models/efficientnet-lite0-binary")]


def _strip_output(data: bytes, name: str) -> bytes:
    """The file without signature output ``name`` (what a release made before the rewrite had)."""
    model = read_model(data)
    idx = signature_outputs(model)[name]
    sig = model.signatureDefs[0]
    sig.outputs = [t for t in sig.outputs if int(t.tensorIndex) != idx]
    g = model.subgraphs[0]
    g.outputs = [int(t) for t in g.outputs if int(t) != idx]
    return write_model(model)


@pytest.mark.parametrize("variant", ["int8", "float32"])
def test_the_rewrite_adds_the_map_and_changes_no_other_output(tmp_path, variant, smear_paths):
    released = (SUBTYPE / f"{SUBTYPE.name}.{variant}.tflite").read_bytes()
    assert OOD_OUTPUT in signature_outputs(read_model(released)), "the release was made with screening.ood_map"
    before = tmp_path / "before.tflite"
    before.write_bytes(_strip_output(released, OOD_OUTPUT))
    data, info = add_ood_output(before.read_bytes())
    assert info["added"] and info["shape"] == [1, 7, 7, 192] and info["tensor"].endswith("lite_b14_add/add")
    after = tmp_path / "after.tflite"
    after.write_bytes(data)
    again, info2 = add_ood_output(data)  # idempotent: the same bytes back
    assert again == data and not info2["added"]

    a, b, r = LiteRunner(before, 1), LiteRunner(after, 1), LiteRunner(SUBTYPE / f"{SUBTYPE.name}.{variant}.tflite", 1)
    assert OOD_OUTPUT not in a.outputs and OOD_OUTPUT in b.outputs
    x = preprocess(load_image(smear_paths["Pro"][0]), r_spec().preprocess)
    oa, ob, orel = a.run(x), b.run(x), r.run(x)
    for name in oa:  # probability, logit, cam, features: bit for bit
        assert np.array_equal(oa[name], ob[name]), name
    assert ob[OOD_OUTPUT].shape == (7, 7, 192) and np.array_equal(ob[OOD_OUTPUT], orel[OOD_OUTPUT])
    assert float(np.abs(ob[OOD_OUTPUT]).sum()) > 0


def r_spec():
    from leukedge.spec import ModelSpec

    return ModelSpec.load(SUBTYPE)


def test_the_rewrite_refuses_a_file_without_features(tmp_path):
    data = _strip_output((SUBTYPE / f"{SUBTYPE.name}.int8.tflite").read_bytes(), "features")
    with pytest.raises(ModelError, match="no 'features' output"):
        find_tap(read_model(data))


def test_gate_vector_pools_the_map_and_a_mismatched_gate_is_refused(tmp_path):
    from leukedge.edge_app.ood import OODGate, gate_vector

    m = np.random.default_rng(0).normal(size=(7, 7, 5))
    v = gate_vector({"ood_map": m, "features": np.ones(3)}, "ood_map")
    assert v.shape == (10,) and np.allclose(v[:5], m.reshape(-1, 5).mean(0)) and np.allclose(v[5:], m.reshape(-1, 5).std(0))
    assert gate_vector({"features": np.ones(3)}, "ood_map") is None
    gate = OODGate.load(SUBTYPE / "ood.npz")
    assert gate.feature_input == "ood_map" and len(gate.mean) == 384
    gate.save(tmp_path / "ood.npz")
    assert OODGate.load(tmp_path / "ood.npz").feature_input == "ood_map"
    with pytest.raises(ModelError, match="reads 384 values"):
        gate.check(np.zeros(1280), None)  # the pooled features fed to a gate fitted on the map


def test_screener_refuses_a_model_file_without_the_output_its_gate_reads(tmp_path):
    from leukedge.edge_app.inference import Screener, load_release

    rel = load_release(SUBTYPE)
    stripped = tmp_path / "m.tflite"
    stripped.write_bytes(_strip_output(rel.model_path.read_bytes(), OOD_OUTPUT))
    rel.model_path = stripped
    with pytest.raises(ModelError, match="no 'ood_map' output"):
        Screener(rel)


@pytest.mark.parametrize("release", LITE0, ids=lambda p: p.name)
def test_released_gate_flags_lymphocyte_crops_and_passes_warm_light(release, lymph_dir, aria_dir):
    """The released gate on real images: lymphocyte crops from another lab are flagged, the
    release's own test smears under warm light (white balance +0.3, the family the colour
    statistics used to flag) are not (the session-21 gate flagged 5 of these 42)."""
    import csv

    from leukedge.edge_app.inference import Screener

    scr = Screener(release, num_threads=1)
    crops = sorted(lymph_dir.rglob("*.jpg"))[::125][:8]
    flagged = [scr.screen_image(load_image(p)).ood for p in crops]
    assert all(flagged), f"{flagged.count(False)} of {len(crops)} lymphocyte crops not flagged"
    with open(release / "split.csv") as fh:
        test = [r["path"] for r in csv.DictReader(fh) if r["split"] == "test"][::10]
    warm = FAMILIES["white_balance"]
    results = [scr.screen_image(warm.apply(load_image(aria_dir / p), 0.3, np.random.default_rng(i)))
               for i, p in enumerate(test)]
    assert sum(r.ood for r in results) == 0, [r.ood_details for r in results if r.ood]


def test_a_release_being_written_gets_the_output_when_its_graph_has_one(tmp_path, tiny_release):
    """compress writes every model file through Release.write_bytes: with ood_map null (the default)
    the output is added when the graph has a residual block and the file is left as it is when not
    (the reason recorded); with ood_map true a graph without one is refused."""
    from leukedge.compress.release import Release

    lite0 = _strip_output((SUBTYPE / f"{SUBTYPE.name}.int8.tflite").read_bytes(), OOD_OUTPUT)
    tiny = next(tiny_release.glob("*.int8.tflite")).read_bytes()
    rel = Release(tmp_path / "auto", ood_map=None)
    rel.write_bytes("auto.int8.tflite", lite0)
    rel.write_bytes("auto.float32.tflite", tiny)
    assert OOD_OUTPUT in LiteRunner(rel.path("auto.int8.tflite"), 1).outputs
    assert rel.path("auto.float32.tflite").read_bytes() == tiny
    assert rel.ood_map_outputs["auto.int8.tflite"]["shape"] == [1, 7, 7, 192]
    assert "no 4-D ADD or CONCATENATION" in rel.ood_map_outputs["auto.float32.tflite"]["skipped"]
    rel.abort()
    strict = Release(tmp_path / "strict", ood_map=True)
    with pytest.raises(ModelError, match="no 4-D ADD"):
        strict.write_bytes("strict.int8.tflite", tiny)
    strict.abort()
    off = Release(tmp_path / "off", ood_map=False)
    off.write_bytes("off.int8.tflite", lite0)
    assert off.path("off.int8.tflite").read_bytes() == lite0 and not off.ood_map_outputs
    off.abort()
