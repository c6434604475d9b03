"""Shared fixtures: real smears from ../shared/data (small subsets) and a tiny real model."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import leukedge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any TensorFlow import)
from leukedge.trust import ENV_TRUSTED_KEYS, private_pem, public_pem

SHARED_DATA = Path(os.environ.get("LEUKEDGE_SHARED_DATA", "../shared/data"))
ARIA = SHARED_DATA / "aria-all"
LYMPH = SHARED_DATA / "pbc-lymphocytes"


def _session_key() -> Path:
    """A throwaway Ed25519 key pair for this test session, made at import: the private key as a PEM
    file, the public half in a trust folder named by $LEUKEDGE_TRUSTED_KEYS. Set before any test
    module is imported, so environments copied at import time (CLI subprocesses) trust it too."""
    root = Path(tempfile.mkdtemp(prefix="leukedge-test-keys-"))
    atexit.register(shutil.rmtree, root, True)
    key = Ed25519PrivateKey.generate()
    (root / "trusted").mkdir()
    (root / "trusted" / "test-session.pub").write_bytes(public_pem(key))
    path = root / "test-session.key"
    path.write_bytes(private_pem(key))
    os.environ[ENV_TRUSTED_KEYS] = str(root / "trusted")
    return path


SESSION_KEY = _session_key()


@pytest.fixture(scope="session")
def release_key() -> Path:
    """The session's throwaway Ed25519 private key (PEM file): releases the fixtures sign with it verify."""
    return SESSION_KEY


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.fail(f"real data folder {path} is missing (tests run from the repo root with ../shared/data beside it)")
    return path


@pytest.fixture(scope="session")
def aria_dir() -> Path:
    return _require(ARIA).resolve()


@pytest.fixture(scope="session")
def lymph_dir() -> Path:
    return _require(LYMPH).resolve()


def pick(folder: Path, cls: str, n: int, step: int = 37) -> list[Path]:
    """n files of one class, spread over the file numbers (deterministic)."""
    files = sorted((folder / cls).glob("*.jpg"))
    return files[::step][:n] if len(files[::step]) >= n else files[:n]


@pytest.fixture(scope="session")
def smear_paths(aria_dir) -> dict[str, list[Path]]:
    """8 real smears per class."""
    return {c: pick(aria_dir, c, 8) for c in ("Benign", "Early", "Pre", "Pro")}


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, aria_dir) -> Path:
    """A small real dataset folder (symlinks to 40 smears of each class)."""
    root = tmp_path_factory.mktemp("aria-small")
    for c in ("Benign", "Early", "Pre", "Pro"):
        (root / c).mkdir()
        for f in pick(aria_dir, c, 40, step=9):
            (root / c / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="session")
def tiny_spec():
    from leukedge.preprocess import PreprocessConfig
    from leukedge.spec import ModelSpec

    return ModelSpec(name="tiny", backbone="tiny-cnn", preprocess=PreprocessConfig(input_size=32))


@pytest.fixture(scope="session")
def tiny_keras(tiny_spec, smear_paths):
    """A tiny-cnn classifier fitted for a few epochs on 32 real smears at 32x32 (seconds)."""
    import tensorflow as tf

    from leukedge.preprocess import preprocess_file
    from leukedge.train.model import build_classifier

    tf.keras.utils.set_random_seed(0)
    model = build_classifier(tiny_spec, dense_units=16, dropout=0.0)
    xs, ys = [], []
    for c, paths in smear_paths.items():
        for p in paths:
            xs.append(preprocess_file(p, tiny_spec.preprocess))
            ys.append(tiny_spec.label_of(c))
    x, y = np.stack(xs), np.array(ys, np.float32)
    import tf_keras as keras

    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    return model
