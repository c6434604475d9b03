"""`leukedge bench` on a tiny real model: schema, plausible values, error rows, compare/merge.

Timings are never asserted (only their internal consistency: p50 <= p90 <= p99 ...).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from leukedge.cli import main


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory, tiny_keras, tiny_spec, smear_paths):
    """A release-like folder: tiny.float32.tflite + tiny.int8.tflite (compress/export: probability, cam,
    features) and spec.json, exported from the conftest's tiny real model."""
    from leukedge.compress.export import convert
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.preprocess import preprocess_file

    d = tmp_path_factory.mktemp("models") / "tiny"
    d.mkdir()
    spec = copy.deepcopy(tiny_spec)
    spec.name, spec.outputs = "tiny", ["probability", "cam", "features"]
    x = np.stack([preprocess_file(p, spec.preprocess) for ps in smear_paths.values() for p in ps[:4]])
    (d / "tiny.float32.tflite").write_bytes(convert(tiny_keras, spec, QuantizationConfig.for_float32()))
    (d / "tiny.int8.tflite").write_bytes(convert(tiny_keras, spec, QuantizationConfig.for_int8(RepresentativeData(x))))
    spec.save(d / "spec.json")
    (d / "evaluation.json").write_text(json.dumps({"metrics": {"accuracy": {"value": 0.8125, "ci95": [0.6, 0.9]}}}))
    from leukedge.fileio import sha256_file

    # a card that names the int8 file with its real hash and the float32 file with a wrong one
    (d / "card.json").write_text(json.dumps({"files": {"tiny.int8.tflite": sha256_file(d / "tiny.int8.tflite"),
                                                       "tiny.float32.tflite": "0" * 64}}))
    return d


@pytest.fixture(scope="module")
def few_smears(tmp_path_factory, smear_paths):
    d = tmp_path_factory.mktemp("smears")
    for c in ("Benign", "Pro"):
        for p in smear_paths[c][:2]:
            (d / f"{c}-{p.name}").symlink_to(p)
    return d


@pytest.fixture(scope="module")
def corrupt_tflite(tmp_path_factory, tiny_release):
    """A file with the TFLite identifier and a damaged body (as after a bad download)."""
    data = bytearray((tiny_release / "tiny.int8.tflite").read_bytes())
    rng = np.random.default_rng(0)
    idx = np.arange(64, len(data), 7)
    for i, v in zip(idx, rng.integers(0, 256, len(idx))):
        data[i] = int(v)
    p = tmp_path_factory.mktemp("bad") / "broken.int8.tflite"
    p.write_bytes(bytes(data))
    return p


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiny_release, corrupt_tflite, few_smears):
    """One quick CLI run over the release, a bare copy of its float32 file and the corrupt file,
    with an uninstalled runtime requested."""
    out = tmp_path_factory.mktemp("bench")
    plain = out / "plain" / "tiny.float32.tflite"
    plain.parent.mkdir()
    plain.write_bytes((tiny_release / "tiny.float32.tflite").read_bytes())
    rc = main(["bench", str(tiny_release), str(plain), str(corrupt_tflite), "--quick", "--threads", "1",
               "--runtimes", "litert,tflite-runtime", "--images", str(few_smears), "--save-release",
               "--json", str(out / "r.json"), "--md", str(out / "r.md"), "--plot", str(out / "r.png"),
               "--allow-unsigned"])  # the release-like folder is unsigned, with a wrong hash on purpose
    return rc, out, json.loads((out / "r.json").read_text())


def _rows(doc, **match):
    return [r for r in doc["results"] if all(r.get(k) == v for k, v in match.items())]


