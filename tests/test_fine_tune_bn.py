"""`fine_tune_bn`: BatchNorm layers train in the fine-tuning phase only when asked (progressive resizing)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("fine_tune_bn", [False, True])
def test_fine_tune_bn_controls_batchnorm(fine_tune_bn):
    import tf_keras as keras

    from leukedge.train.config import from_preset
    from leukedge.train.dataset import spec_for
    from leukedge.train.trainer import build_model, plan_phases, set_trainable

    cfg = from_preset("smoke", weights="/nonexistent-but-pretrained.h5", freeze_epochs=1, epochs=2,
                      fine_tune_bn=fine_tune_bn)
    phases = plan_phases(cfg)
    assert [p.name for p in phases] == ["frozen", "finetune"]
    model = build_model(cfg, spec_for(cfg, ["Benign", "Early"]), None)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert bns and convs
    set_trainable(model, phases[0], cfg)
    assert not any(l.trainable for l in bns + convs)
    set_trainable(model, phases[1], cfg)
    assert all(l.trainable for l in convs)
    assert all(l.trainable == fine_tune_bn for l in bns)
