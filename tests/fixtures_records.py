"""Helpers for the records tests: the committed binary release screening real smears.

Screenings are computed once per session (the release's int8 file on LiteRT), so every
test works with real statuses: a benign smear (negative), a leukemia smear (positive), a
normal lymphocyte crop from another dataset (out-of-distribution, with the score the gate
hides) and a file that is not an image (unreadable).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

RELEASE = Path("models/efficientnet-lite0-binary")


@pytest.fixture(scope="session")
def screener():
    from leukedge.edge_app.inference import Screener

    return Screener(RELEASE)


@pytest.fixture(scope="session")
def shots(screener, aria_dir, lymph_dir, tmp_path_factory):
    """``{name: (path or frame, Screening)}`` for negative, negative2, positive, ood, unreadable, retake."""
    bad = tmp_path_factory.mktemp("bad") / "not-an-image.jpg"
    bad.write_bytes(b"this is not a JPEG" * 10)
    paths = {"negative": aria_dir / "Benign" / "WBC-Benign-163.jpg",
             "negative2": aria_dir / "Benign" / "WBC-Benign-014.jpg",
             "positive": aria_dir / "Pre" / "WBC-Malignant-Pre-001.jpg",
             "ood": sorted((lymph_dir / "lymphocyte").glob("*.jpg"))[0],
             "unreadable": bad}
    out = {k: (p, screener.screen_image(p)) for k, p in paths.items()}
    dark = np.full((224, 224, 3), 3, np.uint8)  # a camera frame with the lamp off
    out["retake"] = (dark, screener.screen_image(dark))
    assert out["retake"][1].decision == "retake" and out["retake"][1].probability is not None
    assert out["negative"][1].decision == "negative" and out["negative2"][1].decision == "negative"
    assert out["positive"][1].decision == "positive"
    assert out["ood"][1].decision == "out-of-distribution" and out["ood"][1].probability > 0.5
    assert out["unreadable"][1].error
    return out


def fill_sample(store, shots, sample_id, names, release=None):
    """A finished sample with one field per name in ``names``; returns its record."""
    s = store.start_sample(sample_id)
    for n in names:
        path, res = shots[n]
        store.add_field(s.uid, res, source=path, release=release)
    store.finish_sample(s.uid)
    return store.sample(s.uid)
