"""Where a ``.tflite`` file's bytes go, and the size targets of a release.

An int8 file is not simply a quarter of its float32 file: besides the int8 weights it stores
int32 biases and, for each per-channel quantized tensor, one float32 scale **and one int64
zero point per channel** (the TFLite schema reads one zero point per scale, even when all are
zero), for the filter and again for its bias. On a network of thin layers (EfficientNet-Lite0:
~21,000 output channels for 4.6 M weights) that is ~3% of the float32 file; on a wide one
(DenseNet201) it is under 1%. :func:`tflite_breakdown` measures it from the flatbuffer alone
(no interpreter, no TensorFlow), so the card can say why a ratio is what it is.
"""
from __future__ import annotations

from pathlib import Path

from leukedge.tflite_graph import opcode_names, read_root, tensor_type_names

from .release import gzip_size

#: Ops whose input 1 is a weight tensor and input 2 a bias.
_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
CATEGORIES = ("weights", "biases", "quantization_parameters", "other_constants", "graph")


def tflite_breakdown(data: bytes, with_gzip: bool = True) -> dict:
    """Bytes (and gzip bytes) per category of one ``.tflite`` file (all subgraphs).

    Categories: ``weights`` (constant input 1 of conv / depthwise / fully connected ops),
    ``biases`` (their constant input 2), ``quantization_parameters`` (scale and zero-point
    vectors: 4 + 8 bytes per entry), ``other_constants`` (every other constant buffer: shapes,
    the Grad-CAM branch's float vectors, ...) and ``graph`` (the rest: operators, tensor
    shapes and names, signatures, flatbuffer padding). Also ``per_channel_entries`` (number of
    scales stored), ``quantized_weights`` (weight tensors with one scale, ``per_tensor``, or one
    per output channel, ``per_channel``) and the weights' element types.
    """
    model = read_root(data)
    types = tensor_type_names()
    codes = opcode_names(model)

    def buffer_bytes(k: int) -> bytes:
        b = model.Buffers(k)
        if b.DataLength():
            return b.DataAsNumpy().tobytes()
        if b.Offset() > 1 and b.Size():  # large models keep buffers after the flatbuffer
            return data[b.Offset():b.Offset() + b.Size()]
        return b""

    chunks: dict[str, list[bytes]] = {c: [] for c in CATEGORIES[:-1]}
    weight_types: dict[str, int] = {}
    seen: set[int] = set()
    entries = 0
    scaled = {"per_tensor": 0, "per_channel": 0}  # quantized weight tensors by scale count
    for g in range(model.SubgraphsLength()):
        sg = model.Subgraphs(g)
        role: dict[int, str] = {}
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            if codes[op.OpcodeIndex()] in _WEIGHTED and op.InputsLength() > 1:
                ins = op.InputsAsNumpy()
                role.setdefault(int(ins[1]), "weights")
                if len(ins) > 2 and ins[2] >= 0:
                    role.setdefault(int(ins[2]), "biases")
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            q = tensor.Quantization()
            if q is not None:
                n_scale, n_zp = q.ScaleLength(), q.ZeroPointLength()
                entries += n_scale
                if role.get(t) == "weights" and n_scale:
                    scaled["per_channel" if n_scale > 1 else "per_tensor"] += 1
                chunks["quantization_parameters"].append(
                    (q.ScaleAsNumpy().tobytes() if n_scale else b"") + (q.ZeroPointAsNumpy().tobytes() if n_zp else b""))
            k = tensor.Buffer()
            if k in seen:
                continue
            raw = buffer_bytes(k) if k > 0 else b""
            if not raw:
                continue
            seen.add(k)
            cat = role.get(t, "other_constants")
            chunks[cat].append(raw)
            if cat == "weights":
                name = types.get(tensor.Type(), str(tensor.Type())).lower()
                weight_types[name] = weight_types.get(name, 0) + len(raw)
    out = {"bytes": len(data), "per_channel_entries": entries, "quantized_weights": scaled,
           "weight_types": weight_types, "categories": {}}
    used = 0
    for cat, parts in chunks.items():
        blob = b"".join(parts)
        used += len(blob)
        out["categories"][cat] = {"bytes": len(blob)}
        if with_gzip:
            out["categories"][cat]["gzip_bytes"] = gzip_size(blob) if blob else 0
    out["categories"]["graph"] = {"bytes": len(data) - used}
    if with_gzip:
        # what the rest costs compressed: the whole file's gzip minus the parts' (an estimate:
        # gzip's window spans the boundaries)
        total = gzip_size(data)
        out["gzip_bytes"] = total
        out["categories"]["graph"]["gzip_bytes"] = max(
            0, total - sum(v["gzip_bytes"] for c, v in out["categories"].items() if c != "graph"))
    return out


def size_summary(files: dict[str, dict], name: str, folder: Path | None = None) -> dict:
    """Sizes and the ratios the issue targets (int8 <= 26% and pruned gzip <= 17% of float32);
    with ``folder``, each ``.tflite`` file's :func:`tflite_breakdown` in % of float32 too."""
    f32 = files.get(f"{name}.float32.tflite", {}).get("bytes")
    out = {}
    for fname, d in files.items():
        if not fname.endswith(".tflite"):
            continue
        entry = {"bytes": d["bytes"], "mib": round(d["bytes"] / 2**20, 3), "gzip_bytes": d.get("gzip_bytes")}
        if f32:
            entry["ratio_to_float32"] = round(d["bytes"] / f32, 4)
            entry["gzip_ratio_to_float32"] = round(d["gzip_bytes"] / f32, 4) if d.get("gzip_bytes") else None
        if folder is not None and (Path(folder) / fname).exists() and f32:
            entry["breakdown"] = breakdown_vs(Path(folder) / fname, f32)
        out[fname] = entry
    targets = {}
    i8, pi8 = out.get(f"{name}.int8.tflite"), out.get(f"{name}.pruned-int8.tflite")
    if i8 and f32:
        targets["int8_le_26pct_of_float32"] = {"value": i8["ratio_to_float32"], "met": i8["ratio_to_float32"] <= 0.26}
    if pi8 and f32:
        targets["pruned_int8_gzip_le_17pct_of_float32"] = {"value": pi8["gzip_ratio_to_float32"],
                                                          "met": pi8["gzip_ratio_to_float32"] <= 0.17}
    return {"files": out, "targets": targets}


def breakdown_vs(path: Path, float32_bytes: int) -> dict:
    """:func:`tflite_breakdown` of ``path`` with each category also in % of the float32 file."""
    b = tflite_breakdown(Path(path).read_bytes())
    for v in b["categories"].values():
        v["pct_of_float32"] = round(100 * v["bytes"] / float32_bytes, 2)
        if "gzip_bytes" in v:
            v["gzip_pct_of_float32"] = round(100 * v["gzip_bytes"] / float32_bytes, 2)
    return b


def breakdown_line(entry: dict) -> str:
    """One line: ``weights 24.8%, biases 0.5%, ...`` (of float32) from a size-summary entry."""
    cats = entry.get("breakdown", {}).get("categories", {})
    return ", ".join(f"{c.replace('_', ' ')} {v['pct_of_float32']:.2f}%" for c, v in cats.items() if v.get("bytes"))
