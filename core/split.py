"""Leakage-safe train/validation/test splits and the split manifest every stage reads.

Images of one patient have neighbouring file numbers and there are exact and near
duplicates, so a per-image random split leaks. Here images are grouped by blocks of
consecutive file numbers (or any regex group key), groups joined by a near-duplicate
pair are merged, and whole groups are assigned to splits, stratified by class
(scikit-learn's ``StratifiedGroupKFold``).
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .data import Record, class_counts, scan
from .errors import ConfigError, DataError
from .fileio import atomic_write_json, atomic_write_text, read_limited, sha256_file
from .hashing import hash_records, near_duplicate_pairs

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "class", "split", "group", "sha256", "phash")


@dataclass
class SplitConfig:
    """How to split a data folder.

    Attributes:
        fractions: train/validation/test fractions (the paper's 70/15/15).
        seed: random seed; the same seed gives the same manifest.
        block_size: images per group of consecutive file numbers (same patient, adjacent captures).
        group_regex: instead of blocks, the group is this regex's first capture group on
            the relative path (e.g. ``r"(P\\d+)_"`` for a patient-id prefix).
        near_dup_distance: perceptual-hash Hamming distance (of 64 bits) at or below which
            two images are near duplicates and must share a split.
        drop_exact_duplicates: keep one copy of byte-identical images (the others get split ``excluded``).
    """

    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = 42
    block_size: int = 25
    group_regex: str | None = None
    near_dup_distance: int = 10
    drop_exact_duplicates: bool = True

    def __post_init__(self):
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) <= 0:
            raise ConfigError(f"split fractions must be 3 positive numbers summing to 1, got {self.fractions}")
        if self.block_size < 1:
            raise ConfigError(f"block_size must be >= 1, got {self.block_size}")
        if self.group_regex:
            try:
                re.compile(self.group_regex)
            except re.error as exc:
                raise ConfigError(f"--group-regex {self.group_regex!r} is not a valid regular expression ({exc})",
                                  "e.g. --group-regex '(\\d+)_' (the first capture group is the group key)") from None


def group_key(rec: Record, cfg: SplitConfig) -> str:
    if cfg.group_regex:
        m = re.search(cfg.group_regex, rec.relpath)
        if not m:
            raise DataError(f"group regex {cfg.group_regex!r} does not match {rec.relpath}",
                            "fix --group-regex so that it matches every path")
        return m.group(1) if m.groups() else m.group(0)
    n = rec.number
    if n is None:
        return f"{rec.cls}:{Path(rec.relpath).stem}"
    return f"{rec.cls}:{n // cfg.block_size:04d}"


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class SplitResult:
    rows: list[dict]
    config: SplitConfig
    near_pairs: int
    merged_groups: int
    summary: dict = field(default_factory=dict)


def make_split(data_dir, cfg: SplitConfig | None = None) -> SplitResult:
    """Split a data folder; returns the manifest rows (see :data:`MANIFEST_COLUMNS`)."""
    from sklearn.model_selection import StratifiedGroupKFold

    cfg = cfg or SplitConfig()
    records = scan(data_dir)
    hashed = hash_records(records, desc="split: hashing")
    uf = _UnionFind()
    base_group = [group_key(h.record, cfg) for h in hashed]
    for g in base_group:
        uf.find(g)
    pairs = near_duplicate_pairs(hashed, cfg.near_dup_distance)
    merged = 0
    for i, j, _ in pairs:
        if uf.find(base_group[i]) != uf.find(base_group[j]):
            merged += 1
        uf.union(base_group[i], base_group[j])
    groups = [uf.find(g) for g in base_group]

    # Exact duplicates: keep the first copy (they are in one group already, via distance 0).
    excluded = set()
    if cfg.drop_exact_duplicates:
        seen: dict[str, int] = {}
        for i, h in enumerate(hashed):
            if h.sha256 is None:  # unreadable: excluded below
                continue
            if h.sha256 in seen:
                excluded.add(i)
            else:
                seen[h.sha256] = i
    unreadable = {i for i, h in enumerate(hashed) if h.phash is None}

    use = [i for i in range(len(hashed)) if i not in excluded and i not in unreadable]
    y = np.array([hashed[i].record.cls for i in use])
    g = np.array([groups[i] for i in use])
    n_folds = 20
    small = {c: int(n) for c, n in zip(*np.unique(y, return_counts=True)) if n < n_folds}
    if small:
        raise DataError(f"{data_dir}: class(es) with fewer than {n_folds} readable images: {small}",
                        f"a 70/15/15 split by group needs at least {n_folds} images per class; add images "
                        "or remove the class folder")
    if len(set(g)) < n_folds:
        raise DataError(f"only {len(set(g))} groups in {data_dir}: too few to split 70/15/15 by group",
                        "use a smaller --block-size or a --group-regex with more groups")
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=cfg.seed)
    fold_of = np.empty(len(use), dtype=int)
    for k, (_, test_idx) in enumerate(sgkf.split(np.zeros(len(use)), y, g)):
        fold_of[test_idx] = k
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n_folds)
    n_test = int(round(cfg.fractions[2] * n_folds))
    n_val = int(round(cfg.fractions[1] * n_folds))
    split_of_fold = {}
    for rank, k in enumerate(order):
        split_of_fold[int(k)] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")

    split_of = {i: split_of_fold[int(fold_of[n])] for n, i in enumerate(use)}
    rows = []
    for i, h in enumerate(hashed):
        split = split_of.get(i, "excluded")
        rows.append({"path": h.record.relpath, "class": h.record.cls, "split": split, "group": groups[i],
                     "sha256": h.sha256, "phash": f"{h.phash:016x}" if h.phash is not None else ""})
    res = SplitResult(rows, cfg, len(pairs), merged)
    res.summary = summarize(rows)
    res.summary.update({"near_duplicate_pairs": len(pairs), "groups_merged_by_near_duplicates": merged,
                        "excluded_exact_duplicates": len(excluded), "unreadable": len(unreadable),
                        "config": asdict(cfg)})
    return res


def summarize(rows: list[dict]) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r["split"], Counter())[r["class"]] += 1
    groups = {s: len({r["group"] for r in rows if r["split"] == s}) for s in counts}
    return {"counts": {s: dict(sorted(c.items())) for s, c in counts.items()}, "groups": groups,
            "n": {s: sum(c.values()) for s, c in counts.items()}}


def manifest_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in MANIFEST_COLUMNS})
    return buf.getvalue()


def summary_path(manifest: str | os.PathLike) -> Path:
    """Where the summary of a manifest goes: ``X.split.csv`` -> ``X.split.json``."""
    return Path(manifest).with_suffix(".json")


def write_manifest(result: SplitResult, out: str | os.PathLike) -> Path:
    """Write the CSV manifest and its ``.json`` summary beside it (atomically).

    Raises:
        ConfigError: ``out`` does not end in ``.csv`` (the summary would overwrite the manifest).
    """
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"{out}: a split manifest must end in .csv (its summary is written beside it as "
                          f"{summary_path(out).name})", f"name it like {out.with_suffix('.csv').name}")
    atomic_write_text(out, manifest_text(result.rows))
    summary = dict(result.summary)
    summary["manifest_sha256"] = sha256_file(out)
    atomic_write_json(summary_path(out), summary)
    return out


def read_manifest(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Read a split manifest; with ``data_dir``, add each row's absolute ``abspath`` and check it exists."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{path}: no split manifest", "create one with `leukedge data split DIR`")
    data = read_limited(path, "csv", DataError)
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})", "pass a manifest made by `leukedge data split`") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a CSV file ({exc})", "pass a manifest made by `leukedge data split`") from None
    if not rows or not set(MANIFEST_COLUMNS[:3]).issubset(rows[0]):
        raise DataError(f"{path}: not a LeukEdge split manifest (columns {MANIFEST_COLUMNS})")
    outside = [r.get("path") for r in rows if not _inside(r.get("path"))]
    if outside:
        raise DataError(f"{path}: {len(outside)} row(s) name a path outside the data folder (first: {outside[0]!r})",
                        "manifest paths are relative to the data folder, with no '..' and not absolute")
    if data_dir is not None:
        root = Path(data_dir)
        missing = [r["path"] for r in rows if r["split"] in SPLITS and not (root / r["path"]).exists()]
        if missing:
            raise DataError(f"{len(missing)} image(s) of the manifest are missing under {root} (first: {missing[0]})",
                            "pass the data folder the manifest was made from")
        for r in rows:
            r["abspath"] = str((root / r["path"]).resolve())
    return rows


def _inside(relpath) -> bool:
    """A manifest path stays inside its data folder: relative, no ``..`` component."""
    if not isinstance(relpath, str) or not relpath:
        return False
    p = PurePosixPath(relpath.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts


def rows_of(rows: list[dict], split: str) -> list[dict]:
    return [r for r in rows if r["split"] == split]


def class_counts_of(rows) -> dict:
    return class_counts([Record(r["path"], r["class"], r["path"]) for r in rows])