def test_bench_json_validates_and_rows_are_plausible(bench_run, tiny_release, tiny_keras):
    from leukedge.benchmarks.cost import count_macs_keras, count_macs_tflite
    from leukedge.benchmarks.schema import SCHEMA_VERSION, validate
    from leukedge.fileio import sha256_file

    rc, _, doc = bench_run
    assert rc == 0
    validate(doc)
    assert doc["signatures"] == {str(tiny_release): "unsigned", **{k: "unverified" for k in doc["signatures"]
                                                                   if k != str(tiny_release)}}
    assert len(doc["signatures"]) == 3
    assert doc["schema_version"] == SCHEMA_VERSION
    assert re.fullmatch(r"[a-z0-9_]+-[a-z0-9-]+-\d+c", doc["device"]["id"])
    assert doc["conditions"]["openblas_num_threads"] == "1" and doc["conditions"]["quick"] is True
    ok = _rows(doc, model="tiny", runtime="litert", status="ok", model_dir=str(tiny_release))
    assert [r["variant"] for r in ok] == ["int8"] and ok[0]["sha256_matches_card"] is True
    tampered = _rows(doc, model="tiny", variant="float32", runtime="litert", model_dir=str(tiny_release))[0]
    assert tampered["status"] == "error" and "differs from the model card" in tampered["error"]
    # the same file outside the release (no card) is measured
    ok += _rows(doc, model="tiny", variant="float32", runtime="litert", model_dir=None)
    assert [r["status"] for r in ok] == ["ok", "ok"] and ok[1]["sha256_matches_card"] is None
    for r in ok:
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["std"] >= 0 and r["runs"] == 5 and r["threads"] == 1
        assert r["throughput_ips"] > 0 and r["load_ms"] > 0
        assert 0 < r["gzip_mb"] <= r["size_mb"]
        assert r["sha256"] == sha256_file(tiny_release / r["file"])  # the bare copy has the same bytes
        assert r["memory"]["peak_rss_mb"] >= r["memory"]["baseline_rss_mb"] > 0
        assert r["gmacs_per_s"] > 0 and r["efficiency_pct"] > 0
        assert r["input_shape"] == [1, 32, 32, 3]
    i8 = _rows(doc, model="tiny", variant="int8", runtime="litert")[0]
    assert i8["input_dtype"] == "int8" and i8["metric"] == {"name": "accuracy", "value": 0.8125,
                                                             "source": "evaluation.json"}
    # MACs counted from the flatbuffer agree with the Keras model's convolutions
    conv = count_macs_tflite(tiny_release / "tiny.int8.tflite")["by_op"]["CONV_2D"]
    assert conv == count_macs_keras(tiny_keras) - 32 * 16 - 16  # minus the two Dense layers
    assert i8["macs"] == ok[1]["macs"] == count_macs_tflite(tiny_release / "tiny.float32.tflite")["macs"]


def test_failing_runtimes_are_error_rows(bench_run):
    from leukedge.benchmarks.runtimes import get_runtime

    _, _, doc = bench_run
    bad = _rows(doc, model="broken")
    assert {r["runtime"] for r in bad} == {"litert", "tflite-runtime"}
    assert all(r["status"] == "error" and r["error"] and r["latency_ms"] is None for r in bad)
    assert "cannot load" in _rows(doc, model="broken", runtime="litert")[0]["error"]
    if get_runtime("tflite-runtime").unavailable():
        assert all("not installed" in r["error"] for r in _rows(doc, runtime="tflite-runtime", model_dir=None))
    assert [o["status"] for o in doc["overhead"] if o["model"] == "broken"] == ["skipped"]


def test_e2e_overhead_and_reports(bench_run, tiny_release):
    from leukedge.benchmarks.report import load_result

    _, out, doc = bench_run
    e = {r["file"]: r for r in doc["e2e"]}["tiny.int8.tflite"]
    assert e["status"] == "ok" and e["heatmap"] is True and e["images"] == 5
    st = e["stages_ms"]
    assert all(st[k]["p50"] > 0 for k in ("decode", "preprocess", "inference", "gradcam", "total"))
    assert st["total"]["mean"] >= st["inference"]["mean"]
    o = {r["file"]: r for r in doc["overhead"]}["tiny.int8.tflite"]
    assert o["status"] == "ok" and o["harness_p50_ms"] > 0 and o["bare_p50_ms"] > 0
    assert o["diff_pct"] == pytest.approx((o["harness_p50_ms"] - o["bare_p50_ms"]) / o["bare_p50_ms"] * 100, abs=0.05)
    assert 0 < o["timer_cost_us"] < 1000 * o["harness_p50_ms"]
    md = (out / "r.md").read_text()
    assert "| tiny | int8 | litert" in md and "End to end" in md and "Harness overhead" in md
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = list((tiny_release / "bench").glob("*-litert.json"))
    assert [p.name for p in saved] == [f"{doc['device']['id']}-litert.json"]
    sub = load_result(saved[0])
    assert {r["variant"] for r in sub["results"]} == {"int8", "float32"} and sub["e2e"]
    # a record saved into a release names no path of this machine (relative to the release, or names)
    text = saved[0].read_text()
    assert str(tiny_release) not in text and str(few_smears) not in text
    # the fixture's card is not a full card: left alone (its wrong float32 hash is not "fixed")
    assert json.loads((tiny_release / "card.json").read_text())["files"]["tiny.float32.tflite"] == "0" * 64


