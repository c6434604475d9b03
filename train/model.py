"""The classifier: backbone -> global average pooling -> Dense(512, ReLU) -> Dropout -> head.

Layer names are part of the contract with compression (Grad-CAM export) and the spec:
``features`` is the last feature map, ``gap`` the pooled vector, ``head_dense`` the hidden
layer and ``probability`` the output (sigmoid for binary, softmax for subtype).
"""
from __future__ import annotations

from leukedge.spec import ModelSpec

from .backbones import get_backbone

FEATURE_LAYER = "features"
POOL_LAYER = "gap"
HIDDEN_LAYER = "head_dense"
OUTPUT_LAYER = "probability"


def build_classifier(spec: ModelSpec, weights=None, dense_units: int = 512, dropout: float = 0.5):
    """Build the flat tf_keras classifier for ``spec``.

    Args:
        spec: the model spec (backbone, task, classes, input size).
        weights: resolved weights for the backbone (None = random init).
        dense_units: hidden units of the head (the paper's 512).
        dropout: dropout rate of the head (the paper's 0.5).
    """
    import tf_keras as keras
    from tf_keras import layers

    bb = get_backbone(spec.backbone)
    s = spec.preprocess.input_size
    inputs = keras.Input((s, s, 3), name="image")
    fmap = bb.build(inputs, weights)
    fmap = layers.Activation("linear", name=FEATURE_LAYER)(fmap)
    pooled = layers.GlobalAveragePooling2D(name=POOL_LAYER)(fmap)
    h = layers.Dense(dense_units, activation="relu", name=HIDDEN_LAYER)(pooled)
    h = layers.Dropout(dropout, name="head_dropout")(h)
    if spec.task == "binary":
        out = layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)(h)
    else:
        out = layers.Dense(len(spec.class_names), activation="softmax", name=OUTPUT_LAYER)(h)
    model = keras.Model(inputs, out, name=f"leukedge_{spec.backbone.replace('-', '_')}")
    spec.head = {"feature_layer": FEATURE_LAYER, "pool_layer": POOL_LAYER, "hidden_layer": HIDDEN_LAYER,
                 "output_layer": OUTPUT_LAYER, "dense_units": dense_units, "dropout": dropout,
                 "feature_shape": [int(d) for d in fmap.shape[1:]]}
    return model
