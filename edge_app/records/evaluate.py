"""Validate the sample verdict rule on the test split: simulated samples of several fields of view.

The split manifest's ``group`` column is a block of consecutive file numbers of one class
(the data has no patient IDs; neighbouring numbers tend to come from one patient), so
a group approximates a patient. Each group's test images, in file order, are cut into
samples of ``fields`` images (the last, shorter chunk is a sample too: a worker may get
fewer fields). Every image is screened once by the release (quality gate, OOD gate,
model at the spec's threshold: what the app does), then every rule is applied to the
same field statuses with the sample finished (``refer`` / ``no_signs`` / ``cannot_assess``).

Per rule: sensitivity = refer / leukemia samples, specificity = no signs / benign samples
(cannot assess is neither a referral by the model nor a clearance), missed = no signs
among leukemia samples (the harmful outcome), each with an exact Clopper-Pearson 95% CI.
Samples of one group are correlated, so the CIs are optimistic (stated in the report).
"""
from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from leukedge.errors import DataError
from leukedge.metrics import clopper_pearson

from .verdict import CANNOT_ASSESS, NO_SIGNS, REFER, USABLE, VerdictRule, field_status, sample_verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimSample:
    group: str
    label: int          # 1 leukemia, 0 benign
    paths: tuple[str, ...]


def _file_number(path: str) -> tuple:
    m = re.search(r"(\d+)\D*$", path)
    return (int(m.group(1)) if m else -1, path)


def simulated_samples(split_csv: str | Path, negative_class: str, fields: int, split: str = "test") -> list[SimSample]:
    """Test rows grouped by ``group``, in file order, cut into samples of ``fields`` images."""
    p = Path(split_csv)
    if not p.is_file():
        raise DataError(f"no split manifest {p}", "pass --split splits/<data>.split.csv")
    with open(p, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == split]
    if not rows or not {"path", "class", "group"} <= set(rows[0]):
        raise DataError(f"{p}: no {split} rows with path, class and group columns")
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    out = []
    for g in sorted(by_group):
        rs = sorted(by_group[g], key=lambda r: _file_number(r["path"]))
        classes = {r["class"] for r in rs}
        if len(classes) != 1:
            raise DataError(f"{p}: group {g} mixes classes {sorted(classes)}")
        label = 0 if classes.pop() == negative_class else 1
        for i in range(0, len(rs), fields):
            out.append(SimSample(g, label, tuple(r["path"] for r in rs[i:i + fields])))
    return out


def screen_statuses(screener, data_dir: str | Path, paths) -> dict[str, str]:
    """Field status of every image (screened once, no heatmap)."""
    out = {}
    for rel in paths:
        out[rel] = field_status(screener.screen_image(str(Path(data_dir) / rel), heatmap=False))
    return out


def _rate(k: int, n: int) -> dict:
    return {"k": k, "n": n, "value": (k / n) if n else None, "ci95": clopper_pearson(k, n) if n else None}


def score_rule(samples: list[SimSample], statuses: dict[str, str], rule: VerdictRule) -> dict:
    """Sample-level counts and rates of one rule."""
    counts = {lab: defaultdict(int) for lab in (0, 1)}
    for s in samples:
        v = sample_verdict([statuses[p] for p in s.paths], rule, finished=True)
        counts[s.label][v.code] += 1
    pos, neg = counts[1], counts[0]
    n_pos, n_neg = sum(pos.values()), sum(neg.values())
    return {"rule": rule.aggregate, "k": rule.min_usable,
            "n_leukemia": n_pos, "n_benign": n_neg,
            "sensitivity": _rate(pos[REFER], n_pos), "specificity": _rate(neg[NO_SIGNS], n_neg),
            "missed": _rate(pos[NO_SIGNS], n_pos), "false_referral": _rate(neg[REFER], n_neg),
            "cannot_assess_leukemia": _rate(pos[CANNOT_ASSESS], n_pos),
            "cannot_assess_benign": _rate(neg[CANNOT_ASSESS], n_neg)}


