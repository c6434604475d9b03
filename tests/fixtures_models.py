"""Fixtures with real tiny models: a training-run folder and a release made by `leukedge compress`.

Use them from a test module with ``pytest_plugins = ["fixtures_models"]`` (registered once, so
the session-scoped release is built once for all modules).
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("Benign", "Early", "Pre", "Pro")


def write_manifest(data_dir: Path, out: Path) -> Path:
    """A deterministic split manifest of a small data folder: per class, every 5th image to
    test, the next to val, the rest to train (real files, real hashes)."""
    rows = []
    for c in CLASSES:
        files = sorted((data_dir / c).glob("*.jpg"))
        for i, f in enumerate(files):
            split = "test" if i % 5 == 0 else ("val" if i % 5 == 1 else "train")
            rows.append({"path": f"{c}/{f.name}", "class": c, "split": split, "group": f"{c}-{i // 5}",
                         "sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "phash": ""})
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "class", "split", "group", "sha256", "phash"])
        w.writeheader()
        w.writerows(rows)
    return out


def untrained_subtype(tiny_spec, seed: int = 0):
    """(spec, Keras model) of an untrained 4-class tiny-cnn (Benign, Early, Pre, Pro)."""
    import tf_keras as keras

    from leukedge.spec import ModelSpec
    from leukedge.train.model import build_classifier

    spec = ModelSpec.from_dict(tiny_spec.to_dict())
    spec.task, spec.class_names, spec.name = "subtype", ["Benign", "Early", "Pre", "Pro"], "tiny-subtype"
    keras.utils.set_random_seed(seed)
    return spec, build_classifier(spec, dense_units=8, dropout=0.0)


def dense_block_model(spec, seed=1):
    """A DenseNet-shaped tiny classifier: conv -> BN (folds) and concat -> BN -> ReLU -> conv (standalone).

    The standalone BNs get multipliers spread over three decades, as in a trained DenseNet,
    where one per-tensor int8 scale cannot represent the small ones.
    """
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(seed)
    s = spec.preprocess.input_size
    inp = keras.Input((s, s, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)                       # folds into stem_conv
    x = layers.ReLU(name="stem_relu")(x)
    for i in range(2):
        y = layers.BatchNormalization(name=f"block{i}_bn")(x)              # standalone (after ReLU/concat)
        y = layers.ReLU(name=f"block{i}_relu")(y)
        y = layers.Conv2D(8, 3, padding="same", use_bias=False, name=f"block{i}_conv")(y)
        x = layers.Concatenate(name=f"block{i}_concat")([x, y])
    x = layers.BatchNormalization(name="final_bn")(x)                      # standalone (after concat)
    x = layers.ReLU(name="final_relu")(x)
    f = layers.Activation("linear", name="features")(x)
    p = layers.GlobalAveragePooling2D(name="gap")(f)
    h = layers.Dense(16, activation="relu", name="head_dense")(p)
    out = layers.Dense(1, activation="sigmoid", name="probability")(h)
    model = keras.Model(inp, out, name="tiny_dense")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.gamma.shape[0]
            layer.set_weights([10.0 ** rng.uniform(-2.5, 0.5, c),              # gamma
                               rng.normal(0, 0.3, c),                          # beta
                               rng.normal(0, 0.2, c),                          # moving mean
                               rng.uniform(0.05, 2.0, c)])                     # moving variance
    return model


@pytest.fixture(scope="session")
def tiny_dense_keras(tiny_spec, smear_paths):
    """The DenseNet-shaped tiny classifier fitted for a few epochs on 32 real smears (seconds), then
    given BN statistics spread like a trained DenseNet's. (Untrained, its logits are nearly one
    constant, and fake quantization of such a range passes no gradient.)"""
    import tf_keras as keras

    from leukedge.preprocess import preprocess_file

    model = dense_block_model(tiny_spec)
    xs, ys = [], []
    for c, paths in smear_paths.items():
        for p in paths:
            xs.append(preprocess_file(p, tiny_spec.preprocess))
            ys.append(tiny_spec.label_of(c))
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    x = np.stack(xs)
    # 10 epochs: with 5, oneDNN's float rounding on AVX-512 CPUs left the fake-quantized copy
    # with no gradient at all (QAT changed no weight), while the reference kernels did not
    model.fit(x, np.array(ys, np.float32), epochs=10, batch_size=8, verbose=0)
    hidden = keras.Model(model.input, model.get_layer("head_dense").output)(x).numpy()
    assert hidden.std(axis=0).max() > 0, "dead ReLU head (no gradient for QAT tests): change the seed"
    rng = np.random.default_rng(1)
    for layer in model.layers:  # trained moving statistics, multipliers spread as in dense_block_model
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * 10.0 ** rng.uniform(-2.0, 0.0, gamma.shape), beta, mean, var])
    return model


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_keras, tiny_spec, small_dataset) -> Path:
    """A training-run folder of the tiny model: best.h5, spec.json, split.csv, config.json."""
    from leukedge.spec import ModelSpec

    run = tmp_path_factory.mktemp("runs") / "20260101-000000-tiny-cnn-32"
    run.mkdir()
    tiny_keras.save(run / "best.h5")
    spec = ModelSpec.from_dict({**tiny_spec.to_dict(), "name": run.name})
    spec.save(run / "spec.json")
    write_manifest(small_dataset, run / "split.csv")
    (run / "config.json").write_text(json.dumps({"backbone": "tiny-cnn", "data_dir": str(small_dataset)}))
    return run


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory, tiny_run, release_key) -> tuple[Path, dict]:
    """`run_compress` on the tiny run: float32, int8 and 50%-pruned int8 with parity (no selective search),
    signed with the session's throwaway key."""
    from leukedge.compress.pipeline import CompressConfig, run_compress
    from leukedge.compress.recipe import PruneRecipe
    from leukedge.release_sign import sign_release

    out = tmp_path_factory.mktemp("models") / "tiny-binary"
    cfg = CompressConfig(source=str(tiny_run), out=str(out), variants=["float32", "int8"],
                         prune=PruneRecipe(sparsity=0.5, epochs=1, batch_size=8, min_weights=0), calib=60,
                         selective=False, n_boot=200)
    summary = run_compress(cfg)
    sign_release(out, release_key)
    return out, summary
