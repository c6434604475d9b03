"""Compare heatmap methods of a released model on its validation split (issue 23).

The Keras model is recovered from the release's float32 ``.tflite``
(:func:`leukedge.compress.recover.keras_from_float_tflite`, checked against the file), so no
training run is needed. For each method the maps of up to ``--n`` validation images are scored
with :mod:`leukedge.heatmap_quality` (lift, pointing game, genericity; deletion/insertion on
``--n-faith`` leukemia-positive images, with the float32 file as the model, recording the
screening probability as ``leukedge evaluate`` does, and for a subtype model also the predicted
subtype's as ``class_*``).

Methods (layers: the last layer of each spatial size, 7x7 = the ``features`` layer):

- ``gradcam7``: today's map (Grad-CAM at the 7x7 features; the in-graph closed form).
- ``gradcampp7``: Grad-CAM++ at 7x7 (Chattopadhyay et al., 2018; exp-score closed form of alpha).
- ``gradcam14`` / ``layercam14`` / ``layercam28``: Grad-CAM / Layer-CAM (Jiang et al., 2021) at the
  14x14 / 28x28 layer.
- ``multi``: mean of the max-normalised Layer-CAM maps at 7, 14 and 28 (at 28x28).
- ``guided7x14``: closed form without gradients below 7x7: the 7x7 Grad-CAM upsampled to 14x14
  times the channel mean of the 14x14 activations (normalised), i.e. today's map sharpened by
  where the 14x14 layer is active.
- ``act14``: the control for ``guided7x14``: the channel mean of the 14x14 activations alone (no
  class, no head): how much of the localisation is a class-agnostic "something is stained here".

Usage::

    python -m leukedge.compress.heatmap_options models/efficientnet-lite0-binary --n 100 --n-faith 30 \\
        --out docs/heatmaps/efficientnet-lite0-binary.csv
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from pathlib import Path

import numpy as np

from leukedge import heatmap_quality as HQ
from leukedge.evaluate import Item, binary_truth, default_split, load_model, select_items
from leukedge.heatmap import guided_map
from leukedge.heatmap_eval import image_curves
from leukedge.imageio import load_image
from leukedge.preprocess import normalize, preprocess_uint8

from .cam_graph import feature_side, guide_layer, last_layer_at
from .recover import keras_from_float_tflite

log = logging.getLogger(__name__)

METHODS = ("gradcam7", "gradcampp7", "guided7x14", "act14", "gradcam14", "layercam14", "layercam28", "multi")


def pick_layers(model, backbone: str | None = None) -> dict[int, str]:
    """The layers at 1x, 2x and 4x the feature map's size, keyed 7, 14, 28 (their sides at 224):
    ``features``, the ``guided7x14`` guide (:func:`leukedge.compress.cam_graph.guide_layer`: the
    backbone registry's, else the last layer of that size) and the last layer at 4x."""
    side = feature_side(model)
    return {7: "features", 14: guide_layer(model, backbone), 28: last_layer_at(model, 4 * side) or "features"}


class Maps:
    """Every method's maps from one GradientTape pass over the three layers."""

    def __init__(self, model, layers: dict[int, str], binary: bool):
        import tensorflow as tf
        import tf_keras as keras

        out_layer = model.get_layer("probability")
        self.tf, self.binary = tf, binary
        self.layers = layers
        self.model = keras.Model(model.inputs, [model.get_layer(layers[s]).output for s in (7, 14, 28)]
                                 + [out_layer.input, out_layer.output])
        self.kernel, self.bias = out_layer.kernel, out_layer.bias

    def __call__(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        tf = self.tf
        xt = tf.convert_to_tensor(x)
        t0 = time.perf_counter()
        self.model(xt, training=False)
        t_fwd = (time.perf_counter() - t0) * 1000 / len(x)
        t0 = time.perf_counter()
        with tf.GradientTape() as tape:
            a7, a14, a28, hidden, prob = self.model(xt, training=False)
            logits = tf.matmul(hidden, self.kernel) + self.bias
            idx = np.zeros(len(x), np.int32) if self.binary else np.argmax(prob.numpy(), -1).astype(np.int32)
            score = tf.gather(logits, idx, axis=1, batch_dims=1)
        g7, g14, g28 = [g.numpy() for g in tape.gradient(score, [a7, a14, a28])]
        t_grad = (time.perf_counter() - t0) * 1000 / len(x)
        a7, a14, a28 = a7.numpy(), a14.numpy(), a28.numpy()
        relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
        out, ms = {}, {}
        t = time.perf_counter()
        out["gradcam7"] = relu((g7.mean((1, 2), keepdims=True) * a7).sum(-1))
        ms["gradcam7"] = (time.perf_counter() - t) * 1000 / len(x)
        t = time.perf_counter()
        g2, g3 = g7 ** 2, g7 ** 3
        den = 2 * g2 + (a7.sum((1, 2), keepdims=True) * g3)
        alpha = np.where(den != 0, g2 / np.where(den != 0, den, 1), 0)
        w = (alpha * relu(g7)).sum((1, 2), keepdims=True)
        out["gradcampp7"] = relu((w * a7).sum(-1))
        ms["gradcampp7"] = (time.perf_counter() - t) * 1000 / len(x)
        t = time.perf_counter()
        act14 = a14.mean(-1)
        out["guided7x14"] = np.stack([guided_map(c, a) for c, a in zip(out["gradcam7"], a14)])
        ms["guided7x14"] = ms["gradcam7"] + (time.perf_counter() - t) * 1000 / len(x)
        out["act14"] = relu(act14)
        ms["act14"] = 0.0
        out["gradcam14"] = relu((g14.mean((1, 2), keepdims=True) * a14).sum(-1))
        out["layercam14"] = relu((relu(g14) * a14).sum(-1))
        out["layercam28"] = relu((relu(g28) * a28).sum(-1))
        lc7 = relu((relu(g7) * a7).sum(-1))
        size = a28.shape[1]
        norm = lambda m: HQ.heat_at(m, (size, size))  # noqa: E731
        out["multi"] = np.stack([(norm(p) + norm(q) + norm(r)) / 3 for p, q, r in
                                 zip(lc7, out["layercam14"], out["layercam28"])])
        for k in ("gradcam14", "layercam14", "layercam28", "multi"):
            ms[k] = t_grad  # needs the backward pass down to that layer (measured: the whole tape)
        ms["_forward"] = t_fwd
        return out, ms


def tail_params(model, layer_name: str) -> int:
    """Weights after ``layer_name`` (what an in-graph backward pass from the logit to it reuses)."""
    names = [lay.name for lay in model.layers]
    i = names.index(layer_name)
    return int(sum(np.prod(w.shape) for lay in model.layers[i + 1:] for w in lay.weights))


def run(release: Path, data: Path, n: int, n_faith: int, out_csv: Path | None, seed: int = 0,
        methods=METHODS) -> list[dict]:
    pred, info = load_model(release, "float32")
    spec = pred.spec
    items, _ = select_items(data, spec, default_split(info), split="val")
    y_all = binary_truth(items, spec)
    # a subset: every leukemia-positive image spread evenly first, then benign ones, n in total
    pos = [items[i] for i in np.flatnonzero(y_all == 1)]
    neg = [items[i] for i in np.flatnonzero(y_all == 0)]
    n_neg = min(len(neg), n // 5)
    take = [pos[int(i)] for i in np.linspace(0, len(pos) - 1, min(len(pos), n - n_neg))] + neg[:n_neg]
    y = binary_truth(take, spec)
    cfg = spec.preprocess
    u8 = np.stack([preprocess_uint8(load_image(it.abspath), cfg) for it in take])
    x = normalize(u8, cfg)
    model = keras_from_float_tflite(Path(pred.runner.path).read_bytes(), spec, check_images=x[:4])
    layers = pick_layers(model, spec.backbone)
    log.info("layers: %s", layers)
    maps_fn = Maps(model, layers, spec.task == "binary")
    maps, ms = {m: [] for m in METHODS}, {m: [] for m in (*METHODS, "_forward")}
    probs = []
    for s in range(0, len(x), 16):
        mb, tb = maps_fn(x[s:s + 16])
        for m in METHODS:
            maps[m].append(mb[m])
        for m in ms:
            ms[m].append(tb[m])
        probs.append(pred.predict(x[s:s + 16])["probabilities"])
    probs = np.concatenate(probs)
    faith = set(int(i) for i in np.flatnonzero(y == 1)[np.linspace(0, int(np.sum(y == 1)) - 1,
                                                                   min(n_faith, int(np.sum(y == 1)))).astype(int)])

    rows = []
    for m in methods:
        cams = np.concatenate(maps[m])
        per = []
        small = np.stack([HQ.heat_at(c, (56, 56)) for c in cams])
        for i in range(len(take)):
            rec = HQ.localisation(u8[i], cams[i])
            if i in faith:  # the curves of `leukedge evaluate`: the screening probability (+ class_* for subtype)
                rec.update(image_curves(pred, cfg, u8[i], HQ.heat_at(cams[i], u8.shape[1:3]), probs[i], seed=seed + i))
            per.append(rec)
        for rec, r in zip(per, HQ.generic_correlation(small)):
            rec["generic_r"] = float(r)
        pos_per = [r for r, yy in zip(per, y) if yy == 1]
        keys = HQ.LOCALISATION_KEYS + HQ.FAITHFULNESS_KEYS + HQ.CLASS_FAITHFULNESS_KEYS
        summ = HQ.summarise(pos_per, keys, 1000, seed)
        layer = {"gradcam7": 7, "gradcampp7": 7, "guided7x14": 14, "act14": 14, "gradcam14": 14, "layercam14": 14,
                 "layercam28": 28, "multi": 28}[m]
        row = {"model": spec.name, "method": m, "layer": layers[layer], "map_size": int(cams.shape[1]),
               "n_positive": len(pos_per), "n_faith": len(faith),
               "ms_per_image_tf_cpu": round(float(np.mean(ms[m])), 3),
               "ms_forward_tf_cpu": round(float(np.mean(ms["_forward"])), 3),
               "tail_weights_after_layer": 0 if m in ("gradcam7", "gradcampp7", "guided7x14")
               else 0 if m == "act14" else tail_params(model, layers[layer])}
        for k, v in summ.items():
            row[k] = round(v["value"], 4)
            row[k + "_lo"], row[k + "_hi"] = (round(c, 4) if c is not None else None for c in v["ci95"])
        rows.append(row)
        log.info("%s %s lift %.3f pointing %.3f del-rand %s", spec.name, m, row["lift"], row["pointing"],
                 row.get("deletion_vs_random"))
    if out_csv:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(out_csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    return rows


def main(argv=None) -> int:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("release")
    ap.add_argument("--data", default="../shared/data/aria-all")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--n-faith", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        ap.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    for r in run(Path(a.release), Path(a.data), a.n, a.n_faith, a.out, methods=methods):
        print({k: r.get(k) for k in ("method", "layer", "lift", "pointing", "pointing_chance", "generic_r",
                                     "deletion_vs_random", "insertion_vs_random", "ms_per_image_tf_cpu")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
