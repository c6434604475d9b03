"""Hostile and careless inputs to every CLI: each gets its documented result (docs/hostile-inputs.md).

Real files made in tmp_path (a FIFO from os.mkfifo, a Unix socket, /dev/zero, broken links,
odd image formats made with Pillow from a real smear), the committed release
models/efficientnet-lite0-binary, and the real `leukedge` command in a subprocess with a
timeout: a hang fails the test instead of blocking it. Asserted for each case: the exit code,
a single `leukedge: error:` line (never a traceback), and that the good inputs are still scored.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import pick
from leukedge.errors import ConfigError, DataError
from leukedge.fileio import read_json, read_limited
from leukedge.runtime import check_threads, max_threads

RELEASE = Path("models/efficientnet-lite0-binary")
NON_UTF8 = os.fsdecode(b"bad\xffname.jpg")  # a file name from another system's encoding
TIMEOUT = 120


def run_cli(*args, timeout=TIMEOUT, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "leukedge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("leukedge:")]


def assert_one_line_error(r, pattern: str, code: int = 2) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert re.search(pattern, lines[0]), lines[0]


def png_header(w: int, h: int) -> bytes:
    """A valid PNG signature + IHDR claiming w x h, with almost no pixel data."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# name -> (how to make it in a folder, expected: "scored" or a regex of the error)
