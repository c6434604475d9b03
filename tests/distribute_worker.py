"""Entry point of one `leukedge train` process in tests/test_distribute.py.

Registers ``tiny-plain`` (a tiny CNN without BatchNormalization, whose result does not depend
on how a global batch is split over replicas) and runs the real ``leukedge train`` CLI with the
remaining arguments; TF_CONFIG / --workers come from the test.
"""
from __future__ import annotations

import sys

from leukedge.cli import main
from leukedge.train.backbones import Backbone, register


def tiny_plain(inputs, weights):
    from tf_keras import layers

    x = inputs
    for i, ch in enumerate((8, 16)):
        x = layers.Conv2D(ch, 3, padding="same", activation="relu", name=f"plain_conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"plain_pool{i}")(x)
    return x


if __name__ == "__main__":
    register(Backbone("tiny-plain", tiny_plain, 32, "unit", (), "tiny CNN without BatchNorm (distribution tests)"))
    sys.exit(main(sys.argv[1:]))
