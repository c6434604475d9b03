"""core/prefetch.py: results in input order, failures returned per item, bounded look-ahead."""
import threading
import time

import numpy as np
import pytest

from leukedge.errors import ImageError
from leukedge.prefetch import prefetch_map


def _work(i):
    if i % 5 == 3:
        raise ImageError(f"item {i} unreadable")
    time.sleep(0.001 * (7 - i % 7))  # later items finish first: order must still hold
    return i * i


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_order_and_failures_kept(workers):
    out = list(prefetch_map(_work, range(20), workers=workers, ahead=4, catch=(ImageError,)))
    assert [i for i, _ in out] == list(range(20))
    for i, r in out:
        if i % 5 == 3:
            assert isinstance(r, ImageError) and f"item {i}" in str(r)
        else:
            assert r == i * i


def test_uncaught_error_reaches_the_caller():
    def bad(i):
        if i == 2:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        list(prefetch_map(bad, range(5), catch=(ImageError,)))


def test_look_ahead_is_bounded_and_runs_off_the_caller_thread():
    started, threads = [], set()

    def work(i):
        started.append(i)
        threads.add(threading.get_ident())
        return i

    gen = prefetch_map(work, iter(range(100)), ahead=3)
    first = next(gen)
    time.sleep(0.05)
    assert first == (0, 0)
    assert len(started) <= 4  # never the whole input in flight
    gen.close()
    assert threading.get_ident() not in threads


def test_score_paths_same_scores_with_prefetch(tmp_path):
    """score_paths (which prefetches) gives the bytes-identical preprocessing of the serial path."""
    import cv2

    from leukedge.predictors import Predictor, score_paths
    from leukedge.preprocess import preprocess
    from leukedge.imageio import load_image
    from leukedge.spec import ModelSpec

    rng = np.random.default_rng(0)
    paths = []
    for k in range(7):
        p = tmp_path / f"{k}.png"
        cv2.imwrite(str(p), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        paths.append(str(p))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(3, str(tmp_path / "bad.png"))
    spec = ModelSpec(name="t", backbone="tiny-cnn", task="binary", class_names=["Benign", "ALL"])
    spec.preprocess.input_size = 32

    class Mean(Predictor):
        kind = "test"

        def __init__(self):
            self.spec, self.name, self.seen = spec, "mean", []

        def predict(self, x):
            self.seen.append(np.array(x))
            m = x.reshape(len(x), -1).mean(1)
            return {"probability": m, "probabilities": m[:, None]}

    pred = Mean()
    s = score_paths(pred, paths, batch_size=3)
    assert list(s.errors) == [str(tmp_path / "bad.png")]
    assert s.paths == [p for p in paths if "bad" not in p]
    serial = np.stack([preprocess(load_image(p), spec.preprocess) for p in s.paths])
    assert np.array_equal(np.concatenate(pred.seen), serial)