def test_schema_rejects_bad_documents(bench_run):
    from leukedge.benchmarks.schema import SchemaError, describe, problems, validate

    doc = bench_run[2]
    bad = copy.deepcopy(doc)
    del bad["device"]["cpu_model"]
    bad["results"][0]["status"] = "fine"
    bad["results"][0]["latency_ms"]["p50"] = "fast"
    found = problems(bad)
    assert any("device.cpu_model: missing" in p for p in found)
    assert any("status" in p and "fine" in p for p in found)
    assert any("latency_ms.p50" in p for p in found)
    with pytest.raises(SchemaError):
        validate(bad)
    newer = dict(doc, schema_version=doc["schema_version"] + 1)
    with pytest.raises(SchemaError, match="schema version"):
        validate(newer)
    assert "| `p50` |" in describe()


def test_compare_merges_devices_and_refuses_mixed_versions(bench_run, tmp_path, capsys):
    _, out, doc = bench_run
    other = copy.deepcopy(doc)
    other["device"].update(id="aarch64-raspberry-pi-5-4c", arch="aarch64", cpu_model="Cortex-A76")
    b = tmp_path / "pi.json"
    b.write_text(json.dumps(other))
    rc = main(["bench", "compare", str(out / "r.json"), str(b), "--json", str(tmp_path / "m.json"),
               "--md", str(tmp_path / "m.md"), "--plot", str(tmp_path / "m.png")])
    assert rc == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert len(merged["results"]) == 2 * len(doc["results"])
    assert {r["device"] for r in merged["results"]} == {doc["device"]["id"], "aarch64-raspberry-pi-5-4c"}
    md = (tmp_path / "m.md").read_text()
    assert "aarch64-raspberry-pi-5-4c" in md and doc["device"]["id"] in md
    assert (tmp_path / "m.png").stat().st_size > 1000
    other["schema_version"] = 99
    b.write_text(json.dumps(other))
    capsys.readouterr()
    assert main(["bench", "compare", str(out / "r.json"), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("leukedge: error:") and "schema version 99" in err[0]


@pytest.mark.parametrize("argv, needle", [
    (["bench", "no/such/model.tflite"], "no such file"),
    (["bench", "compare", "missing.json"], "no such benchmark JSON"),
    (["bench", "pyproject.toml"], "not a model file"),
    (["bench", "x.tflite", "--threads", "two"], "--threads"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    if argv[1] == "x.tflite":
        argv[1] = str(tmp_path / "x.tflite")
        Path(argv[1]).write_bytes(b"\0" * 100)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("leukedge: error:") and needle in err[0]


def test_unknown_runtime_suggests_a_name(tiny_release, capsys):
    assert main(["bench", str(tiny_release), "--runtimes", "litrt", "--allow-unsigned"]) == 2
    assert "did you mean 'litert'" in capsys.readouterr().err


def test_stats_and_metric_lookup(tmp_path):
    from leukedge.benchmarks.runner import latency_stats, time_calls
    from leukedge.benchmarks.targets import find_metric

    calls = []
    ms = time_calls(lambda: calls.append(1), runs=7)
    assert len(ms) == 7 == len(calls) and (ms >= 0).all()
    st = latency_stats(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert st["p50"] == 3.0 and st["min"] == 1.0 and st["max"] == 100.0 and st["p50"] <= st["p90"] <= st["p99"]
    (tmp_path / "parity.json").write_text(json.dumps(
        {"reference": {"file": "m.float32.tflite", "metrics": {"accuracy": {"value": 0.9}}},
         "candidates": {"int8": {"metrics": {"accuracy": {"value": 0.88}}}}}))
    assert find_metric(str(tmp_path), "int8", "m.int8.tflite")["value"] == 0.88
    assert find_metric(str(tmp_path), "float32", "m.float32.tflite")["value"] == 0.9
    assert find_metric(str(tmp_path), "pruned-int8", "m.pruned-int8.tflite") is None
    # the layout `leukedge compress` writes
    comp = {"reference": {"file": "/x/m.float32.tflite", "kind": "tflite"}, "candidate": {"file": "/x/m.int8.tflite"},
            "metrics_ci": {"reference": {"accuracy": {"value": 0.95}}, "candidate": {"accuracy": {"value": 0.94}}}}
    keras = {"reference": {"kind": "keras"}, "candidate": {"file": "/x/m.float32.tflite"},
             "metrics_ci": {"reference": {"accuracy": {"value": 0.96}}, "candidate": {"accuracy": {"value": 0.95}}}}
    (tmp_path / "parity.json").write_text(json.dumps({"schema": 1, "comparisons": {
        "int8 vs float32": comp, "float32 vs keras": keras}}))
    assert find_metric(str(tmp_path), "int8", "m.int8.tflite")["value"] == 0.94
    assert find_metric(str(tmp_path), "float32", "m.float32.tflite")["value"] == 0.95
    assert find_metric(str(tmp_path), "keras-float32", "best.h5")["value"] == 0.96


def segfault_task(job):
    """A measurement task that dies like a runtime with a native bug (used through run_isolated)."""
    import faulthandler

    faulthandler.disable()  # no traceback dump on stderr
    faulthandler._sigsegv()


def test_isolation_turns_crashes_and_timeouts_into_error_rows(tiny_release):
    from leukedge.benchmarks.runner import run_isolated

    crash = run_isolated({"task": "tests.test_bench:segfault_task"})  # a real segmentation fault in the child
    assert crash["status"] == "error" and "crashed (SIGSEGV)" in crash["error"]
    job = {"task": "latency", "runtime": "litert", "threads": 1, "warmup": 1, "runs": 5,
           "target": {"model": "tiny", "variant": "int8", "path": str(tiny_release / "tiny.int8.tflite")}}
    slow = run_isolated(job, timeout=0.01)
    assert slow == {"status": "error", "error": "timed out after 0 s"}
    ok = run_isolated(job)
    assert ok["status"] == "ok" and ok["runs"] == 5 and ok["input_shape"] == [1, 32, 32, 3]


def test_report_says_whether_the_cpu_has_int8_dot_products(bench_run):
    """The committed results of two real devices: VNNI (Intel Xeon) vs AVX2 only (AMD EPYC)."""
    from leukedge.benchmarks.report import int8_dot, load_result, markdown

    _, _, doc = bench_run
    for flags, has in ((["avx2", "avx512_vnni"], True), (["avx2", "fma"], False), (["neon", "asimddp"], True)):
        d = copy.deepcopy(doc)
        d["device"]["isa_flags"] = flags
        md = markdown(d)
        assert bool(int8_dot(d["device"])) is has
        assert ("int8 dot-product instructions: **none**" in md) is (not has)
    root = Path(__file__).resolve().parents[1] / "docs" / "bench" / "raw"   # measured on two real machines
    intel = load_result(root / "densenet201-binary-v20261125-x86_64-intel-xeon-2c-litert.json")
    amd = load_result(root / "densenet201-binary-v20261125-x86_64-amd-epyc-2c-litert.json")
    assert int8_dot(intel["device"]) and not int8_dot(amd["device"])


def test_device_id_tells_int8_dot_product_machines_apart():
    from leukedge.benchmarks.device import device_id

    assert device_id("x86_64", "AMD EPYC", 2, flags=["avx2", "fma"]) == "x86_64-amd-epyc-2c"
    assert device_id("x86_64", "AMD EPYC", 2, flags=["avx2", "avx512_vnni"]) == "x86_64-amd-epyc-vnni-2c"
    assert device_id("aarch64", "?", 4, board="Raspberry Pi 5 Model B Rev 1.0",
                     flags=["asimd", "asimddp"]) == "aarch64-raspberry-pi-5-dotprod-4c"


def test_save_release_never_overwrites_another_devices_record(tmp_path):
    """A release's bench record from another machine with the same device id is kept; the same
    machine's record is refreshed in place."""
    from leukedge.benchmarks.device import device_facts
    from leukedge.benchmarks.suite import release_files

    rel = tmp_path / "rel"
    (rel / "bench").mkdir(parents=True)
    (rel / "m.int8.tflite").write_bytes(b"x")
    dev = device_facts()
    doc = {"created": "2026-11-26T11:45:22+00:00", "device": dev, "e2e": [], "overhead": [],
           "results": [{"model": "m", "file": "m.int8.tflite", "runtime": "litert", "model_dir": str(rel)}]}
    mine = rel / "bench" / f"{dev['id']}-litert.json"
    assert list(release_files(doc)) == [mine]                     # nothing there yet
    mine.write_text(json.dumps({"device": dev}))
    assert list(release_files(doc)) == [mine]                     # same machine: refreshed
    mine.write_text(json.dumps({"device": {**dev, "isa_flags": ["avx2"]}}))
    other = list(release_files(doc))
    assert other == [rel / "bench" / f"{dev['id']}-litert-20261126T1145.json"]
    mine.write_text("{not json")
    assert list(release_files(doc)) == other                     # unreadable: kept too
