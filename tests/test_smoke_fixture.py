import numpy as np


def test_tiny_keras_fixture_predicts_probabilities(tiny_keras, tiny_spec):
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    p = tiny_keras.predict(x, verbose=0)
    assert p.shape == (2, 1)
    assert np.all((p >= 0) & (p <= 1))
    assert tiny_spec.head["feature_layer"] == "features"
