"""The model card of a release folder (``card.json`` + ``card.md``), built only from the files in it.

:func:`write_card` reads ``spec.json`` (required), ``evaluation.json``, ``parity.json``,
``bench/*.json`` and ``figures/*.png`` when present, hashes every model file, and writes the
card atomically. ``card.json["files"]`` (``{filename: sha256}``) lists every file the runtime
reads (model files, ``spec.json``, the OOD statistics, ``ood.json``); ``leukedge release sign``
signs the card, and :func:`leukedge.release_check.verify_release` checks both.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

from . import __version__
from .errors import ModelError
from .fileio import atomic_write_json, atomic_write_text, sha256_file
from .heatmap_eval import card_summary as heatmap_card_summary
from .portable import portable_record
from .evaluate import GENERIC_CAVEATS
from .spec import ModelSpec

log = logging.getLogger(__name__)

CARD_SCHEMA = 1
#: Files that are part of the model (hashed into ``card.json["files"]``).
MODEL_FILE_SUFFIXES = (".tflite", ".h5", ".keras")
#: The issue's targets on the test split: (metric path, minimum, what it is).
TARGETS = (
    ("accuracy", 0.972, "paper's binary accuracy (floor)"),
    ("roc_auc", 0.98, "paper's ROC-AUC (floor)"),
    ("accuracy", 0.99, "aim: binary accuracy"),
    ("roc_auc", 0.995, "aim: ROC-AUC"),
    ("recall", 0.99, "aim: sensitivity (with specificity >= 0.97)"),
    ("specificity", 0.97, "aim: specificity (with sensitivity >= 0.99)"),
)
SUBTYPE_TARGET = 0.97

INTENDED_USE = {
    "use": "Screening aid for trained health workers looking at peripheral blood smear images "
           "(same magnification and staining as the training data): flags smears suggestive of B-ALL.",
    "users": "Trained health workers and laboratory staff; not patients.",
    "action": "Refer every positive (and every image the app flags as out of domain or poor quality) "
              "to a haematologist for review; a negative result does not rule out leukemia.",
    "not_for": ["Diagnosis or treatment decisions on its own (it is not a diagnostic device)",
                "Other cell types, bone-marrow aspirates, other stains or magnifications",
                "Single-cell crops or images from other labs without re-validation on local data",
                "Subtype calls for treatment (the subtype output is for research)"],
}


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); left out of the card", path, exc)
        return None


def _compact(obj, max_list: int = 20):
    """Drop long lists (per-image data) so the card stays readable."""
    if isinstance(obj, dict):
        return {k: _compact(v, max_list) for k, v in obj.items()
                if not (isinstance(v, list) and len(v) > max_list)}
    if isinstance(obj, list):
        return [_compact(v, max_list) for v in obj]
    return obj


def model_files(folder: Path, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """sha256 and size of every model file in ``folder`` (sorted by name), plus the ``extra`` names
    (e.g. the OOD statistics file named by the spec) and the figures (``figures/*.png``)."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.suffix in MODEL_FILE_SUFFIXES or f.name in extra) and not f.name.startswith("."):
            out[f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    if (folder / "figures").is_dir():  # shown by the app's model screen: the runtime reads them too
        for f in sorted((folder / "figures").glob("*.png")):
            out[f"figures/{f.name}"] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    return out


def parity_summary(parity: dict) -> dict:
    """Pass/fail and gates of each comparison in ``parity.json`` (the per-image data stays there)."""
    comps = parity.get("comparisons")
    if not isinstance(comps, dict):
        return _compact(parity)
    out = {"passed": parity.get("passed"), "file": "parity.json", "comparisons": {}}
    for name, comp in comps.items():
        if not isinstance(comp, dict):
            continue
        gates = [g for g in comp.get("gates", []) if isinstance(g, dict)]
        out["comparisons"][name] = {
            "passed": comp.get("passed"), "n": comp.get("n"), "agreement": comp.get("agreement"),
            "gates": [{k: g.get(k) for k in ("name", "value", "rule", "limit", "passed")} for g in gates],
            "failed": [g.get("name") for g in gates if g.get("evaluated", True) and not g.get("passed")]}
    return out


def weights_statement(spec: ModelSpec) -> str:
    w = (spec.weights or "none").lower()
    if w in ("none", "random", ""):
        return (f"{spec.backbone} trained from random initialisation WITHOUT ImageNet weights "
                "(they cannot be downloaded on the build machine); the paper fine-tuned ImageNet weights.")
    if "imagenet" in w:
        return f"{spec.backbone} initialised from ImageNet weights ({spec.weights}), then fine-tuned on the smears."
    return f"{spec.backbone} initialised from {spec.weights}, then trained on the smears."


def _targets(ev: dict | None) -> list[dict]:
    if not ev:
        return []
    out = []
    for key, minimum, what in TARGETS:
        m = ev.get("metrics", {}).get(key, {})
        v, lo = m.get("value"), (m.get("ci95") or [None])[0]
        out.append({"target": what, "metric": key, "minimum": minimum, "measured": v, "ci95_low": lo,
                    "met": v is not None and v >= minimum, "met_by_ci_low": lo is not None and lo >= minimum})
    sub = ev.get("subtype")
    if sub:
        v, lo = sub["accuracy"]["value"], sub["accuracy"]["ci95"][0]
        out.append({"target": "subtype accuracy", "metric": "subtype.accuracy", "minimum": SUBTYPE_TARGET,
                    "measured": v, "ci95_low": lo, "met": v >= SUBTYPE_TARGET,
                    "met_by_ci_low": lo is not None and lo >= SUBTYPE_TARGET})
    return out


def limitations(spec: ModelSpec, ev: dict | None) -> list[str]:
    out = [
        "Single hospital (Taleqani Hospital, Tehran), 89 patients, one staining protocol and imaging setup: "
        "performance on other labs, stains, microscopes or phone cameras is unknown and likely lower.",
        "No patient IDs are published: the split groups blocks of consecutive file numbers and merges "
        "near-duplicate images, which only approximates a patient-level split.",
        "Stain colour differs between classes and many images carry a scale-bar/text stamp in a corner: "
        "possible shortcuts. The corner-mask audit and the Grad-CAM gallery show how much the model relies on them.",
        "Out-of-domain inputs (single-cell crops, other cell types, blurred or non-smear photos) give "
        "meaningless scores; the app's OOD gate flags some of them but is not a guarantee.",
        "Why the test numbers could be flattering: test images come from the same patients' distribution "
        "(possibly the same patients) as training; the test split was also used to compare models; "
        "small benign count makes specificity uncertain (see the CIs).",
    ]
    if spec.task == "subtype":
        out.append("Subtype labels (Early Pre-B, Pre-B, Pro-B) come from flow cytometry of the same patients; "
                   "images of one patient share a subtype, so subtype accuracy is especially sensitive to patient leakage.")
    if (spec.weights or "none").lower() in ("none", "random", ""):
        out.append("Trained without ImageNet pretraining (unlike the paper): the comparison with the paper's "
                   "DenseNet201 is not like for like.")
    if ev and ev.get("data", {}).get("mode") == "all":
        out.append("The evaluation scored every image of a folder (--all), not a held-out test split.")
    return out


def quantization_summary(compress: dict) -> dict:
    """How the int8 file was made, from ``compress.json`` (calibration, activation ranges,
    ops kept in float, QAT)."""
    out = {"calibration_images": (compress.get("calibration") or {}).get("n_images"),
           "activation_ranges": "min/max", "kept_in_float": [], "qat": bool(compress.get("qat")),
           "weights": _int8_weights(compress)}
    qat = compress.get("qat") or {}
    if qat:
        c = qat.get("config", {})
        out["qat_recipe"] = {"epochs": c.get("epochs"), "learning_rate": c.get("learning_rate"), "steps": qat.get("steps"),
                             "distillation": {k: c.get(k) for k in ("feature_distill", "cam_distill", "logit_distill")
                                              if c.get(k)} if c.get("distill") else "labels",
                             "weights_changed": qat.get("weights_changed")}
        if qat.get("selection"):
            out["qat_recipe"]["checkpoint"] = _checkpoint(qat["selection"])
    clip = compress.get("int8_range_clipping") or {}
    p = clip.get("chosen", clip.get("percentile"))
    if p is not None and float(p) < 100.0:
        how = "chosen on the validation split" if "chosen" in clip else "requested"
        out["activation_ranges"] = f"clipped to the {p}th percentile ({how})"
    sel = compress.get("selective_int8") or {}
    if sel.get("replaced_int8_file"):
        out["kept_in_float"] = list(sel.get("kept_float") or [])
    cam = compress.get("int8_gradcam_branch") or {}
    if p is not None and float(p) < 100.0 and clip.get("gradcam_branch") and not cam.get("float_cam"):
        out["activation_ranges"] += f" (Grad-CAM branch: {clip['gradcam_branch']})"
    if cam.get("float_cam"):
        out["gradcam_branch"] = ("float32 on the int8 last feature map with the head's int8 weights "
                                 "(a hybrid fully connected op) and returns the map in float32")
    lr = compress.get("int8_logit_range")
    if lr and lr.get("used") != lr.get("calibrated"):
        out["logit_range"] = lr
    src = compress.get("source_release")
    if src:
        out["rederived_from"] = {"float32_file": src.get("float32_file"), "float32_sha256": src.get("float32_sha256"),
                                 "made_from": src.get("made_from"), "float32_vs_keras": src.get("float32_vs_keras")}
    if compress.get("float32_reexported"):
        out["float32_reexported"] = compress["float32_reexported"]
    return out


def _int8_weights(compress: dict) -> str:
    """How the int8 file's weights are quantized, read off the file's measured breakdown (a kept
    source file, ``--keep-int8``, keeps its own), else from the settings."""
    int8 = next((v for k, v in (compress.get("files") or {}).items() if k.endswith(".int8.tflite")), {})
    qw = (int8.get("breakdown") or {}).get("quantized_weights") or {}
    if qw.get("per_channel") or qw.get("per_tensor"):
        return "per output channel" if qw.get("per_channel") else "per tensor"
    return "per tensor" if (compress.get("config") or {}).get("per_tensor") else "per output channel"


def _checkpoint(selection: dict) -> dict:
    """Which fine-tuning checkpoint a file was made from (``selection`` of compress.json)."""
    return {"epoch": selection.get("chosen_epoch"), "every_epochs": selection.get("every_epochs"),
            "chosen_on": selection.get("split")}


def _checkpoint_phrase(chk: dict | None) -> str:
    """"; the weights of epoch 8, ... chosen on the validation split ..." ("" without selection)."""
    if not chk:
        return ""
    split = "validation" if chk.get("chosen_on") == "val" else chk.get("chosen_on")
    return (f"; the weights of epoch {chk['epoch']}, the file closest to float32 on the {split} split among "
            f"checkpoints every {chk['every_epochs']} epoch(s), so its {split} parity is a selection criterion "
            "and the test split measures it")


def _qat_phrase(recipe: dict | None) -> str:
    """"; quantization-aware fine-tuned (12 epochs, lr 5e-05, distilled: feature 8, cam 30)"."""
    if not recipe:
        return "; quantization-aware fine-tuned"
    dist = recipe.get("distillation")
    dist = "on the labels" if dist == "labels" else "towards the float model (" + ", ".join(
        ["probabilities"] + [f"{k.replace('_distill', '')} {v:g}" for k, v in (dist or {}).items()]) + ")"
    return (f"; quantization-aware fine-tuned ({recipe.get('epochs')} epoch(s), lr {recipe.get('learning_rate'):g}, "
            f"{dist}{_checkpoint_phrase(recipe.get('checkpoint'))})")


def pruning_summary(compress: dict) -> dict | None:
    """How the ``pruned-int8`` file was made, from ``compress.json`` (sparsity measured on the
    stripped model, fine-tuning, distillation terms, clustering)."""
    p = compress.get("pruning")
    if not p:
        return None
    c = p.get("config", {})
    out = {"target_sparsity": p.get("target_sparsity"), "pruned_layers": len(p.get("layers", {})),
           "measured_sparsity": p.get("overall_sparsity"), "kept_dense": len(p.get("kept_dense", {})),
           "epochs": c.get("epochs"), "block": c.get("block", 1), "n_images": p.get("n_images"),
           "distillation": {k: c.get(k) for k in ("feature_distill", "cam_distill", "logit_distill") if c.get(k)}
           if c.get("distill") else "labels"}
    cl = p.get("clustering") or {}
    if cl:
        out["clustering"] = {"clusters": cl.get("clusters"), "epochs": cl.get("epochs"),
                             "max_distinct_values": max((d["distinct_values"] for d in cl.get("layers", {}).values()),
                                                        default=None)}
    if p.get("selection"):
        out["checkpoint"] = _checkpoint(p["selection"])
    return out


def size_section(compress: dict) -> dict:
    """File sizes, the size targets and where each file's bytes go (% of float32), from
    ``compress.json`` (see :mod:`leukedge.compress.sizes`)."""
    files = {}
    for name, e in compress.get("files", {}).items():
        row = {k: e.get(k) for k in ("bytes", "mib", "ratio_to_float32", "gzip_ratio_to_float32")}
        cats = (e.get("breakdown") or {}).get("categories")
        if cats:
            row["breakdown"] = {c: v.get("pct_of_float32") for c, v in cats.items()}
        files[name] = row
    return {"files": files, "targets": compress.get("targets", {})}


def build_card(release_dir) -> dict:
    """The card dict of a release folder (see module docstring)."""
    d = Path(release_dir)
    if not (d / "spec.json").exists():
        raise ModelError(f"{d}: no spec.json", "a release folder needs the model spec (run `leukedge compress`)")
    spec = ModelSpec.load(d)
    ev = _load_json(d / "evaluation.json") if (d / "evaluation.json").exists() else None
    parity = _load_json(d / "parity.json") if (d / "parity.json").exists() else None
    bench = _bench_records(d)
    # every file the runtime reads (release_check.runtime_files): model files, spec, OOD statistics and report
    files = model_files(d, tuple(x for x in ("spec.json", "ood.json", spec.ood.stats_file) if x))
    figures = sorted(str(f.relative_to(d)) for f in (d / "figures").rglob("*.png")) if (d / "figures").is_dir() else []
    default_rule = next((o.rule for o in spec.operating_points if o.name == "default"), "not recorded")
    card = {
        "schema": CARD_SCHEMA,
        "name": spec.name, "version": spec.version, "leukedge_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"backbone": spec.backbone, "task": spec.task, "class_names": spec.class_names,
                  "negative_class": spec.negative_class, "positive_classes": spec.positive_classes,
                  "input_size": spec.preprocess.input_size, "preprocessing": spec.preprocess.steps(),
                  "outputs": spec.outputs, "head": spec.head,
                  "ood_gate": {"method": spec.ood.method, "threshold": spec.ood.threshold, "rule": spec.ood.rule,
                               "stats_file": spec.ood.stats_file},
                  "photo_quality": {"min_sharpness": getattr(spec.preprocess.capture, "min_sharpness", None),
                                    "rule_in": getattr(spec.preprocess.capture, "rule_in", None),
                                    "rule_out": getattr(spec.preprocess.capture, "rule_out", None)}},
        "threshold": {"value": spec.threshold, "rule": default_rule},
        "operating_points": [o.__dict__ for o in spec.operating_points],
        "intended_use": INTENDED_USE,
        "data": {"source": spec.data.source, "doi": spec.data.doi, "license": spec.data.license,
                 "citation": spec.data.citation, "split_manifest_sha256": spec.data.manifest_sha256
                 or (ev or {}).get("data", {}).get("split_manifest_sha256"), "split_seed": spec.data.split_seed},
        "training": {"weights": spec.weights, "statement": weights_statement(spec)},
        "files": {k: v["sha256"] for k, v in files.items()},
        "file_sizes": {k: v["bytes"] for k, v in files.items()},
        "spec_sha256": sha256_file(d / "spec.json"),
        "figures": figures,
        "limitations": limitations(spec, ev),
    }
    if (d / "config.json").exists():
        cfg = _load_json(d / "config.json")
        if cfg:
            card["training"]["config"] = _compact(cfg)
    if ev:
        card["evaluation"] = {
            "file": "evaluation.json", "model_file": ev.get("model", {}).get("file"),
            "data": ev.get("data"), "n": ev.get("n"), "n_positive": ev.get("n_positive"),
            "n_negative": ev.get("n_negative"), "threshold": ev.get("threshold"),
            "threshold_rule": ev.get("threshold_rule"), "metrics": ev.get("metrics"),
            "metrics_group_ci": ev.get("metrics_group_ci"), "n_groups": ev.get("n_groups"),
            "confusion_matrix": ev.get("confusion_matrix"),
            "calibration": {"ece": ev.get("calibration", {}).get("ece"), "brier": ev.get("calibration", {}).get("brier")},
            "operating_points": [{k: o[k] for k in ("name", "threshold", "rule", "metrics")}
                                 for o in ev.get("operating_points", [])],
            "caveats": [c for c in ev.get("caveats", []) if c not in GENERIC_CAVEATS],
        }
        if ev.get("subtype"):
            s = ev["subtype"]
            card["evaluation"]["subtype"] = {k: s[k] for k in ("accuracy", "macro_f1", "roc_auc_ovr", "per_class",
                                                               "confusion_matrix", "class_names")}
        if ev.get("shortcut_audit"):
            a = ev["shortcut_audit"]
            card["evaluation"]["shortcut_audit"] = {"corner_mask": a["corner_mask"], "metrics": a["metrics"],
                                                    "delta": a["delta"], "decisions_changed": a["decisions_changed"]}
        hq = heatmap_card_summary(ev)
        if hq:
            card["evaluation"]["heatmap_quality"] = hq
        card["targets"] = _targets(ev)
    if parity is not None:
        card["parity"] = parity_summary(parity)
    compress = _load_json(d / "compress.json") if (d / "compress.json").exists() else None
    if compress:
        card["quantization"] = quantization_summary(compress)
        if compress.get("files"):
            card["sizes"] = size_section(compress)
        if pruning_summary(compress):
            card["pruning"] = pruning_summary(compress)
    ood = _load_json(d / "ood.json") if (d / "ood.json").exists() else None
    if ood:
        card["ood"] = {k: ood.get(k) for k in ("method", "percentile", "image_margin", "threshold",
                                                "image_threshold", "rates", "model_file")}
    if bench:
        card["benchmarks"] = bench
    return card


def card_markdown(card: dict) -> str:
    from .report import METRIC_LABELS, Page, fmt_ci

    m = card["model"]
    page = Page(f"Model card: {card['name']} v{card['version']}")
    page.p(f"{m['backbone']} ({m['task']}: {', '.join(m['class_names'])}), input {m['input_size']}x{m['input_size']} "
           f"RGB. LeukEdge {card['leukedge_version']}, card made {card['created_utc']}.")
    steps = "; ".join(" ".join([s.get("step", "?")] + [f"{k}={v}" for k, v in s.items() if k != "step"])
                      for s in m["preprocessing"])
    page.p(f"Preprocessing (leukedge.preprocess, from spec.json): {steps}. Out-of-distribution gate: "
           f"{m['ood_gate']['method']}" + (f" (threshold {m['ood_gate']['threshold']:.4g}: {m['ood_gate']['rule']})"
                                            if m["ood_gate"]["threshold"] is not None else "") + ".")
    sharp = (m.get("photo_quality") or {}).get("min_sharpness")
    rule_in = (m.get("photo_quality") or {}).get("rule_in")
    rule_out = (m.get("photo_quality") or {}).get("rule_out")
    page.p("Photo quality: the app asks to refocus below sharpness "
           + (f"{sharp:g} (variance of the Laplacian; validated for this model, docs/captures.md 14)." if sharp is not None
              else "15, the app's default (variance of the Laplacian).")
           + (f" An over-exposed or blurred photo is answered only when its probability of leukemia is at least "
              f"{rule_in:g} (refer); otherwise, and for every other quality problem, the app asks for a retake "
              "(docs/captures.md 15)." if rule_in is not None else
              " Every photo the quality gate finds over-exposed, under-exposed, blurred, off-centre or too small is a retake.")
           + (f" Grey zone: a photo scoring from {rule_out:g} up to the decision threshold is answered \"borderline, "
              "take another field\", never \"no signs\" (the sample verdict does not count it; docs/captures.md 17)."
              if rule_out is not None else ""))
    iu = card["intended_use"]
    page.h("Intended use")
    page.bullets([iu["use"], f"Users: {iu['users']}", f"Action: {iu['action']}"])
    page.p("Not for:")
    page.bullets(iu["not_for"])
    page.h("Decision threshold")
    page.p(f"{card['threshold']['value']:.4f}: {card['threshold']['rule']}.")
    if card["operating_points"]:
        page.table(["name", "threshold", "rule", "validation sensitivity", "validation specificity"],
                   [[o["name"], f"{o['threshold']:.4f}", o["rule"], _f(o.get("sensitivity")), _f(o.get("specificity"))]
                    for o in card["operating_points"]])
    ev = card.get("evaluation")
    page.h("Performance")
    if ev:
        page.p(f"Measured with `{ev['model_file']}` on {ev['n']} images ({ev['n_positive']} leukemia, "
               f"{ev['n_negative']} benign; {ev['data'].get('mode')}), threshold {ev['threshold']:.4f}. "
               "95% percentile-bootstrap confidence intervals.")
        gci = ev.get("metrics_group_ci")
        page.table(["metric", "value [95% CI]"] + (["95% CI resampling patient-proxy groups"] if gci else []),
                   [[lab, fmt_ci(ev["metrics"][k])] + ([f"[{_f(gci[k]['ci95'][0])}, {_f(gci[k]['ci95'][1])}]"]
                                                       if gci else []) for k, lab in METRIC_LABELS.items()])
        page.p(f"Confusion matrix [[TN, FP], [FN, TP]]: {ev['confusion_matrix']}. Calibration: ECE "
               f"{_f(ev['calibration']['ece'])}, Brier {_f(ev['calibration']['brier'])}.")
        if ev.get("subtype"):
            s = ev["subtype"]
            page.p(f"Subtypes: accuracy {fmt_ci(s['accuracy'])}, macro F1 {fmt_ci(s['macro_f1'])}, "
                   f"confusion {s['confusion_matrix']} (rows/columns {s['class_names']}).")
        if ev.get("shortcut_audit"):
            a = ev["shortcut_audit"]
            page.p(f"Shortcut audit (corners masked, {a['corner_mask']:.2f} of the side): " + "; ".join(
                f"{k} {a['delta'][k]['delta']:+.4f}" for k in METRIC_LABELS if a["delta"][k]["delta"] is not None)
                + f"; {a['decisions_changed']} decisions changed.")
        hq = ev.get("heatmap_quality")
        if hq:
            page.p(f"Heatmap quality ({hq['images']}, n={hq['n']}; {hq.get('faithfulness_n') or 0} with "
                   "deletion/insertion curves): " + "; ".join(
                       f"{k} {fmt_ci(hq[k], 3)}" for k in ("lift", "pointing", "pointing_chance", "generic_r",
                                                          "deletion_vs_random", "insertion_vs_random", "class_deletion_vs_random",
                                                          "class_insertion_vs_random") if k in hq)
                   + ". Lift 1 and pointing = chance mean the map ignores the stained cells; deletion/insertion "
                   "record the screening probability (class_*: the predicted subtype's); see evaluation.md.")
        if card.get("targets"):
            page.table(["target", "minimum", "measured", "95% CI low", "met"],
                       [[t["target"], t["minimum"], _f(t["measured"]), _f(t["ci95_low"]),
                         "yes" if t["met"] else "NO"] for t in card["targets"]])
    else:
        page.p("No evaluation.json in this release: run `leukedge evaluate --model <this folder> --json "
               "<folder>/evaluation.json`.")
    par = card.get("parity")
    if par:
        page.h("Parity of the compressed files")
        if isinstance(par.get("comparisons"), dict):
            rows = []
            for name, comp in par["comparisons"].items():
                gates = "; ".join(f"{g['name']} {_f(g['value'])} {g['rule']} {g['limit']}" +
                                  ("" if g.get("passed") else " FAIL") for g in comp["gates"])
                rows.append([name, "PASS" if comp["passed"] else "FAIL", comp.get("n"), gates])
            page.table(["comparison", "result", "images", "gates"], rows)
            page.p("Details: parity.md / parity.json. Only files whose comparison passes should be deployed.")
        else:
            page.p("See parity.md / parity.json.")
    q = card.get("quantization")
    if q:
        kept = f"{len(q['kept_in_float'])} op(s) kept in float" if q["kept_in_float"] else "every op int8"
        if q.get("gradcam_branch"):
            kept = kept.replace("every op", "every other op") + "; the Grad-CAM branch runs in " + q["gradcam_branch"]
        page.p(f"int8 file: calibrated on {q['calibration_images']} training images; weights quantized "
               f"{q.get('weights', 'per output channel')}; activation ranges {q['activation_ranges']}; {kept}" + (_qat_phrase(q.get("qat_recipe")) if q["qat"] else "") +
               " (compress.json)." +
               (f" Logit output range bounded to {q['logit_range']['used']} (calibrated "
                f"{q['logit_range']['calibrated']}): finer int8 steps near the threshold." if q.get("logit_range") else "") +
               (f" Re-derived from the released float32 file (sha256 {q['rederived_from']['float32_sha256'][:12]}...), "
                f"itself made from {q['rederived_from']['made_from']}." if q.get("rederived_from") else ""))
        keras = (q.get("rederived_from") or {}).get("float32_vs_keras")
        rex = q.get("float32_reexported")
        if rex:
            worst = rex.get("worst_relative_error_vs_recovered_keras") or {}
            page.p(f"The float32 file was re-exported by the current exporter from the Keras model recovered from "
                   f"the released one (sha256 {str(rex.get('old_sha256'))[:12]}..., {rex.get('old_bytes')} -> "
                   f"{rex.get('new_bytes')} bytes; worst relative error against the recovered model "
                   + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) + ").")
        if keras:
            g = keras.get("gates", {})
            page.p(f"float32 vs the Keras model (GradientTape Grad-CAM), checked when the float32 file was made "
                   f"({'the file before re-export' if rex else 'same bytes'}): "
                   f"{'PASS' if keras.get('passed') else 'FAIL'}; agreement {_f(g.get('agreement'))}, "
                   f"heatmap r {_f(g.get('heatmap_correlation'))}.")
    pr = card.get("pruning")
    if pr:
        dist = pr["distillation"]
        dist = ("towards the labels" if dist == "labels" else "self-distilled (" + ", ".join(
            f"{k.replace('_distill', '')} weight {v:g}" for k, v in dist.items()) + ")" if dist else "self-distilled")
        cl = pr.get("clustering")
        page.p(f"pruned-int8 file: {pr['pruned_layers']} layers magnitude-pruned to "
               f"{_pct(pr['target_sparsity'])}% (tfmot; measured {_pct(pr['measured_sparsity'])}%"
               + (f", in blocks of {pr['block']}" if (pr.get("block") or 1) > 1 else "") +
               f"; {pr['kept_dense']} small layer(s) kept dense), fine-tuned {pr['epochs']} epoch(s) on "
               f"{pr['n_images']} training images, {dist}" +
               (f"; then each pruned kernel clustered to {cl['clusters']} values with its zeros kept "
                f"({cl['epochs']} epoch(s); at most {cl['max_distinct_values']} distinct values per kernel)"
                if cl else "") + _checkpoint_phrase(pr.get("checkpoint")) + " (compress.json).")
    sizes = card.get("sizes")
    if sizes:
        page.h("File sizes")
        cats = ("weights", "biases", "quantization_parameters", "graph")
        page.table(["file", "MiB", "% of float32", "gzip % of float32"] + [c.replace("_", " ") + " %" for c in cats],
                   [[name, _f(e.get("mib"), 2), _pct(e.get("ratio_to_float32")), _pct(e.get("gzip_ratio_to_float32"))]
                    + [_f(e.get("breakdown", {}).get(c), 2) for c in cats] for name, e in sizes["files"].items()])
        page.p("Targets: " + "; ".join(f"{k} {_f(t['value'])} ({'met' if t['met'] else 'NOT met'})"
                                       for k, t in sizes.get("targets", {}).items()) + ". "
               "An int8 file also stores int32 biases and, when its weights are quantized per output channel, "
               "a float32 scale and an int64 zero point per channel for the filter and again for its bias "
               "(quantization parameters above): on a network of thin layers that keeps it well above 25% of "
               "float32; weights quantized per tensor store one of each.")
    ood = card.get("ood")
    if ood and ood.get("rates"):
        page.h("Out-of-distribution gate")
        page.p(f"Images are flagged instead of scored when the {ood.get('method')} distance of the model's pooled "
               f"features exceeds {_f(ood.get('threshold'))} (the {ood.get('percentile')}th percentile of validation "
               f"distances) or the image colour statistics exceed {_f(ood.get('image_threshold'))}. Flagged rates:")
        page.table(["images", "n", "flagged"],
                   [[name, r.get("n"), _f(r.get("flagged"))] if isinstance(r, dict) else [name, "", _f(r)]
                    for name, r in ood["rates"].items()])  # calibrate-ood records plain fractions
    if card.get("benchmarks"):
        page.h("Benchmarks")
        for name in sorted(n for n in card["benchmarks"] if n.startswith("captures")):  # captures, -mosaic, -phone
            cap = capture_sentence(card["benchmarks"].get(name), name)
            if cap:
                page.p(cap)
        page.bullets(f"{name}: see bench/{name}" for name in card["benchmarks"])
    d = card["data"]
    page.h("Data")
    page.bullets([f"Source: {d['source']} (DOI {d['doi']}); licence {d['license']}.", f"Citation: {d['citation']}",
                  f"Split manifest sha256: {d['split_manifest_sha256'] or 'not recorded'}"])
    page.h("Training")
    page.p(card["training"]["statement"])
    page.h("Limitations")
    page.bullets(card["limitations"])
    if ev and ev.get("caveats"):
        page.h("Caveats of this evaluation")
        page.bullets(ev["caveats"])
    page.h("Files")
    page.table(["file", "bytes", "sha256"], [[k, card["file_sizes"][k], v] for k, v in card["files"].items()])
    if card["figures"]:
        page.h("Figures")
        for f in card["figures"]:
            page.img(f, Path(f).stem)
    return page.markdown()


def capture_sentence(doc: dict | None, name: str = "captures.json") -> str | None:
    """One paragraph of a ``bench captures`` result's summary (None without one); ``name`` is its
    file in ``bench/`` (the paragraph points to the Markdown beside it)."""
    s = (doc or {}).get("summary") or {}
    if s.get("moderate_min_correct") is None and not s.get("compound"):
        return None
    d = doc.get("data") or {}
    rows = f"{s['moderate_rows_90']} of {s['moderate_rows']} rows >= 90% correct, " if "moderate_rows" in s else ""
    caused = (f" (caused by the capture, i.e. on smears whose clean photo was answered correctly: "
              f"{s['moderate_missed_new']} missed, at most {_pct(s['moderate_max_wrong_new'])}% wrong in a row)"
              if "moderate_missed_new" in s else "")
    rule_out = (doc.get("model") or {}).get("rule_out")
    zone = (f"; answered \"borderline, take another field\" (scores in the grey zone from {rule_out:g} up to the "
            f"threshold): {s['moderate_borderline']} of the moderate rows' {s['moderate_photos']} photos and "
            f"{s['clean_borderline']} of the clean ones" if rule_out is not None and "moderate_borderline" in s else "")
    from .capture_sim import FAMILIES

    fams = list(doc.get("families") or [])
    left = [f for f in FAMILIES if fams and f not in fams]
    what = ("lower-power photos made of each smear and its neighbours on the same slide, `--field mosaic`"
            if doc.get("field") == "mosaic" else f"the families {', '.join(fams)}" if 0 < len(fams) <= 3
            else f"every capture family but {', '.join(left)}" if left else "every capture family")
    limit = f" (`--limit {d['limit']}`, spread evenly over the split)" if d.get("limit") else ""
    md = "bench/" + name.removesuffix(".json") + ".md"
    compound = "".join(
        f" Compound field photos (`{fam}`: several capture families in one photo, not counted in the rows above): "
        + "; ".join(f"level {sev} {_pct(v['correct'])}% correct, {_pct(v['flagged'])}% flagged, {_pct(v['wrong'])}% "
                    f"wrong, {v['missed']} missed leukemia ({v.get('missed_new', 0)} caused by the capture)"
                    for sev, v in levels.items()) + "."
        for fam, levels in (s.get("compound") or {}).items())
    head = (f"Capture robustness (`leukedge bench captures`, {d.get('n_smears', '?')} {d.get('split', 'test')}-split "
            f"smears{limit}, {what}")
    if s.get("moderate_min_correct") is None:  # compound rows only
        return f"{head}): the clean photos {_pct(s.get('clean_correct'))}% correct. Per level: {md}.{compound}"
    return (f"{head}, at issue 19's moderate severities): {rows}lowest "
            f"{_pct(s['moderate_min_correct'])}% correct, highest {_pct(s['moderate_max_wrong'])}% wrong, missed "
            f"leukemia summed over the rows {s['moderate_missed']}{caused}; the clean photos "
            f"{_pct(s.get('clean_correct'))}% correct{zone}. Per family and severity: {md}.{compound}")


def _f(v, digits=4):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}"


def _bench_records(d: Path) -> dict:
    """``bench/*.json`` of a release, compacted, by file name."""
    bench = {}
    if (d / "bench").is_dir():
        for f in sorted((d / "bench").glob("*.json")):
            b = _load_json(f)
            if b is not None:
                bench[f.name] = portable_record(_compact(b), d)  # the card travels: no machine's paths
    return bench


def refresh_benchmarks(release_dir) -> bool:
    """Put the release's ``bench/*.json`` into its existing card (``benchmarks`` only).

    Nothing else of the card is rebuilt: file hashes in particular stay what the card
    recorded, so a benchmark never blesses a model file that changed since. A folder without
    a full card (no ``schema``) is left alone.

    Returns:
        True when the card was rewritten.
    """
    d = Path(release_dir)
    card = _load_json(d / "card.json") if (d / "card.json").exists() else None
    if not isinstance(card, dict) or card.get("schema") != CARD_SCHEMA:
        log.info("%s has no model card to update with the benchmark", d)
        return False
    card["benchmarks"] = _bench_records(d)
    atomic_write_json(d / "card.json", card)
    atomic_write_text(d / "card.md", card_markdown(card) + "\n")
    log.info("updated the benchmarks of %s", d / "card.json")
    _warn_resign(d)
    return True


def _warn_resign(d: Path) -> None:
    """A rewritten card no longer matches its signature: say so (the release is refused until re-signed)."""
    if (d / "card.sig").exists():
        log.warning("%s changed, so its signature (card.sig) no longer matches: re-sign it with "
                    "`leukedge release sign %s --key KEY` (docs/trust.md)", d / "card.json", d)


def write_card(release_dir) -> tuple[Path, Path]:
    """Build and write ``card.json`` and ``card.md`` in ``release_dir`` (atomically).

    Raises:
        ModelError: the folder has no spec.json.
    """
    d = Path(release_dir)
    card = build_card(d)
    j = atomic_write_json(d / "card.json", card)
    md = atomic_write_text(d / "card.md", card_markdown(card) + "\n")
    log.info("wrote %s and %s (%d model files hashed)", j, md, len(card["files"]))
    _warn_resign(d)
    return j, md
