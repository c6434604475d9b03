"""Multi-worker training: TF_CONFIG validation (fast) and two real `leukedge train` workers on
localhost against one worker with the same global batch (real smears, tiny models)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leukedge.errors import ConfigError
from leukedge.train.distribute import check_batch, parse_tf_config, tf_config_for

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distribute_worker.py")


# ----- TF_CONFIG parsing (no TensorFlow) -------------------------------------------------------------
def test_tf_config_valid_and_chief():
    c = parse_tf_config(json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}))
    assert c.n_workers == 2 and not c.is_chief and c.rank == 1
    c = parse_tf_config(json.dumps({"cluster": {"chief": ["c:9"], "worker": ["a:1"]},
                                    "task": {"type": "worker", "index": 0}}))
    assert c.workers == ("c:9", "a:1") and not c.is_chief and c.rank == 1
    assert json.loads(tf_config_for("h0:2222, h1:2222", 0))["cluster"]["worker"] == ["h0:2222", "h1:2222"]
    assert parse_tf_config(tf_config_for("h0:2222,h1:2222", 0)).is_chief


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', "no \"cluster\""),
    ('{"cluster": {"worker": ["a:1"]}}', "no \"task\""),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:2"]}, "task": {"type": "worker", "index": 0}}', "not supported"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "must be a list"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "not host:port"),
    ('{"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker", "index": 0}}', "not host:port"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "listed twice"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}', "task.type"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "must be an integer"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', "not in the cluster"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "at most one chief"),
])
def test_tf_config_errors(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_tf_config(text)


def test_global_batch_must_split_over_workers():
    c = parse_tf_config(tf_config_for("a:1,b:1,c:1", 2))
    check_batch(12, c)
    with pytest.raises(ConfigError, match="does not split over 3 workers"):
        check_batch(16, c)


def _cli(args, env_extra=None, timeout=120):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "leukedge.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_malformed_tf_config_is_one_line_error(tmp_path):
    r = _cli(["train", "--preset", "smoke", "--runs", str(tmp_path)], {"TF_CONFIG": '{"cluster": {"worker": ["x"]}}'})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "TF_CONFIG" in r.stderr and len([l for l in r.stderr.splitlines() if "error" in l.lower()]) == 1
    assert not any(tmp_path.iterdir())
    r = _cli(["train", "--preset", "smoke", "--workers", "a:1,b:2", "--worker-index", "0"],
             {"TF_CONFIG": tf_config_for("a:1,b:2", 0)})
    assert r.returncode != 0 and "both --workers and TF_CONFIG" in r.stderr and "Traceback" not in r.stderr


# ----- two real workers on localhost ------------------------------------------------------------------
def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def manifest(small_dataset, tmp_path_factory) -> Path:
    from leukedge.split import SplitConfig, make_split, write_manifest

    out = tmp_path_factory.mktemp("split") / "small.split.csv"
    write_manifest(make_split(small_dataset, SplitConfig(block_size=3)), out)
    return out


def _train_args(backbone, data, manifest, runs):
    # no augmentation and no dropout: the two runs draw no per-process randomness
    return ["train", "--backbone", backbone, "--weights", "none", "--input-size", "32", "--batch-size", "16",
            "--epochs", "2", "--lr", "3e-3", "--dense-units", "16", "--dropout", "0", "--no-augment",
            "--limit-per-class", "10", "--threads", "1", "--data", str(data), "--split", str(manifest),
            "--runs", str(runs), "--set", "bn_recalibrate_steps=0"]


def _run(cmd_args, env_extra=None, n_workers=1, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})}
    procs = []
    ports = _free_ports(n_workers) if n_workers > 1 else []
    for i in range(n_workers):
        extra = ["--workers", ",".join(f"localhost:{p}" for p in ports), "--worker-index", str(i)] if ports else []
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *cmd_args, *extra], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [o for o, _ in outs]


def _only_run(runs: Path) -> Path:
    found = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(found) == 1, found
    return found[0]


def _loss(run: Path) -> np.ndarray:
    import csv

    with open(run / "history.csv", newline="") as fh:
        return np.array([[float(r["loss"]), float(r["val_loss"])] for r in csv.DictReader(fh)])


def test_two_workers_match_one_worker(small_dataset, manifest, tmp_path):
    """2 workers x 8 images per step == 1 worker x 16: same losses and final weights (float tolerance).

    ~35 s of CPU: two TensorFlow processes plus the one-worker reference."""
    from leukedge.train.io import load_keras_model

    one, two = tmp_path / "one", tmp_path / "two"
    _run(_train_args("tiny-plain", small_dataset, manifest, one))
    outs = _run(_train_args("tiny-plain", small_dataset, manifest, two), n_workers=2)
    assert "run folder:" in outs[0] and "worker 1 of 2 finished" in outs[1]
    r1, r2 = _only_run(one), _only_run(two)
    # the chief wrote a complete run folder; the other worker left nothing behind in --runs
    for name in ("config.json", "split.csv", "history.csv", "best.h5", "last.h5", "spec.json", "predictions.csv"):
        assert (r2 / name).exists(), name
    l1, l2 = _loss(r1), _loss(r2)
    assert l1.shape == l2.shape == (2, 2)
    np.testing.assert_allclose(l2, l1, rtol=1e-4, atol=1e-5)
    w1, w2 = load_keras_model(r1 / "last.h5").get_weights(), load_keras_model(r2 / "last.h5").get_weights()
    assert len(w1) == len(w2)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    # not vacuous: between the epochs the loss moved by far more than the tolerance
    assert abs(l1[1, 0] - l1[0, 0]) > 1e-3
