"""The int8 file's Grad-CAM branch runs in float on the int8 feature map, with the head's own
int8 weights (hybrid fully connected op) and a float32 ``cam`` output."""
from __future__ import annotations

import numpy as np
import pytest

pytest_plugins = ["fixtures_models"]


@pytest.fixture(scope="module")
def batch(smear_paths, tiny_spec):
    from leukedge.preprocess import preprocess_file

    return np.stack([preprocess_file(p, tiny_spec.preprocess) for ps in smear_paths.values() for p in ps])


@pytest.fixture(scope="module")
def files(tiny_dense_keras, tiny_spec, batch, tmp_path_factory):
    """float32, int8 with the float branch (default) and all-int8, of the DenseNet-shaped model."""
    from leukedge.compress.export import calibrate, convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData

    cal = calibrate(tiny_dense_keras, tiny_spec, QuantizationConfig.for_int8(RepresentativeData(batch[::2])))
    record: dict = {}
    data = {"f32": convert(tiny_dense_keras, tiny_spec, QuantizationConfig.for_float32()),
            "float_cam": quantize_calibrated(cal, tiny_spec, record=record),
            "int8_cam": quantize_calibrated(cal, tiny_spec, float_cam=False)}
    folder = tmp_path_factory.mktemp("cam")
    paths = {}
    for k, v in data.items():
        paths[k] = folder / f"{k}.tflite"
        paths[k].write_bytes(v)
    return paths, record, cal


def _kernel_copies(path, shape) -> int:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    shapes = {tuple(shape), tuple(shape[::-1])}
    return len({t.buffer for t in model.subgraphs[0].tensors
                if tuple(int(d) for d in t.shape) in shapes and model.buffers[t.buffer].data is not None
                and len(model.buffers[t.buffer].data)})


def test_float_branch_shares_the_head_kernel_and_returns_a_float_map(files, tiny_dense_keras):
    from leukedge.runtime import LiteRunner

    paths, record, _ = files
    kernel = tuple(tiny_dense_keras.get_layer("head_dense").kernel.shape)
    assert _kernel_copies(paths["float_cam"], kernel) == 1                 # no float copy of W1
    assert record["float_cam"] and record["shared_weights"][0]["shape"] == list(kernel[::-1])
    assert record["float_outputs"] == ["cam"] and record["float_bytes_dropped"] == 4 * kernel[0] * kernel[1]
    size = {k: p.stat().st_size for k, p in paths.items()}
    assert size["float_cam"] < size["int8_cam"] + 2 * kernel[0] * kernel[1]  # well under a float copy (4 B/weight)
    runner = LiteRunner(paths["float_cam"])
    dtypes = {n: np.dtype(d["dtype"]).name for n, d in runner.outputs.items()}
    assert dtypes == {"probability": "int8", "logit": "int8", "features": "int8", "cam": "float32"}
    assert runner.input_dtype == np.int8


