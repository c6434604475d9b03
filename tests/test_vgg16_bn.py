"""VGG16-BN (BatchNorm after every conv, He init) learns from scratch where the plain VGG16 gives a
constant output: two-epoch runs of `leukedge train` on real smears at 32x32 (~1 min of CPU)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def manifest(small_dataset, tmp_path_factory) -> Path:
    from leukedge.split import SplitConfig, make_split, write_manifest

    out = tmp_path_factory.mktemp("split") / "small.split.csv"
    write_manifest(make_split(small_dataset, SplitConfig(block_size=3)), out)
    return out


def test_vgg16_bn_layout():
    import tf_keras as keras

    from leukedge.train.backbones import VGG16_BLOCKS, get_backbone

    inp = keras.Input((64, 64, 3))
    model = keras.Model(inp, get_backbone("vgg16-bn").build(inp, None))
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(convs) == len(bns) == sum(n for _, n in VGG16_BLOCKS) == 13
    assert all(isinstance(c.kernel_initializer, keras.initializers.HeNormal) and not c.use_bias for c in convs)
    assert tuple(model.output.shape[1:]) == (2, 2, 512)


def _run(preset, data, manifest, runs):
    from leukedge.train.config import from_preset
    from leukedge.train.trainer import train

    cfg = from_preset(preset, weights="none", input_size=32, batch_size=16, epochs=2, freeze_epochs=0,
                      data_dir=str(data), split=str(manifest), runs_dir=str(runs), limit_per_class=16,
                      augment={"enabled": False})
    run = train(cfg)
    with open(run / "history.csv", newline="") as fh:
        loss = [float(r["loss"]) for r in csv.DictReader(fh)]
    with open(run / "predictions.csv", newline="") as fh:
        p = np.array([float(r["probability"]) for r in csv.DictReader(fh)])
    return loss, p


def test_vgg16_bn_learns_plain_vgg16_is_constant(small_dataset, manifest, tmp_path):
    loss_bn, p_bn = _run("vgg16-bn", small_dataset, manifest, tmp_path / "bn")
    loss_plain, p_plain = _run("vgg16", small_dataset, manifest, tmp_path / "plain")
    # VGG16-BN: the training loss falls and validation/test outputs differ between images
    assert loss_bn[1] < loss_bn[0]
    assert p_bn.std() > 1e-3 and p_bn.max() - p_bn.min() > 1e-2
    # plain VGG16 (Glorot init, no BatchNorm, the `vgg16` preset's lr 1e-4): one output for every image
    assert p_plain.std() < 1e-4
    assert p_bn.std() > 100 * p_plain.std()
