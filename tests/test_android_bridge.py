"""The Android LiteRT bridge's Python side, against a Java stand-in of the Interpreter API.

No APK can be built here (buildozer downloads the SDK/NDK), so this checks what can be
checked on the desktop: the pyjnius calls the bridge makes exist with these signatures on a
compiled Java class, and inputs/outputs cross the bridge correctly (float32 and int8,
quantization, byte order, shapes, output names) -- compared with the same computation in
numpy. The stand-in (tests/java_standin) is compiled with the JDK's javac at test time.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

STANDIN = Path("tests/java_standin")

@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    if shutil.which("javac") is None:
        pytest.skip("needs a JDK (javac)")
    pytest.importorskip("jnius", reason="pyjnius is in the test extra")
    out = tmp_path_factory.mktemp("classes")
    srcs = sorted(str(p) for p in STANDIN.rglob("*.java"))
    r = subprocess.run(["javac", "-d", str(out), *srcs], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


CHILD = textwrap.dedent("""
    import json, sys
    import jnius_config
    jnius_config.add_classpath(sys.argv[1])
    jnius_config.add_options(f"-Dstandin.dtype={sys.argv[2]}", "-Dstandin.size=8")
    import numpy as np
    from leukedge.edge_app.android import JavaLiteRunner
    from leukedge.edge_app.inference import make_runner
    runner = make_runner(sys.argv[3], num_threads=2)          # LEUKEDGE_RUNTIME=android selects the bridge
    x = np.random.default_rng(int(sys.argv[4])).uniform(-1, 1, (8, 8, 3)).astype(np.float32)
    out = runner.run(x)
    print(json.dumps({"type": type(runner).__name__, "shape": runner.input_shape,
                      "dtype": np.dtype(runner.input_dtype).name, "threads": runner.interpreter.threads,
                      "runs": runner.interpreter.runs, "x": x.tolist(),
                      "out": {k: np.asarray(v).tolist() for k, v in out.items()},
                      "quant": {k: list(d["quantization"]) for k, d in runner.outputs.items()}}))
""")


def run_bridge(classes, dtype, model_file, seed=0):
    import os

    env = {**os.environ, "LEUKEDGE_RUNTIME": "android"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(classes), dtype, str(model_file), str(seed)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def expected(x):
    return {"probability": np.array([1 / (1 + np.exp(-x.mean()))]), "features": x.reshape(-1, 3).mean(0),
            "cam": np.maximum(x[..., 0] - x[..., 2], 0)}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """Any file with the TFL3 identifier passes the bridge's file checks (the stand-in ignores its content)."""
    f = tmp_path_factory.mktemp("m") / "standin.tflite"
    f.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(120))
    return f


def test_float32_marshalling_through_pyjnius(classes, model_file):
    res = run_bridge(classes, "FLOAT32", model_file, seed=1)
    assert res["type"] == "JavaLiteRunner" and res["shape"] == [1, 8, 8, 3] and res["dtype"] == "float32"
    assert res["threads"] == 2 and res["runs"] == 1
    x = np.array(res["x"], np.float32)
    want = expected(x)
    assert set(res["out"]) == {"probability", "features", "cam"}
    for k, v in want.items():
        got = np.array(res["out"][k])
        assert got.shape == v.shape, k
        np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_int8_quantize_and_dequantize_through_pyjnius(classes, model_file):
    res = run_bridge(classes, "INT8", model_file, seed=2)
    assert res["dtype"] == "int8"
    assert res["quant"]["probability"] == [pytest.approx(1 / 256), -128]
    x = np.array(res["x"], np.float32)
    xq = np.clip(np.round(x * 128), -128, 127) / 128          # what the int8 input can represent
    want = expected(xq)
    steps = {"probability": 1 / 256, "features": 1 / 128, "cam": 1 / 64}
    for k, v in want.items():
        got = np.array(res["out"][k])
        assert got.shape == v.shape, k
        assert np.abs(got - v).max() <= steps[k] * 0.51 + 1e-6, k   # within half a quantization step
    assert np.array(res["out"]["cam"]).std() > 0.05              # a real map, not zeros


def test_bridge_refuses_a_non_tflite_file(classes, tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a model" * 10)
    code = ("import sys, jnius_config; jnius_config.add_classpath(sys.argv[1]);"
            "from leukedge.edge_app.android import JavaLiteRunner; from leukedge.errors import ModelError\n"
            "try:\n    JavaLiteRunner(sys.argv[2])\nexcept ModelError as e:\n    print('refused:', e)")
    r = subprocess.run([sys.executable, "-c", code, str(classes), str(bad)], capture_output=True, text=True, timeout=60)
    assert "refused:" in r.stdout and "TFL3" in r.stdout, r.stderr[-2000:]


def test_buildozer_spec_declares_litert_java_and_the_app():
    import configparser

    spec = configparser.ConfigParser(strict=False)
    spec.read("buildozer.spec")
    app = spec["app"]
    reqs = [r.strip().split("==")[0] for r in app["requirements"].split(",")]
    assert {"python3", "kivy", "numpy", "opencv", "pyjnius", "pillow"} <= set(reqs)
    assert "tensorflow" not in app["requirements"] and "tflite-runtime" not in app["requirements"]
    assert "com.google.ai.edge.litert:litert:" in app["android.gradle_dependencies"]
    assert "kv" in app["source.include_exts"] and "tflite" in app["source.include_exts"]
    assert Path(app.get("source.dir", ".")).joinpath("main.py").is_file()