def test_float_branch_is_grad_cam_of_the_int8_feature_map(files, batch):
    """The map equals Grad-CAM computed in numpy from the file's own int8 last feature map and
    the head's dequantized int8 weights, and is at least as close to float32 as the int8 map."""
    from ai_edge_litert.interpreter import Interpreter

    from leukedge.compress.parity import heatmap_parity
    from leukedge.runtime import LiteRunner

    paths, record, _ = files
    out = {k: LiteRunner(paths[k]).predict(batch) for k in ("f32", "float_cam", "int8_cam")}
    r = {k: heatmap_parity(out["f32"]["cam"], out[k]["cam"])[0]["mean_correlation"] for k in ("float_cam", "int8_cam")}
    assert r["float_cam"] >= r["int8_cam"] - 0.01 and r["float_cam"] > 0.9

    # numpy Grad-CAM from the int8 file's tensors
    it = Interpreter(model_path=str(paths["float_cam"]), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    det = {d["index"]: d for d in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001
    fc = [o for o in ops if o["op_name"] == "FULLY_CONNECTED"]
    hybrid = [o for o in fc if det[o["inputs"][0]]["dtype"] == np.float32 and det[o["inputs"][1]]["dtype"] == np.int8]
    assert len(hybrid) == 1
    a_idx, w_idx = hybrid[0]["inputs"][0], hybrid[0]["inputs"][1]
    scales = det[w_idx]["quantization_parameters"]["scales"]
    assert np.ptp(scales) == 0    # one scale (per tensor): tflite-runtime 2.14's hybrid kernel reads no per-channel scales
    w = it.get_tensor(w_idx).astype(np.float32) * scales[:, None]
    runner = LiteRunner(paths["float_cam"])
    runner.interpreter = it
    for x, cam in zip(batch[:8], out["float_cam"]["cam"][:8]):
        runner.set_input(x)
        it.invoke()
        a = it.get_tensor(a_idx).reshape(-1, w.shape[1])            # dequantized int8 feature map
        za = a @ w.T                                                # (h w, U)
        assert np.allclose(it.get_tensor(hybrid[0]["outputs"][0]).reshape(za.shape), za,
                           atol=0.02 * np.abs(za).max() + 1e-6)     # hybrid kernel: inputs re-quantized per row
    assert record["shared_weights"]


def test_a_head_kept_in_float_lends_the_branch_its_float_kernel(files, tiny_spec, tiny_dense_keras, batch, tmp_path):
    """Selective int8 may keep the head's hidden layer in float (the debugger ranks it worst on
    DenseNet201): there is no int8 W1 then, and the branch reads the head's float W1 instead of
    falling back to an all-int8 map (session 17: heatmap r 0.97 -> 0.88 on that release)."""
    from leukedge.compress.cam_branch import cam_only_tensors
    from leukedge.compress.export import quantize_calibrated
    from leukedge.compress.parity import heatmap_parity
    from leukedge.runtime import LiteRunner
    from leukedge.tflite_graph import opcode_names, read_model, tensor_name

    paths, _, cal = files
    model = read_model(cal)
    graph, names, cam = model.subgraphs[0], opcode_names(model), cam_only_tensors(cal)
    head = [tensor_name(graph.tensors[op.outputs[0]]) for op in graph.operators
            if names[op.opcodeIndex] == "FULLY_CONNECTED" and "head_dense" in tensor_name(graph.tensors[op.outputs[0]])
            and tensor_name(graph.tensors[op.outputs[0]]) not in cam]
    assert len(head) == 1
    record: dict = {}
    path = tmp_path / "float-head.tflite"
    path.write_bytes(quantize_calibrated(cal, tiny_spec, denylisted_nodes=head, record=record))
    assert record["float_cam"] is True and record["shared_weights"][0]["float_head"]
    kernel = tuple(tiny_dense_keras.get_layer("head_dense").kernel.shape)
    assert _kernel_copies(path, kernel) == 1                               # one float W1, used by head and branch
    out = LiteRunner(path).predict(batch)
    assert out["cam"].dtype == np.float32
    ref = LiteRunner(paths["f32"]).predict(batch)["cam"]
    assert heatmap_parity(ref, out["cam"])[0]["mean_correlation"] > 0.9

def test_a_float_weight_without_an_int8_twin_is_refused(files, tiny_spec):
    """The float branch's weight must equal the head's int8 weight to within half a step per
    channel; a tampered twin is not shared (small weights stay float, large ones are an error)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from leukedge.compress.cam_branch import cam_only_tensors, float_cam_branch
    from leukedge.compress.export import quantize_calibrated
    from leukedge.errors import ModelError

    _, _, cal = files
    before = quantize_calibrated(cal, tiny_spec, denylisted_nodes=sorted(cam_only_tensors(cal)), float_cam=False)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(before))
    g = model.subgraphs[0]
    int8_fc_weights = [g.tensors[op.inputs[1]] for op in g.operators
                       if len(op.inputs) > 1 and g.tensors[op.inputs[1]].type == 9  # INT8
                       and model.buffers[g.tensors[op.inputs[1]].buffer].data is not None
                       and g.tensors[op.inputs[1]].quantization.scale is not None
                       and len(g.tensors[op.inputs[1]].shape) == 2]
    assert int8_fc_weights
    for t in int8_fc_weights:                                       # tamper: flip every weight's sign
        buf = model.buffers[t.buffer]
        buf.data = (-np.frombuffer(bytes(bytearray(buf.data)), np.int8).astype(np.int16)).clip(-127, 127).astype(np.int8)
    tampered = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    out, info = float_cam_branch(tampered)
    assert info["shared_weights"] == [] and len(out) > len(tampered) - 64      # kept its small float copy
    with pytest.raises(ModelError, match="no int8 twin"):
        float_cam_branch(tampered, max_float_bytes=0)
    shared, info = float_cam_branch(before)
    assert info["shared_weights"] and len(shared) < len(before)


def test_an_old_release_without_a_shareable_kernel_falls_back_to_an_int8_branch(smear_paths):
    """The first EfficientNet-Lite0 release computed ``alpha = W1 @ g`` (a transposed copy of
    W1): there is no int8 twin to share, so re-quantizing it keeps the branch int8 and says why,
    instead of adding a 2.5 MiB float copy."""
    from pathlib import Path

    from leukedge.compress.export import calibrate_tflite, quantize_calibrated
    from leukedge.compress.quantization import RepresentativeData
    from leukedge.preprocess import preprocess_file
    from leukedge.spec import ModelSpec

    rel = Path(__file__).parent / "data" / "legacy" / "efficientnet-lite0-binary"  # that release's files
    spec = ModelSpec.load(rel)
    x = np.stack([preprocess_file(p, spec.preprocess) for ps in smear_paths.values() for p in ps[:1]])
    cal = calibrate_tflite((rel / f"{rel.name}.float32.tflite").read_bytes(), RepresentativeData(x))
    record: dict = {}
    q = quantize_calibrated(cal, spec, record=record)
    assert record["float_cam"] is False and "no int8 twin" in record["reason"]
    assert len(q) < 0.3 * (rel / f"{rel.name}.float32.tflite").stat().st_size
