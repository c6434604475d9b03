"""The cross-machine output check behind benchmarks/qemu_aarch64.sh, without qemu.

The x86 side is compared with itself, then with copies perturbed the way another CPU (or a
broken one) would change them: a 5e-4 heatmap difference (measured on emulated Arm cores)
passes, a wrong probability or int8 features off by 3 steps fail.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["fixtures_models"]

RELEASE = Path("models/efficientnet-lite0-binary")


def _images(smear_paths, n=3):
    return [str(p) for c in ("Benign", "Pro") for p in smear_paths[c][:n]]


@pytest.fixture(scope="module")
def shipped_run(smear_paths, tmp_path_factory):
    from leukedge.benchmarks.crossarch import prepare, run_outputs

    model = RELEASE / f"{RELEASE.name}.int8.tflite"
    inputs = tmp_path_factory.mktemp("inputs")
    prepare(model, inputs, _images(smear_paths))
    return run_outputs(model, [np.load(f) for f in sorted(inputs.glob("*.npy"))])


def test_output_kinds_of_a_shipped_release(shipped_run):
    kinds = json.loads(str(shipped_run["_kinds"]))
    assert kinds["probability"] == {"kind": "derived", "source": "logit", "lipschitz": 0.5}
    assert kinds["probability_raw"]["kind"] == "quantized" and kinds["probability_raw"]["tensor"] == "probability"
    assert kinds["logit"]["kind"] == "quantized" and kinds["features"]["kind"] == "quantized"
    assert kinds["cam"]["kind"] == "heatmap"


def _perturbed(run, name, delta):
    out = dict(run)
    for k in run:
        if k.endswith(f"/{name}"):
            out[k] = run[k] + np.asarray(delta, np.float32)
    return out


def test_identical_runs_pass_and_heatmap_noise_of_5e4_passes(shipped_run):
    from leukedge.benchmarks.crossarch import compare

    same = compare(shipped_run, dict(shipped_run))
    assert same["pass"] and same["images"] == 6
    assert all(r["max_abs_diff"] == 0.0 for r in same["outputs"].values())
    rng = np.random.default_rng(0)
    noisy = dict(shipped_run)
    for k in shipped_run:
        if k.endswith("/cam"):
            noisy[k] = shipped_run[k] + rng.choice([-5e-4, 5e-4], shipped_run[k].shape).astype(np.float32)
    res = compare(shipped_run, noisy)
    assert res["pass"], res["outputs"]["cam"]
    assert res["outputs"]["cam"]["max_abs_diff"] == pytest.approx(5e-4, rel=1e-2)
    assert 0.99 <= res["outputs"]["cam"]["min_r"] < 1.0


def test_wrong_probability_wrong_heatmap_or_int8_steps_fail(shipped_run):
    from leukedge.benchmarks.crossarch import compare

    res = compare(shipped_run, _perturbed(shipped_run, "probability", 0.01))
    assert not res["pass"] and not res["outputs"]["probability"]["pass"]
    assert res["outputs"]["logit"]["pass"]  # only the derived output is wrong, and it is caught
    step = json.loads(str(shipped_run["_kinds"]))["features"]["step"]
    res = compare(shipped_run, _perturbed(shipped_run, "features", 3 * step))
    assert not res["pass"] and res["outputs"]["features"]["max_diff_steps"] == pytest.approx(3.0, abs=0.01)
    flipped = dict(shipped_run)
    for k in shipped_run:
        if k.endswith("/cam"):
            flipped[k] = shipped_run[k][::-1].copy()  # same values, wrong places: correlation catches it
    assert not compare(shipped_run, flipped)["outputs"]["cam"]["pass"]


def test_tiny_release_through_the_command_line(tiny_release, smear_paths, tmp_path):
    """The commands the shell script runs, on the tiny model's float32 and int8 files."""
    out, _ = tiny_release
    for model in sorted(out.glob("*.tflite")):
        inputs = tmp_path / model.stem / "inputs"
        cmd = [sys.executable, "-m", "leukedge.benchmarks.crossarch"]
        subprocess.run(cmd + ["prepare", str(model), str(inputs)] + _images(smear_paths, 2), check=True,
                       capture_output=True)
        for side in ("x86_64", "other"):
            subprocess.run(cmd + ["run", str(model), str(inputs), str(tmp_path / model.stem / f"{side}.npz")],
                           check=True, capture_output=True)
        other = dict(np.load(tmp_path / model.stem / "other.npz"))
        for k in other:
            if k.endswith("/cam"):
                other[k] = other[k] + np.float32(4e-4)
        np.savez(tmp_path / model.stem / "other.npz", **other)
        res = subprocess.run(cmd + ["compare", str(tmp_path / model.stem / "x86_64.npz"),
                                    str(tmp_path / model.stem / "other.npz"), "--json", str(tmp_path / "r.json")],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads((tmp_path / "r.json").read_text())["outputs"]["cam"]["max_abs_diff"] > 3e-4
        other = {k: (v + np.float32(0.05) if k.endswith("/probability") else v) for k, v in other.items()}
        np.savez(tmp_path / model.stem / "other.npz", **other)
        res = subprocess.run(cmd + ["compare", str(tmp_path / model.stem / "x86_64.npz"),
                                    str(tmp_path / model.stem / "other.npz")], capture_output=True, text=True)
        assert res.returncode == 1, (model.name, res.stdout)


def test_different_inputs_are_a_one_line_error(shipped_run, tmp_path):
    from leukedge.benchmarks.crossarch import main

    np.savez(tmp_path / "a.npz", **shipped_run)
    np.savez(tmp_path / "b.npz", **{k: v for k, v in shipped_run.items() if not k.startswith("img000/")})
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 2


def test_the_qemu_script_parses_and_uses_this_module():
    script = Path("benchmarks/qemu_aarch64.sh")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "_step/" not in text and "RUNNER_PY" not in text  # the old inline comparison is gone
    for sub in ("prepare", "run", "compare"):
        assert f"leukedge.benchmarks.crossarch {sub} " in text
    assert "models/densenet201-binary/densenet201-binary.int8.tflite" in text
