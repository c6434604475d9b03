"""benchmarks/screening_head.py on the real EfficientNet-Lite0 releases (int8, validation split, ~15 s)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from leukedge.benchmarks.screening_head import main, paired_log_loss_delta

REPO = Path(__file__).resolve().parents[1]
BIN, SUB = REPO / "models" / "efficientnet-lite0-binary", REPO / "models" / "efficientnet-lite0-subtype"


def test_paired_log_loss_delta_sign_and_ci():
    y = np.array([0, 0, 1, 1, 1, 0])
    good, bad = np.array([.1, .2, .9, .8, .95, .05]), np.array([.4, .5, .6, .5, .7, .45])
    d, ci_img, ci_grp = paired_log_loss_delta(y, bad, good, np.array(list("aabbcc")), 200, 0)
    assert d < 0 and ci_img[1] < 0 and ci_grp[0] <= d <= ci_grp[1]


def test_screening_head_on_validation(tmp_path, aria_dir):
    out = tmp_path / "screen.csv"
    assert main(["--binary", str(BIN), "--subtype", str(SUB), "--variant", "int8", "--n-boot", "200",
                 "--data", str(aria_dir), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["head"] for r in rows] == ["binary", "4-class as screen"]
    n_val = sum(1 for r in csv.DictReader(open(BIN / "split.csv")) if r["split"] == "val")
    for r in rows:
        assert int(r["n"]) == n_val
        assert float(r["sensitivity"]) >= 0.99  # the threshold rule: sensitivity >= 0.99 on validation
        assert 0.9 < float(r["roc_auc"]) <= 1.0
    assert rows[1]["delta_vs_binary_roc_auc"] != "" and rows[0]["delta_vs_binary_roc_auc"] == ""


def test_different_manifests_refused(tmp_path, aria_dir, capsys):
    other = tmp_path / "other"
    shutil.copytree(SUB, other)
    (other / "split.csv").write_text((SUB / "split.csv").read_text().replace(",val,", ",train,", 1))
    assert main(["--binary", str(BIN), "--subtype", str(other), "--data", str(aria_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different split manifests" in err[0]
