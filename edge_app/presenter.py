"""What the screens say: wording for a health worker, from a Screening and the model card.

Pure functions (no widgets), so the words are testable without a window and the kv
files only bind to these strings. Nothing here is hard-coded per model: labels,
thresholds, sensitivity and specificity come from the release's spec and card.
"""
from __future__ import annotations

POSITIVE = "Refer to a haematologist: signs of leukemia"
NEGATIVE = "No leukemia signs found"
OOD = "Not a smear this model knows: no result"
RETAKE = "Retake the image: quality too low"
ERROR = "This file cannot be screened"

#: RGBA colours of the headline by decision.
COLOURS = {"positive": (0.78, 0.16, 0.16, 1), "negative": (0.13, 0.55, 0.25, 1),
           "out-of-distribution": (0.85, 0.5, 0.05, 1), "retake": (0.85, 0.5, 0.05, 1), None: (0.4, 0.4, 0.4, 1)}


def pct(v) -> str:
    if v is None:
        return "?"
    v = 100 * float(v)
    return f"{v:.1f}%" if 0 < v < 10 else f"{v:.0f}%"


def metrics_sentence(release, threshold: float | None = None) -> str:
    """Sensitivity/specificity in words, from the card (test set), else the operating point (validation)."""
    sens, spec, where = release.metric("recall"), release.metric("specificity"), "test images"
    if sens is None or spec is None or (threshold is not None and abs(threshold - release.spec.threshold) > 1e-9):
        op = next((o for o in release.spec.operating_points
                   if threshold is not None and abs(o.threshold - threshold) < 1e-9), None)
        if op is not None and op.sensitivity is not None:
            sens, spec, where = op.sensitivity, op.specificity, f"{op.split} images"
    if sens is None or spec is None:
        return "This model's sensitivity and specificity are not in its card."
    return (f"On {where} this model found {pct(sens)} of leukemia cases (sensitivity) and correctly "
            f"cleared {pct(spec)} of non-leukemia samples (specificity).")


def ood_message() -> str:
    return ("This image does not look like the blood smears the model was trained on (another lab, "
            "stain, magnification or not a smear). No score is shown: check the slide and the photo, "
            "or refer the sample.")


def present(screening, release) -> dict:
    """Texts and colours of the result screen for one screening."""
    d = screening.decision
    out = {"colour": COLOURS.get(d, COLOURS[None]), "probability": "", "detail": "", "subtypes": "",
           "model": f"Model: {screening.model_name} v{screening.model_version} "
                    f"(sha256 {screening.model_sha256[:12]})"
                    + (f" - {screening.model_variant} FAILED parity with float32: use the int8 file"
                       if screening.parity == "fail" else ""),
           "show_heatmap": d in ("positive", "negative")}
    if screening.error:
        out.update(headline=ERROR, detail=screening.error)
    elif d == "retake":
        out.update(headline=RETAKE, detail=screening.guidance)
    elif d == "out-of-distribution":
        out.update(headline=OOD, detail=ood_message())
    else:
        out["headline"] = POSITIVE if d == "positive" else NEGATIVE
        out["probability"] = (f"Probability of leukemia: {screening.probability:.2f} "
                              f"(refer at {screening.threshold:.2f} or above)")
        out["detail"] = metrics_sentence(release, screening.threshold)
        if screening.probabilities:
            out["subtypes"] = "   ".join(f"{k}: {v:.2f}" for k, v in screening.probabilities.items())
    return out


def card_lines(release) -> list[str]:
    """The model info screen's lines: identity, intended use, metrics with CIs, data, limitations."""
    card, spec = release.card, release.spec
    lines = [f"{release.name}  version {release.version}", f"Backbone: {spec.backbone}, input "
             f"{spec.preprocess.input_size}px, task: {spec.task} ({', '.join(spec.class_names)})",
             f"File: {release.model_path.name}  sha256 {release.model_sha256[:16]}..."]
    use = card.get("intended_use")
    if isinstance(use, dict):
        lines += [f"Intended use: {use.get('use', '')}", f"Action: {use.get('action', '')}"]
    elif use:
        lines.append(f"Intended use: {use}")
    from .inference import card_metrics

    for k, v in card_metrics(card).items():
        if isinstance(v, dict) and isinstance(v.get("value"), (int, float)):
            ci = v.get("ci95")
            ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)
            lines.append(f"{k}: {v['value']:.3f}" + (f"  (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ok else ""))
    ops = ", ".join(f"{o.name} {o.threshold:.2f}" for o in spec.operating_points) or f"default {spec.threshold:.2f}"
    lines.append(f"Validated thresholds: {ops}")
    if spec.ood.method != "none":
        rates = release.ood_rates()
        shown = ", ".join(f"{k} {pct(v)}" for k, v in rates.items() if k not in ("train",))
        lines.append(f"Out-of-distribution gate: {spec.ood.method}" + (f"; images flagged: {shown}" if shown else ""))
    lines.append(f"Data: {spec.data.source} ({spec.data.license})")
    lim = card.get("limitations")
    if lim:
        lines.append("Limitations:")
        lines += [f" - {x}" for x in (lim if isinstance(lim, list) else [lim])]
    return lines
