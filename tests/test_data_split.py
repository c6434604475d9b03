"""Data check and the leakage-safe split, on the real Aria images."""
import csv
import subprocess
import sys

import pytest

from leukedge.check import check_folder
from leukedge.cli import main
from leukedge.data import scan
from leukedge.errors import DataError
from leukedge.hashing import hash_records, near_duplicate_pairs
from leukedge.split import SplitConfig, make_split, read_manifest, write_manifest


@pytest.fixture(scope="module")
def real_split(aria_dir):
    return make_split(aria_dir, SplitConfig(seed=42))


def test_split_covers_every_image_with_70_15_15(real_split, aria_dir):
    rows = real_split.rows
    assert len(rows) == len(scan(aria_dir)) == 2780
    n = real_split.summary["n"]
    used = n["train"] + n["val"] + n["test"]
    assert abs(n["train"] / used - 0.70) < 0.04
    assert abs(n["val"] / used - 0.15) < 0.03 and abs(n["test"] / used - 0.15) < 0.03
    for split in ("train", "val", "test"):  # stratified: every class in every split
        assert set(real_split.summary["counts"][split]) == {"Benign", "Early", "Pre", "Pro"}


def test_no_group_crosses_splits(real_split):
    split_of_group = {}
    for r in real_split.rows:
        if r["split"] == "excluded":
            continue
        assert split_of_group.setdefault(r["group"], r["split"]) == r["split"], r["group"]


def test_no_near_duplicate_pair_crosses_splits(real_split, aria_dir):
    hashed = hash_records(scan(aria_dir))
    split = {r["path"]: r["split"] for r in real_split.rows}
    pairs = near_duplicate_pairs(hashed, real_split.config.near_dup_distance)
    assert len(pairs) > 50  # the dataset really has near duplicates: the check is not vacuous
    for i, j, _ in pairs:
        a, b = split[hashed[i].record.relpath], split[hashed[j].record.relpath]
        assert "excluded" in (a, b) or a == b, (hashed[i].record.relpath, hashed[j].record.relpath)


def test_neighbouring_file_numbers_stay_together(real_split):
    # consecutive numbers inside a block of 25 share a split
    by_class = {}
    for r in real_split.rows:
        if r["split"] != "excluded":
            by_class.setdefault(r["class"], []).append(r)
    changes = 0
    for rows in by_class.values():
        rows.sort(key=lambda r: int(r["path"].rsplit("-", 1)[-1].split(".")[0]))
        changes += sum(1 for a, b in zip(rows, rows[1:]) if a["split"] != b["split"])
    # only at group boundaries: far fewer split changes than a random split (~50% of neighbours)
    assert changes < 0.1 * len(real_split.rows)


def test_exact_duplicates_are_excluded_once(real_split):
    seen = {}
    for r in real_split.rows:
        if r["split"] != "excluded":
            assert r["sha256"] not in seen, "an exact duplicate was kept twice"
            seen[r["sha256"]] = r["path"]
    assert real_split.summary["excluded_exact_duplicates"] > 0


def test_same_seed_same_manifest_other_seed_differs(real_split, aria_dir, tmp_path):
    again = make_split(aria_dir, SplitConfig(seed=42))
    assert [r["split"] for r in again.rows] == [r["split"] for r in real_split.rows]
    other = make_split(aria_dir, SplitConfig(seed=7))
    assert [r["split"] for r in other.rows] != [r["split"] for r in real_split.rows]
    out = write_manifest(real_split, tmp_path / "m.csv")
    rows = read_manifest(out, aria_dir)
    assert len(rows) == 2780 and all("abspath" in r for r in rows)
    with open(out) as fh:
        assert next(csv.reader(fh)) == ["path", "class", "split", "group", "sha256", "phash"]


def test_check_reports_corrupt_files_without_crashing(small_dataset, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(small_dataset, data, symlinks=False)
    (data / "Pre" / "zero.jpg").write_bytes(b"")
    (data / "Pre" / "text.jpg").write_text("not an image")
    report = check_folder(data)
    bad = {u["path"]: u["reason"] for u in report.unreadable}
    assert set(bad) == {"Pre/zero.jpg", "Pre/text.jpg"}
    assert "empty" in bad["Pre/zero.jpg"] and "not an image" in bad["Pre/text.jpg"]
    assert report.counts["Pre"] == 42


def test_unusable_folders_exit_nonzero_with_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["data", "split", str(tmp_path / "empty")]) == 2
    (tmp_path / "oneclass" / "A").mkdir(parents=True)
    assert main(["data", "check", str(tmp_path / "oneclass")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("leukedge: error: ") for line in err)
    assert "Traceback" not in "".join(err)


def test_class_with_only_unreadable_images_is_unusable(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "x.jpg").write_text("nope")
    with pytest.raises(DataError, match="no readable image"):
        check_folder(tmp_path)


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "leukedge.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "data" in out.stdout
    out = subprocess.run([sys.executable, "-m", "leukedge.cli", "data", "split", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--block-size" in out.stdout


def test_eda_report(small_dataset, tmp_path):
    assert main(["data", "eda", str(small_dataset), "--out", str(tmp_path / "eda")]) == 0
    md = (tmp_path / "eda" / "eda.md").read_text()
    for png in ("class_distribution.png", "colour_texture.png", "feature_pca.png", "corner_stamps.png",
                "samples_Benign.png"):
        assert png in md and (tmp_path / "eda" / png).stat().st_size > 1000
