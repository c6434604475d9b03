"""The one heatmap module: the renderer the app, the reports and the bench share, and the
closed-form Grad-CAM (numpy and TensorFlow builders) against a GradientTape."""
from __future__ import annotations

import numpy as np

from fixtures_app import tiny_release  # noqa: F401  (fixture)


def test_normalise_is_relu_over_max_and_resized():
    from leukedge.heatmap import normalise

    cam = np.array([[0.0, 1.0], [2.0, -3.0]], np.float32)
    out = normalise(cam, (2, 2))
    assert np.allclose(out, [[0.0, 0.5], [1.0, 0.0]])
    assert np.array_equal(normalise(cam * 7.0, (8, 6)), normalise(cam, (8, 6)))  # scale-free
    assert normalise(cam, (8, 6)).shape == (6, 8)
    assert not normalise(np.full((3, 3), -1.0), (5, 5)).any()  # nothing positive: no heat
    assert normalise(np.arange(16.0).reshape(1, 16), (4, 4)).max() == 1.0  # a flat square map


def test_overlay_marks_the_hot_region():
    from leukedge.heatmap import overlay

    cam = np.zeros((4, 4), np.float32)
    cam[0, 3] = 5.0  # hot top-right cell
    img = np.full((32, 32, 3), 128, np.uint8)
    over = overlay(img, cam)
    assert over.shape == img.shape and over.dtype == np.uint8
    assert over[2, 29, 0] > over[29, 2, 0]  # red (JET high) at the hot corner, blue at the cold one
    assert over[29, 2, 2] > over[29, 2, 0]


def test_app_report_and_bench_draw_identical_pixels(tiny_release, smear_paths):  # noqa: F811
    """The same map through the app's Screening, the report's gallery renderer and the bench's
    end-to-end stage gives the same pixels."""
    import leukedge.benchmarks.e2e as e2e
    import leukedge.report as report
    from leukedge.edge_app.inference import Screener
    from leukedge.preprocess import normalize

    screener = Screener(tiny_release, num_threads=1)
    for path in smear_paths["Pro"][:2] + smear_paths["Benign"][:1]:
        res = screener.screen_image(path)
        cam = screener.runner.run(normalize(res.image, screener.spec.preprocess))["cam"]
        app = res.overlay()
        assert app is not None and np.abs(app.astype(int) - res.image).mean() > 5
        assert np.array_equal(app, report.overlay(res.image, cam))
        assert np.array_equal(app, e2e.overlay(res.image, cam))


def test_closed_form_cams_match_gradient_tape(tiny_keras, smear_paths, tiny_spec):
    """numpy closed form (leukedge.heatmap) == TensorFlow builder (compress.cam_graph) == GradientTape."""
    import tensorflow as tf
    import tf_keras as keras

    from leukedge.compress.cam_graph import cam_scores
    from leukedge.heatmap import closed_form_cams
    from leukedge.preprocess import preprocess_file
    from leukedge.train.gradcam import GradCAM

    x = np.stack([preprocess_file(p, tiny_spec.preprocess) for p in smear_paths["Pre"][:3]])
    hidden, out = tiny_keras.get_layer("head_dense"), tiny_keras.get_layer("probability")
    fmap, z = keras.Model(tiny_keras.input, [tiny_keras.get_layer("features").output, hidden.output])(x)
    fmap, z = fmap.numpy(), z.numpy()
    w1, w2 = hidden.kernel.numpy(), out.kernel.numpy()
    ref, _ = GradCAM(tiny_keras)(x)
    mine = closed_form_cams(fmap, z, w1, w2)[..., 0]
    assert mine.shape == ref.shape and ref.max() > 0
    assert np.allclose(mine, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))
    n, h, w, d = fmap.shape
    active = np.repeat((z > 0).astype(np.float32), h * w, axis=0)
    tf_maps = tf.nn.relu(cam_scores(tf.constant(fmap.reshape(-1, d)), tf.constant(active), w1, w2, h * w))
    assert np.allclose(tf_maps.numpy().reshape(n, h, w), mine, rtol=1e-4, atol=1e-6 * float(ref.max()))