def image_level(samples: list[SimSample], statuses: dict[str, str]) -> dict:
    """Per-image figures on the same images (usable images only), for comparison."""
    tp = fn = tn = fp = unusable = 0
    for s in samples:
        for p in s.paths:
            st = statuses[p]
            if st not in USABLE:
                unusable += 1
            elif s.label:
                tp, fn = tp + (st == "positive"), fn + (st == "negative")
            else:
                tn, fp = tn + (st == "negative"), fp + (st == "positive")
    return {"sensitivity": _rate(tp, tp + fn), "specificity": _rate(tn, tn + fp), "unusable": unusable,
            "n_images": tp + fn + tn + fp + unusable}


def evaluate_release(release_dir, data_dir, split_csv=None, fields=(3, 5), ks=(1, 2, 3), threads=None) -> dict:
    """Every rule x K x fields-per-sample on one release's test split."""
    from ..inference import Screener

    screener = Screener(release_dir, num_threads=threads)
    split_csv = split_csv or (Path(release_dir) / "split.csv")
    neg = screener.spec.negative_class
    all_paths = {p for s in simulated_samples(split_csv, neg, 1) for p in s.paths}
    log.info("screening %d test images with %s", len(all_paths), screener.release.name)
    statuses = screen_statuses(screener, data_dir, sorted(all_paths))
    out = {"release": screener.release.name, "version": screener.release.version,
           "variant": screener.release.variant, "threshold": screener.threshold, "split": str(split_csv),
           "status_counts": {k: sum(v == k for v in statuses.values()) for k in sorted(set(statuses.values()))},
           "by_fields": {}}
    for f in fields:
        samples = simulated_samples(split_csv, neg, f)
        rows = [score_rule(samples, statuses, VerdictRule(min_usable=k, max_attempts=max(k, f), aggregate=agg))
                for agg in ("any", "majority") for k in ks]
        out["by_fields"][str(f)] = {"n_samples": len(samples), "image_level": image_level(samples, statuses),
                                    "rules": rows}
    return out


def _fmt(r: dict) -> str:
    if r["value"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{100 * r['value']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}) {r['k']}/{r['n']}"


def markdown_table(result: dict) -> str:
    lines = []
    for f, block in result["by_fields"].items():
        il = block["image_level"]
        lines += [f"**{result['release']}** v{result['version']} ({result['variant']}), {f} fields per sample: "
                  f"{block['n_samples']} samples; per image (usable images): sensitivity "
                  f"{_fmt(il['sensitivity'])}, specificity {_fmt(il['specificity'])}, {il['unusable']} of "
                  f"{il['n_images']} images unusable (retake / OOD / unreadable).", "",
                  "| rule | K | leukemia / benign samples | sensitivity (refer) | specificity (no signs) "
                  "| missed (no signs on leukemia) | cannot assess: leukemia | cannot assess: benign |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in block["rules"]:
            lines.append(f"| {r['rule']} | {r['k']} | {r['n_leukemia']} / {r['n_benign']} | {_fmt(r['sensitivity'])} "
                         f"| {_fmt(r['specificity'])} | {_fmt(r['missed'])} | {_fmt(r['cannot_assess_leukemia'])} "
                         f"| {_fmt(r['cannot_assess_benign'])} |")
        lines.append("")
    return "\n".join(lines)


def csv_rows(result: dict) -> list[dict]:
    out = []
    for f, block in result["by_fields"].items():
        for r in block["rules"]:
            row = {"release": result["release"], "variant": result["variant"], "fields": f, "rule": r["rule"],
                   "k": r["k"], "n_leukemia": r["n_leukemia"], "n_benign": r["n_benign"]}
            for m in ("sensitivity", "specificity", "missed", "cannot_assess_leukemia", "cannot_assess_benign"):
                row[m] = r[m]["value"]
                row[f"{m}_lo"], row[f"{m}_hi"] = r[m]["ci95"] or (None, None)
            out.append(row)
    return out