def _image_cases(smear: Path):
    rgb = Image.open(smear).convert("RGB")
    gray16 = np.asarray(rgb.convert("L"), np.uint16) * 257
    jpeg = smear.read_bytes()
    return {
        "fifo.jpg": (lambda p: os.mkfifo(p), r"FIFO \(named pipe\), not a regular file"),
        "dev-zero.jpg": (lambda p: p.symlink_to("/dev/zero"), r"character device, not a regular file"),
        "socket.jpg": ("socket", r"socket, not a regular file"),
        "folder.jpg": (lambda p: p.mkdir(), r"is a folder, not a regular file"),
        "broken-link.jpg": (lambda p: p.symlink_to(p.parent / "nowhere.jpg"), r"broken symbolic link"),
        "missing.jpg": (lambda p: None, r"no such file"),
        "self-loop.jpg": (lambda p: p.symlink_to(p.name), r"Too many levels of symbolic links"),
        NON_UTF8: (lambda p: p.write_bytes(jpeg), "scored"),
        "new\nline.jpg": (lambda p: p.write_bytes(jpeg), "scored"),
        "empty.jpg": (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
        "text.jpg": (lambda p: p.write_text("this is a text file, not a picture\n" * 20), r"not an image file"),
        "truncated.jpg": (lambda p: p.write_bytes(jpeg[: len(jpeg) // 3]), r"cannot decode image"),
        "one-pixel.png": (lambda p: p.write_bytes(encode(Image.new("RGB", (1, 1)), "PNG")), r"only 1x1 pixels"),
        "huge-header.png": (lambda p: p.write_bytes(png_header(100_000, 100_000)), r"too large|megapixels"),
        "eps.jpg": (lambda p: p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\nshowpage\n"),
                    r"not an image file"),
        "gray16.png": (lambda p: p.write_bytes(encode(Image.fromarray(gray16), "PNG")), "scored"),
        "cmyk.jpg": (lambda p: p.write_bytes(encode(rgb.convert("CMYK"), "JPEG")), "scored"),
        "palette.png": (lambda p: p.write_bytes(encode(rgb.convert("P"), "PNG")), "scored"),
        "alpha.png": (lambda p: p.write_bytes(encode(rgb.convert("RGBA"), "PNG")), "scored"),
        "pages.tif": (lambda p: p.write_bytes(encode(rgb, "TIFF", save_all=True, append_images=[rgb.rotate(90)])),
                      "scored"),
        "animated.gif": (lambda p: p.write_bytes(encode(rgb.convert("P"), "GIF", save_all=True,
                                                        append_images=[rgb.rotate(90).convert("P")])), "scored"),
    }


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory, smear_paths):
    """The odd inputs in one folder, plus the sockets kept open while the module runs."""
    folder = tmp_path_factory.mktemp("hostile")
    cases = _image_cases(smear_paths["Benign"][0])
    sockets = []
    for name, (make, _) in cases.items():
        p = folder / name
        if make == "socket":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(p))
            sockets.append(s)
        else:
            make(p)
    yield folder, {n: exp for n, (_, exp) in cases.items()}
    for s in sockets:
        s.close()


@pytest.fixture(scope="module")
def predict_all(hostile_images, smear_paths):
    """One `predict --json` over a good smear, every hostile input, and another good smear."""
    folder, expected = hostile_images
    good = [smear_paths["Benign"][1], smear_paths["Pro"][1]]
    paths = [good[0], *(folder / n for n in expected), good[1]]
    r = run_cli("predict", *paths, "--model", RELEASE, "--json", "--threads", 1)
    return r, {Path(o["path"]).name: o for o in json.loads(r.stdout)}, good


def test_predict_with_bad_inputs_exits_2_with_one_valid_json_list(predict_all, hostile_images):
    r, by_name, good = predict_all
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2  # INTERFACES.md: 2 when an input could not be read
    assert json.loads(r.stdout)[0]["path"] == str(good[0])
    assert len(by_name) == len(hostile_images[1]) + 2
    for g in good:  # the good smears around the bad ones are still scored
        o = by_name[g.name]
        assert o["error"] is None and 0.0 <= o["probability"] <= 1.0 and o["decision"] in ("positive", "negative")


CASE_NAMES = ["fifo.jpg", "dev-zero.jpg", "socket.jpg", "folder.jpg", "broken-link.jpg", "missing.jpg", "self-loop.jpg",
              NON_UTF8, "new\nline.jpg", "empty.jpg",
              "text.jpg", "truncated.jpg", "one-pixel.png", "huge-header.png", "eps.jpg", "gray16.png", "cmyk.jpg",
              "palette.png", "alpha.png", "pages.tif", "animated.gif"]


@pytest.mark.parametrize("name", CASE_NAMES, ids=[n.encode("ascii", "backslashreplace").decode() for n in CASE_NAMES])
def test_each_odd_input_has_its_defined_result(predict_all, hostile_images, name):
    _, by_name, _ = predict_all
    expected = hostile_images[1][name]
    o = by_name[name]
    if expected == "scored":
        assert o["error"] is None, o["error"]
        assert o["decision"] in ("positive", "negative", "retake", "out-of-distribution")
        assert o["probability"] is None or 0.0 <= o["probability"] <= 1.0
    else:
        assert o["error"] and re.search(expected, o["error"]), o["error"]
        assert "\n" not in o["error"]
        assert o["probability"] is None and o["decision"] is None


def test_image_byte_limit_is_configurable(smear_paths, tmp_path):
    small = smear_paths["Early"][0]
    r = run_cli("predict", small, "--model", RELEASE, "--json", env={"LEUKEDGE_MAX_IMAGE_BYTES": "1000"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (o,) = json.loads(r.stdout)
    assert "larger than the 1000 bytes limit" in o["error"] and "LEUKEDGE_MAX_IMAGE_BYTES" in o["error"]
    r = run_cli("predict", small, "--model", RELEASE, env={"LEUKEDGE_MAX_IMAGE_BYTES": "lots"})
    assert_one_line_error(r, r"LEUKEDGE_MAX_IMAGE_BYTES='lots' is not a number of bytes")


def test_predict_streams_results_and_keeps_json_valid_when_interrupted(smear_paths):
    """The first result is on stdout while later images are still being screened; Ctrl-C still
    leaves one valid JSON list."""
    paths = [smear_paths["Pre"][0]] * 3000
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "leukedge.cli", "predict", *map(str, paths), "--model",
                             str(RELEASE), "--json", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        head = ""
        while "\n  }" not in head:  # the end of the first object
            line = proc.stdout.readline()
            assert line, "predict ended before writing a result"
            head += line
        assert proc.poll() is None  # 3000 images cannot all be done: the result came before the end
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=TIMEOUT)  # stops after the image in hand: little output left in the pipe
        rest, err = proc.stdout.read(), proc.stderr.read()  # through the buffer readline() filled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert re.search(r"leukedge: interrupted after \d+ of 3000 images", err)
    out = json.loads(head + rest)
    assert 1 <= len(out) < len(paths)
    assert all(o["error"] is None for o in out)


def test_predict_table_mode_streams_rows_and_exits_2_on_a_bad_input(smear_paths, tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    odd = tmp_path / NON_UTF8
    odd.write_bytes(smear_paths["Early"][2].read_bytes())
    r = run_cli("predict", smear_paths["Benign"][2], fifo, odd, "--model", RELEASE, env={"PYTHONIOENCODING": "utf-8"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].startswith("image") and len(rows) == 4
    assert "FIFO" in rows[2] and rows[1].split()[2] in ("positive", "negative")
    assert "bad\\xffname.jpg" in rows[3] and rows[3].split()[2] in ("positive", "negative")
    assert "2 screened, 1 unreadable" in r.stderr


@pytest.mark.parametrize("threads,code,pattern", [
    ("0", 2, r"--threads 0: at least 1 thread is needed"),
    ("-4", 2, r"--threads -4: at least 1 thread is needed"),
    ("two", 2, r"invalid int value"),
])
def test_bad_thread_counts_are_one_line_errors_not_blamed_on_the_model(smear_paths, threads, code, pattern):
    r = run_cli("predict", smear_paths["Benign"][0], "--model", RELEASE, "--threads", threads)
    assert "Traceback" not in r.stderr and r.returncode == code
    assert re.search(pattern, r.stderr), r.stderr
    assert "cannot load this model" not in r.stderr and RELEASE.name not in r.stderr


def test_huge_thread_count_is_clamped_with_a_warning(smear_paths):
    r = run_cli("predict", smear_paths["Benign"][0], "--model", RELEASE, "--threads", 100000, "--json")
    assert r.returncode == 0, r.stderr  # no SIGSEGV (-11)
    assert "--threads 100000 is more than" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(r.stdout)[0]["error"] is None


def test_runtime_check_threads():
    assert check_threads(None) is None and check_threads(1) == 1
    assert check_threads(10**6) == max_threads()
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ConfigError):
            check_threads(bad)


# ----- data folders: check, evaluate, split ---------------------------------------------------
@pytest.fixture(scope="module")
def messy_data(tmp_path_factory, aria_dir):
    """Two classes of real smears (symlinks) plus entries that cannot be read."""
    root = tmp_path_factory.mktemp("messy")
    for c in ("Benign", "Pro"):
        (root / c).mkdir()
        for f in pick(aria_dir, c, 21, step=11):
            (root / c / f.name).symlink_to(f)
    os.mkfifo(root / "Benign" / "fifo.jpg")
    (root / "Benign" / "folder.jpg").mkdir()
    (root / "Pro" / "broken.jpg").symlink_to(root / "Pro" / "gone.jpg")
    (root / "Pro" / "text.jpg").write_text("not an image\n" * 10)
    return root


BAD_ENTRIES = {"Benign/fifo.jpg": "FIFO", "Benign/folder.jpg": "folder", "Pro/broken.jpg": "broken symbolic link",
               "Pro/text.jpg": "not an image"}


def test_data_check_reports_each_unreadable_entry_and_continues(messy_data, tmp_path):
    out = tmp_path / "check.json"
    r = run_cli("data", "check", messy_data, "--json", out)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    rep = json.loads(out.read_text())
    reasons = {u["path"]: u["reason"] for u in rep["unreadable"]}
    assert set(reasons) == set(BAD_ENTRIES)
    for path, word in BAD_ENTRIES.items():
        assert word in reasons[path]
        assert path in r.stdout
    assert "unreadable: 4" in r.stdout


def test_evaluate_all_lists_unreadable_entries_and_scores_the_rest(messy_data, tmp_path):
    out = tmp_path / "ev.json"
    r = run_cli("evaluate", "--model", RELEASE, "--data", messy_data, "--all", "--json", out, "--n-boot", 100,
                "--gradcam", 0, "--mask-corners", 0)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    res = json.loads(out.read_text())
    assert res["n"] == 42
    unreadable = {Path(p).relative_to(messy_data).as_posix(): why for p, why in res["unreadable"].items()}
    assert set(unreadable) == set(BAD_ENTRIES)
    assert "broken symbolic link" in r.stderr  # logged, not silently ignored


def test_split_refuses_an_out_that_would_overwrite_the_manifest_with_its_summary(messy_data, tmp_path):
    bad = tmp_path / "split.json"
    r = run_cli("data", "split", messy_data, "--out", bad)
    assert_one_line_error(r, r"must end in \.csv")
    assert not bad.exists()
    good = tmp_path / "my.split.csv"
    r = run_cli("data", "split", messy_data, "--out", good, "--block-size", 1)
    assert r.returncode == 0, r.stderr
    assert good.read_text().startswith("path,class,split")
    summary = json.loads((tmp_path / "my.split.json").read_text())
    assert summary["unreadable"] == 1 and "manifest_sha256" in summary  # text.jpg; the rest never listed


# ----- the CLI sweep: a wrong kind of path anywhere gives one line ---------------------------
@pytest.fixture(scope="module")
def paths(tmp_path_factory, smear_paths):
    d = tmp_path_factory.mktemp("sweep")
    (d / "file.txt").write_text("not a folder\n")
    (d / "empty").mkdir()
    (d / "noclass").mkdir()
    (d / "noclass" / "a.jpg").symlink_to(smear_paths["Benign"][0])
    (d / "dir.json").mkdir()
    for n in ("fifo", "fifo.json", "fifo.csv", "fifo.tflite"):
        os.mkfifo(d / n)
    (d / "nonutf8.json").write_bytes(b"\xff\xfe{\"a\": 1}")
    (d / "nonutf8.csv").write_bytes(b"\xff\xfepath,class,split\n")
    (d / "list.json").write_text("[1, 2]\n")
    (d / "escape.csv").write_text("path,class,split,group,sha256,phash\n../../etc/passwd,Benign,test,g,,\n")
    (d / "good" / "Benign").mkdir(parents=True)
    (d / "good" / "Benign" / "a.jpg").symlink_to(smear_paths["Benign"][0])
    return d


SWEEP = [
    ("data check {d}/missing", r"no such folder"),
    ("data check {d}/file.txt", r"is not a folder"),
    ("data check {d}/fifo", r"is not a folder"),
    ("data check {d}/empty", r"has no class subfolders"),
    ("data check {d}/noclass", r"has no class subfolders"),
    ("data check {d}/good --json {d}/dir.json", r"is a folder; the --json report must be a file path"),
    ("data check {d}/good --json {d}/file.txt/out.json", r"file.txt is a file, not a folder"),
    ("data check {d}/good --json {d}/fifo.json", r"exists and is not a regular file"),
    ("data check {d}/good --json /proc/leukedge-test.json", r"cannot write in /proc"),
    ("data split {d}/good --out {d}/x.json", r"must end in \.csv"),
    ("data split {d}/good --group-regex (", r"not a valid regular expression"),
    ("data eda {d}/good --out {d}/file.txt", r"must be a folder"),
    ("evaluate --model {d}/fifo.tflite --data {d}/good --all", r"FIFO \(named pipe\), not a regular file"),
    ("evaluate --model {release} --data {d}/file.txt --all", r"no such data folder"),
    ("evaluate --model {release} --data {d}/good --split {d}/nonutf8.csv", r"not UTF-8 text"),
    ("evaluate --model {release} --data {d}/good --split {d}/fifo.csv", r"FIFO \(named pipe\)"),
    ("evaluate --model {release} --data {d}/good --split {d}/escape.csv", r"outside the data folder"),
    ("evaluate --model {release} --data {d}/good --all --json {d}/dir.json", r"is a folder"),
    ("bench compare {d}/nonutf8.json", r"not UTF-8 text"),
    ("bench compare {d}/list.json", r"not a LeukEdge benchmark result"),
    ("bench compare {d}/fifo.json", r"FIFO \(named pipe\)"),
    ("bench compare {d}/dir.json", r"is a folder, not a regular file"),
    ("bench {release} --quick --json {d}/dir.json", r"is a folder"),
    ("bench {release} --quick --threads 0", r"not a positive number"),
    ("app --model {release} --threads 0", r"at least 1 thread"),
    ("train --data {d}/empty", r"has no class subfolders"),
    ("train --data {d}/good --split {d}/nonutf8.csv", r"not UTF-8 text"),
]


@pytest.mark.parametrize("argv,pattern", SWEEP, ids=[a.split(" {")[0] + ":" + a.split("/")[-1] for a, _ in SWEEP])
def test_cli_sweep_gives_one_line_errors(paths, argv, pattern):
    r = run_cli(*argv.format(d=paths, release=RELEASE).split(), timeout=60)
    assert_one_line_error(r, pattern)


def test_broken_pipe_is_quiet(smear_paths):
    """`leukedge predict ... | head -c 1`: no BrokenPipeError traceback."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = (f"{sys.executable} -m leukedge.cli predict {' '.join(map(str, smear_paths['Benign'][:4]))} "
           f"--model {RELEASE} --json | head -c 1")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert r.stdout == "[" and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_bounded_json_reader(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"a": 1}')
    assert read_json(p) == {"a": 1}
    with pytest.raises(DataError, match="JSON is list, expected an object"):
        (tmp_path / "l.json").write_text("[1]")
        read_json(tmp_path / "l.json")
    with pytest.raises(DataError, match="limit"):
        read_limited(p, max_bytes=3)
    with pytest.raises(DataError, match="character device"):
        read_limited("/dev/zero")
