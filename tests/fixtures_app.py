"""A tiny but real release folder for the app/predict tests, built from the ``tiny_keras`` fixture.

The release holds a float32 and a full-integer int8 ``.tflite`` with the three named
outputs of the export contract (``probability``, ``cam`` computed in-graph in closed form
from the head's weights, ``features`` = pooled features), ``spec.json`` with validated
operating points, ``card.json`` with metrics measured on real held-out smears and the
sha256 of every file, ROC/confusion figures, and the OOD gate fitted by the app's own
calibration code on real smears. Import the fixtures into a test module with
``from fixtures_app import tiny_release``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from conftest import pick

RELEASE_NAME = "tiny-release"


def export_tflite(model, size: int, calib: np.ndarray | None):
    """Convert a flat tf_keras classifier to TFLite with outputs probability, cam, features."""
    import tensorflow as tf
    import tf_keras as keras

    inner = keras.Model(model.input, [model.get_layer("features").output, model.get_layer("gap").output, model.output])
    w1, b1 = model.get_layer("head_dense").get_weights()
    w2 = model.get_layer("probability").get_weights()[0]
    w1, b1, w2 = (tf.constant(a, tf.float32) for a in (w1, b1, w2))

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def serve(image):
        fmap, pooled, prob = inner(image, training=False)
        hidden = tf.matmul(pooled, w1) + b1
        gate = tf.cast(hidden > 0, tf.float32) * tf.transpose(w2)      # d logit / d hidden (1, U)
        alpha = tf.matmul(gate, w1, transpose_b=True)                  # Grad-CAM channel weights (1, D)
        cam = tf.nn.relu(tf.reduce_sum(fmap * alpha[:, None, None, :], axis=-1))
        return {"probability": prob, "cam": cam, "features": pooled}

    conv = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], inner)
    if calib is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x[None]] for x in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _figures(folder: Path, y: np.ndarray, p: np.ndarray, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    (folder / "figures").mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 4))
    RocCurveDisplay.from_predictions(y, p, ax=ax, name="int8")
    fig.savefig(folder / "figures" / "roc.png", dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_predictions(y, (p >= threshold).astype(int), display_labels=["Benign", "ALL"], ax=ax)
    fig.savefig(folder / "figures" / "confusion_matrix.png", dpi=80)
    plt.close(fig)


def build_release(root: Path, model, spec, aria_dir: Path, lymph_dir: Path | None = None,
                  key: Path | None = None) -> Path:
    """Write a complete release folder ``root/<RELEASE_NAME>``, fit its OOD gate and sign it with
    ``key`` (the session's throwaway key: see ``release_key`` in conftest) when given."""
    from leukedge.edge_app.calibrate import calibrate_release
    from leukedge.preprocess import preprocess_file
    from leukedge.runtime import LiteRunner
    from leukedge.spec import OperatingPoint

    folder = root / RELEASE_NAME
    folder.mkdir(parents=True)
    spec = copy.deepcopy(spec)
    spec.name = RELEASE_NAME
    spec.outputs = ["probability", "cam", "features"]
    size = spec.preprocess.input_size
    calib = np.stack([preprocess_file(p, spec.preprocess) for c in ("Benign", "Early", "Pre", "Pro")
                      for p in pick(aria_dir, c, 4, step=53)])
    (folder / f"{RELEASE_NAME}.float32.tflite").write_bytes(export_tflite(model, size, None))
    (folder / f"{RELEASE_NAME}.int8.tflite").write_bytes(export_tflite(model, size, calib))

    # Card metrics: the int8 model on held-out real smears (not the fixture's training images).
    runner = LiteRunner(folder / f"{RELEASE_NAME}.int8.tflite")
    evals = [(p, spec.label_of(c)) for c in ("Benign", "Early", "Pre", "Pro") for p in pick(aria_dir, c, 6, step=61)]
    p = np.array([float(runner.run(preprocess_file(f, spec.preprocess))["probability"][0]) for f, _ in evals])
    y = np.array([t for _, t in evals])

    def sens_spec(t):
        d = p >= t
        return float(d[y == 1].mean()), float((~d)[y == 0].mean())

    spec.threshold = 0.5
    spec.operating_points = [OperatingPoint("default", 0.5, "fixed 0.5 (test fixture)", *sens_spec(0.5)),
                             OperatingPoint("high-sensitivity", 0.3, "fixed 0.3 (test fixture)", *sens_spec(0.3))]
    spec.save(folder / "spec.json")
    _figures(folder, y, p, 0.5)
    # evaluation.json by the project's own evaluator (--all over a folder of the held-out smears),
    # then the project's own card builder (hashes every model file into card.json["files"]).
    from leukedge.card import write_card
    from leukedge.evaluate import run_evaluation

    held_out = root / "held-out"
    for f, _ in evals:
        (held_out / f.parent.name).mkdir(parents=True, exist_ok=True)
        (held_out / f.parent.name / f.name).symlink_to(f)
    run_evaluation(folder, held_out, use_all=True, json_out=folder / "evaluation.json", n_boot=100)
    write_card(folder)
    train = [str(f) for c in ("Benign", "Early", "Pre", "Pro") for f in pick(aria_dir, c, 20, step=19)]
    val = [str(f) for c in ("Benign", "Early", "Pre", "Pro") for f in pick(aria_dir, c, 8, step=43)]
    checks = {"pbc-lymphocytes": [str(f) for f in sorted(lymph_dir.glob("*/*.jpg"))[::97]]} if lymph_dir else {}
    calibrate_release(folder, train, val, checks, n_components=8)
    if key is not None:
        from leukedge.release_sign import sign_release

        sign_release(folder, key)
    return folder


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory, tiny_keras, tiny_spec, aria_dir, lymph_dir, release_key) -> Path:
    """A signed tiny release folder (int8 + float32 TFLite, spec, card, figures, OOD gate)."""
    return build_release(tmp_path_factory.mktemp("models"), tiny_keras, tiny_spec, aria_dir, lymph_dir, release_key)
