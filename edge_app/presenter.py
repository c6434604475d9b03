"""What the app says: every user-facing sentence about a result, a record or a model, in one place.

Pure functions (no widgets), so the words are testable without a window, the kv files only
bind to these strings, and reports (PDF, FHIR) can reuse them. All text goes through gettext
(:mod:`.i18n`). Nothing here is hard-coded per model: labels, thresholds, sensitivity and
specificity come from the release's spec and card.

Verdicts (:func:`verdict_of`): ``refer`` (a positive), ``no_signs`` (a negative: never
"healthy", always "does not rule leukemia out"), ``retake`` (the quality gate hid the
score) and ``cannot_assess`` (the out-of-distribution gate hid it, or the file could not be
read). Each verdict has a headline and what to do next; a hidden score is never shown.
"""
from __future__ import annotations

from datetime import datetime

from .i18n import N_, _
from .release_info import card_metrics
from .records.clock import stamp_of
from .records.wording import LABELS, score_text, verdict_text

REFER, NO_SIGNS, RETAKE_V, CANNOT_ASSESS = "refer", "no_signs", "retake", "cannot_assess"
VERDICTS = (REFER, NO_SIGNS, RETAKE_V, CANNOT_ASSESS)

#: verdict -> (headline, short label for lists, what to do next). English msgids.
VERDICT_TEXT = {
    REFER: (N_("Refer: signs of leukemia"), N_("Refer"),
            N_("Refer the patient to a haematologist for a full blood count and a specialist review of this "
               "smear. This is a screening result, not a diagnosis.")),
    NO_SIGNS: (N_("No signs of leukemia found"), N_("No signs found"),
               N_("This does not rule leukemia out. If the patient has symptoms (fever, bleeding, bruising, "
                  "tiredness, repeated infections), refer anyway.")),
    RETAKE_V: (N_("Retake the photo"), N_("Retake"),
               N_("No result for this photo: its quality is too low for the model. Take a new photo of the "
                  "same slide.")),
    CANNOT_ASSESS: (N_("Cannot assess this image"), N_("Cannot assess"),
                    N_("No result: this image does not look like the blood smears the model was trained on "
                       "(another lab, stain or magnification, or not a smear). Check the slide and the photo and "
                       "retake; if it still cannot be assessed, refer the sample.")),
}
#: A retake for a score in the release's grey zone (Screening.borderline): headline, what to do next.
BORDERLINE_TEXT = (N_("Borderline: take another field"),
                   N_("No result for this photo: its score is too close to the decision threshold to clear it. "
                      "Screen another field of view of the same slide."))
#: English headlines (kept for callers and tests that compare with them).
POSITIVE, NEGATIVE, RETAKE, OOD = (VERDICT_TEXT[k][0] for k in (REFER, NO_SIGNS, RETAKE_V, CANNOT_ASSESS))
ERROR = N_("This file cannot be read")

#: RGBA colours of the verdict banner.
COLOURS = {REFER: (0.72, 0.12, 0.12, 1), NO_SIGNS: (0.10, 0.45, 0.20, 1), RETAKE_V: (0.70, 0.40, 0.02, 1),
           CANNOT_ASSESS: (0.70, 0.40, 0.02, 1), None: (0.35, 0.35, 0.35, 1)}

#: Quality gate advice (edge_app/quality.py GUIDANCE), for the translation catalogue.
QUALITY_ADVICE = (
    N_("The image is too small. Take the photo closer or at a higher resolution."),
    N_("The image is blurred. Focus the microscope, hold the phone still and retake."),
    N_("The image is too bright. Lower the microscope light or the camera exposure and retake."),
    N_("The image is too dark. Increase the microscope light and retake."),
    N_("The field of view is not centred. Centre the bright circle in the camera view and retake."),
    N_("The result is borderline: the score is close to the decision threshold. Take another field of view "
       "(another area of the smear) and screen it."),
)

#: Quality statuses (edge_app/quality.py), shown in the record detail.
QUALITY_WORDS = {"ok": N_("good"), "blurry": N_("blurred"), "too small": N_("too small"),
                 "over-exposed": N_("too bright"), "under-exposed": N_("too dark"),
                 "off-centre": N_("field not centred")}

#: The camera preview's framing hint by quality status (edge_app/framing.py): one short line, before the photo.
FRAMING_HINTS = {"ok": N_("Ready: hold still and tap Capture field"), "off-centre": N_("Centre the bright circle"),
                 "blurry": N_("Focus the microscope"), "under-exposed": N_("More light"),
                 "over-exposed": N_("Less light"), "too small": N_("Move closer")}


def framing_hint(status: str) -> str:
    """The preview's hint for a quality status, translated ("" for an unknown status)."""
    return _(FRAMING_HINTS[status]) if status in FRAMING_HINTS else ""


#: Capture-screen status lines (``status(key, **fields)``).
STATUS = {
    "starting": N_("Starting..."),
    "loading": N_("Loading model {name}..."),
    "refused": N_("Model refused: {error}"),
    "no_model": N_("No model found in {folder}: pass --model models/<name>"),
    "ready": N_("Ready: {name} v{version}. Type or scan the sample ID, then tap Start sample."),
    "ready_unsigned": N_("Ready: {name} v{version}. UNSIGNED release (development only). Type or scan the "
                         "sample ID, then tap Start sample."),
    "next": N_("New sample: choose or capture the next image."),
    "choose_first": N_("Choose an image first."),
    "not_loaded": N_("No model loaded yet."),
    "screening": N_("Screening..."),
    "cannot_screen": N_("Cannot screen this file: {error}"),
    "no_camera": N_("No camera: {error}"),
    "no_frame": N_("No camera frame yet."),
    "id_read": N_("Sample ID read from the label: {id}"),
    "no_code": N_("No QR code or barcode found: hold the label flat in front of the camera."),
    "not_saved": N_("Not saved to history: {error}"),
    "exported": N_("Exported to {path}"),
    "export_failed": N_("Export failed: {error}"),
    "permission": N_("Permission refused: {what}. Allow it in the phone's settings."),
    "wrong_pin": N_("Wrong PIN."),
    "pin_short": N_("The PIN needs at least 4 digits."),
    "pin_set": N_("PIN saved."),
    "saved": N_("Settings saved."),
}

HEATMAP_LINE = N_("Colours show the parts of the image that most raised the model's score (red: most, "
                  "blue: least). It is not a diagnosis and does not mark individual cells.")


def status(key: str, **fields) -> str:
    return _(STATUS[key]).format(**fields)


def verdict_of(decision: str | None, error: str | None = None) -> str:
    """The verdict of a decision word (``positive``/``negative``/``retake``/``out-of-distribution``)."""
    if error or decision is None:
        return CANNOT_ASSESS
    return {"positive": REFER, "negative": NO_SIGNS, "retake": RETAKE_V}.get(decision, CANNOT_ASSESS)


def verdict_texts(verdict: str) -> dict:
    """``{"headline", "label", "next_step"}`` of a verdict, translated."""
    h, label, step = VERDICT_TEXT[verdict]
    return {"headline": _(h), "label": _(label), "next_step": _(step)}


def score_hidden(decision: str | None) -> bool:
    """True when a gate hid the score: it must not be shown, stored or exported."""
    return decision not in ("positive", "negative")


def pct(v) -> str:
    if v is None:
        return "?"
    v = 100 * float(v)
    return f"{v:.1f}%" if 0 < v < 10 else f"{v:.0f}%"


def _per100(v) -> str:
    return f"{100 * float(v):.0f}"


def _ci(metric) -> tuple | None:
    ci = metric.get("ci95") if isinstance(metric, dict) else None
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        return float(ci[0]), float(ci[1])
    return None


def metrics_sentence(release, threshold: float | None = None) -> str:
    """Sensitivity and specificity in words, with the card's 95% CIs (test split); at another
    validated threshold, the operating point's validation figures (no CI measured)."""
    m = card_metrics(release.card)
    sens, spec = m.get("recall"), m.get("specificity")
    at_default = threshold is None or abs(threshold - release.spec.threshold) < 1e-9
    if at_default and isinstance(sens, dict) and isinstance(spec, dict) and "value" in sens and "value" in spec:
        cs, cp = _ci(sens), _ci(spec)
        text = _("In testing, out of 100 samples with leukemia this model referred {sens} "
                 "and out of 100 without leukemia it cleared {spec}.").format(
            sens=_per100(sens["value"]), spec=_per100(spec["value"]))
        if cs and cp:
            text += " " + _("95% confidence intervals: {s_lo} to {s_hi} referred, {p_lo} to {p_hi} cleared.").format(
                s_lo=_per100(cs[0]), s_hi=_per100(cs[1]), p_lo=_per100(cp[0]), p_hi=_per100(cp[1]))
        return text
    op = next((o for o in release.spec.operating_points
               if threshold is not None and abs(o.threshold - threshold) < 1e-9), None)
    if op is not None and op.sensitivity is not None and op.specificity is not None:
        return _("At this threshold, on validation images: out of 100 samples with leukemia it referred {sens}, "
                 "out of 100 without leukemia it cleared {spec} (no confidence interval measured).").format(
            sens=_per100(op.sensitivity), spec=_per100(op.specificity))
    return _("This model's sensitivity and specificity are not in its card.")


def rule_in_sentence(quality: str | None) -> str:
    """Why a photo the quality gate found too bright or blurred still has a result (a strong score)."""
    return _("This photo is {quality}, but the signs of leukemia in it were strong enough to refer. A photo like "
             "this never clears a patient: without strong signs it is a retake.").format(
        quality=_(QUALITY_WORDS.get(quality or "", quality or "")))


def model_line(name: str, version: str, sha256: str | None, variant: str = "", parity: str | None = None) -> str:
    text = _("Model: {name} v{version} ({sha})").format(name=name, version=version, sha=short_hash(sha256))
    if parity == "fail":
        text += " " + _("- FAILED parity: the {variant} file does not match float32; use the int8 file.").format(variant=variant)
    return text


def present(screening, release) -> dict:
    """Texts and colours of the result screen for one screening.

    Keys: ``verdict``, ``headline``, ``next_step``, ``detail`` (quality advice or the
    model's sensitivity/specificity), ``probability`` (empty when a gate hid the score),
    ``subtypes``, ``model``, ``colour``, ``show_heatmap``.
    """
    d = screening.decision
    v = verdict_of(d, screening.error)
    t = verdict_texts(v)
    out = {"verdict": v, "headline": t["headline"], "next_step": t["next_step"], "colour": COLOURS[v],
           "probability": "", "detail": "", "subtypes": "", "show_heatmap": v in (REFER, NO_SIGNS),
           "model": model_line(screening.model_name, screening.model_version, screening.model_sha256,
                               screening.model_variant, screening.parity)}
    if screening.error:
        out.update(headline=_(ERROR), next_step=_("Choose another image or take a new photo."),
                   detail=screening.error)
    elif v == RETAKE_V:
        out["detail"] = _(screening.guidance) if screening.guidance else ""
        if getattr(screening, "borderline", False):  # the photo was fine: its score was in the grey zone
            out.update(headline=_(BORDERLINE_TEXT[0]), next_step=_(BORDERLINE_TEXT[1]))
    elif v in (REFER, NO_SIGNS):
        out["probability"] = _("Model score: {p:.2f} (refers at {t:.2f} or above)").format(
            p=screening.probability, t=screening.threshold)
        out["detail"] = metrics_sentence(release, screening.threshold)
        if getattr(screening, "rule_in", False):
            out["detail"] = rule_in_sentence(screening.quality) + " " + out["detail"]
        if screening.probabilities:
            out["subtypes"] = _("Subtype scores:") + " " + "   ".join(
                f"{k} {p:.2f}" for k, p in screening.probabilities.items())
    return out


# ----- history ------------------------------------------------------------------------
def short_hash(sha: str | None, n: int = 12) -> str:
    return f"{sha[:n]}..." if sha else "-"


def local_time(iso_utc: str | None) -> str:
    """A stored UTC time as local time with its zone, e.g. ``2026-12-06 05:10 CET (UTC+01:00)``."""
    if not iso_utc:
        return "-"
    try:
        t = datetime.fromisoformat(iso_utc.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return iso_utc
    off = t.strftime("%z")
    return f"{t:%Y-%m-%d %H:%M} {t.tzname() or ''} (UTC{off[:3]}:{off[3:]})".replace("  ", " ")


def record_verdict(record: dict) -> dict:
    return verdict_texts(verdict_of(record.get("decision"), record.get("error")))


def history_row(record: dict) -> str:
    """One line of the History list: local time, sample ID, verdict in words (never a hidden score)."""
    sid = record.get("sample_id") or _("no sample ID")
    label = record_verdict(record)["label"] if not record.get("error") else _("Not readable")
    return f"{local_time(record.get('time_utc'))}   {sid}   {label}"


def detail_lines(record: dict) -> list[tuple[str, str]]:
    """The detail screen of one record as (label, value) pairs, in words, hashes shortened."""
    v = record_verdict(record)
    hidden = score_hidden(record.get("decision"))
    p = record.get("probability")
    rows = [(_("Sample ID"), record.get("sample_id") or _("none")),
            (_("Time"), local_time(record.get("time_utc"))),
            (_("Result"), _(ERROR) if record.get("error") else v["headline"]),
            (_("What to do"), v["next_step"]),
            (_("Model score"), _("hidden (no result)") if hidden or p is None else f"{p:.2f}"),
            (_("Threshold"), "-" if record.get("threshold") is None else f"{record['threshold']:.2f}"),
            (_("Image quality"), _(QUALITY_WORDS[record["quality"]]) if record.get("quality") in QUALITY_WORDS
             else (record.get("quality") or "-")),
            (_("Unlike the training smears"), _("yes") if record.get("ood") else _("no")),
            (_("Model"), f"{record.get('model_name') or '-'} v{record.get('model_version') or '-'}"),
            (_("Model file"), short_hash(record.get("model_sha256"))),
            (_("Image file"), record.get("image_path") or _("camera photo")),
            (_("Image fingerprint"), short_hash(record.get("image_sha256")))]
    if record.get("error"):
        rows.append((_("Error"), record["error"]))
    return rows


# ----- model card ---------------------------------------------------------------------
def card_lines(release) -> list[str]:
    """The model info screen's lines: identity, intended use, metrics with CIs, data, limitations."""
    card, spec = release.card, release.spec
    lines = [_("{name}  version {version}").format(name=release.name, version=release.version),
             _("Backbone: {backbone}, input {size}px, task: {task} ({classes})").format(
                 backbone=spec.backbone, size=spec.preprocess.input_size, task=spec.task,
                 classes=", ".join(spec.class_names)),
             _("File: {file}  sha256 {sha}").format(file=release.model_path.name,
                                                   sha=short_hash(release.model_sha256, 16)),
             metrics_sentence(release)]
    use = card.get("intended_use")
    if isinstance(use, dict):
        lines += [_("Intended use:") + f" {use.get('use', '')}", _("Action:") + f" {use.get('action', '')}"]
    elif use:
        lines.append(_("Intended use:") + f" {use}")
    for k, v in card_metrics(card).items():
        if isinstance(v, dict) and isinstance(v.get("value"), (int, float)):
            ci = _ci(v)
            lines.append(f"{k}: {v['value']:.3f}" + (f"  (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""))
    ops = ", ".join(f"{o.name} {o.threshold:.2f}" for o in spec.operating_points) or f"default {spec.threshold:.2f}"
    lines.append(_("Validated thresholds:") + f" {ops}")
    if spec.ood.method != "none":
        rates = release.ood_rates()
        shown = ", ".join(f"{k} {pct(v)}" for k, v in rates.items() if k not in ("train",))
        lines.append(_("Out-of-distribution gate: {method}").format(method=spec.ood.method)
                     + ("; " + _("images flagged:") + f" {shown}" if shown else ""))
    lines.append(_("Data:") + f" {spec.data.source} ({spec.data.license})")
    lim = card.get("limitations")
    if lim:
        lines.append(_("Limitations:"))
        lines += [f" - {x}" for x in (lim if isinstance(lim, list) else [lim])]
    return lines


# ----- samples (records.ScreeningSession) ----------------------------------------------
#: Sample-level status lines (``status(key, **fields)`` reads these too).
STATUS.update({
    "start_first": N_("Type or scan the sample ID, then tap Start sample."),
    "started": N_("Sample {id} started: choose or capture field 1."),
    "next_field": N_("Sample {id}: choose or capture field {n}."),
    "field_busy": N_("Still screening the previous field..."),
    "no_records": N_("Results cannot be saved: {problem}"),
    "not_saved_field": N_("This field was NOT saved: {error}"),
    "saved_without_image": N_("This field was saved, but its image was not kept: {error}"),
    "finished": N_("Sample {id} finished and saved. Hand it over, or start a new sample."),
    "handed_over": N_("Saved {file} (a new file; nothing was overwritten)."),
    "hand_over_failed": N_("Could not write the file: {error}"),
    "amended": N_("Saved in the audit trail."),
    "need_reason": N_("Give a reason (it is kept in the audit trail)."),
    "db_new": N_("A new history database was started at {path}."),
    "db_recovered": N_("The history database was damaged. It was moved to {file} (nothing deleted) and a new one "
                       "was started; {n} records could be copied back from it."),
    "db_read_only": N_("The history database {path} is read-only: past records can be read, but new results will "
                       "NOT be saved. Make the file and its folder writable, or choose another history folder."),
})


#: Audit event kinds (records.store) in words.
EVENT_WORDS = {"sample_started": N_("sample started"), "field_added": N_("field added"),
               "sample_finished": N_("sample finished"), "void": N_("voided"), "correct": N_("corrected"),
               "exported": N_("handed over (file written)"), "image_deleted": N_("image deleted (retention)"),
               "recovered": N_("recovered from a damaged database"), "migrated": N_("database upgraded")}


def sample_verdict_texts(verdict, card) -> dict:
    """Translated texts of a sample verdict (:func:`records.wording.verdict_text`), with the
    verdict's colour: ``code, headline, meaning, next_step, caveat, performance, colour``."""
    return verdict_text(verdict, card, tr=_).to_dict()


def field_words(status: str, probability, quality: str | None = None) -> str:
    """A field's result in words; the model score only when the field was scored (``quality``: the
    field's quality status, which tells a borderline score from a bad photo)."""
    return score_text(status, probability, tr=_, quality=quality)


def field_line(n: int, status: str, probability, voided: bool = False, reason: str | None = None,
               quality: str | None = None) -> str:
    """``Field 2: image quality too low: no result`` (voided fields say so, with the reason)."""
    text = _("Field {n}: {words}").format(n=n, words=field_words(status, probability, quality))
    if voided:
        text += " - " + _("voided ({reason})").format(reason=reason or "-")
    return text


def sample_field_lines(sample) -> list[str]:
    return [field_line(f.seq, f.status, f.probability, f.voided, f.void_reason, f.quality) for f in sample.fields]


def field_advice(screening) -> str:
    """What to do about one field: the quality gate's advice, the OOD warning, or the read error."""
    if screening.error:
        return _("The file could not be read ({error}). Choose another image or take a new photo.").format(
            error=screening.error)
    if screening.decision == "retake":
        return _(screening.guidance) if screening.guidance else ""
    if screening.decision == "out-of-distribution":
        return _(VERDICT_TEXT[CANNOT_ASSESS][2])
    return ""


def sample_label(sample_id: str, n_fields: int, verdict_headline: str) -> str:
    """The capture screen's line about the open sample."""
    text = (_("Sample {id}: 1 field so far. {verdict}") if n_fields == 1 else
            _("Sample {id}: {n} fields so far. {verdict}"))
    return text.format(id=sample_id, n=n_fields, verdict=verdict_headline)


def sample_row(sample) -> str:
    """One line of the History list: local time with its zone, sample ID, verdict in words, fields."""
    label = _(LABELS[sample.verdict.code]) if sample.finished else _("Open")
    voided = "  " + _("VOIDED") if sample.voided else ""
    n = len(sample.counted_fields)
    return sample.created.display() + "\n" + (_("{id}   {verdict}   1 field") if n == 1 else
                                              _("{id}   {verdict}   {n} fields")).format(
        id=sample.sample_id, verdict=label, n=n) + voided


def sample_detail(sample, card=None) -> str:
    """The detail screen of one sample (markup): identity, verdict, fields, audit trail; no full hashes."""
    t = sample_verdict_texts(sample.verdict, card)
    rows = [(_("Sample ID"), sample.sample_id + (f" ({_('corrected from')} {sample.original_sample_id})"
                                                 if sample.sample_id != sample.original_sample_id else "")),
            (_("Time"), sample.created.display()),
            (_("Result"), t["headline"] if sample.finished else _("Open (not finished)")),
            (_("What it means"), t["meaning"]),
            (_("What to do"), t["next_step"]),
            ("", t["caveat"])]
    if sample.voided:
        rows.append((_("Voided"), sample.void_reason or "-"))
    out = [f"[b]{k}:[/b] {v}" if k else v for k, v in rows]
    out.append(f"[b]{_('Fields of view')}:[/b]")
    for f in sample.fields:
        model = f"{f.model_name} v{f.model_version} ({f.model_variant}, {signature_words(f.signature_status)})"
        out.append(" - " + field_line(f.seq, f.status, f.probability, f.voided, f.void_reason, f.quality)
                   + f"; {f.created.display()}; {model}; {_('image fingerprint')} {short_hash(f.image_sha256)}")
    out.append(f"[b]{_('Audit trail')}:[/b]")
    for e in sample.events:
        when = stamp_of(e["time_utc"], e["tz_offset_min"], e["tz_name"]).display()
        kind = _(EVENT_WORDS[e["kind"]]) if e["kind"] in EVENT_WORDS else e["kind"]
        out.append(f" - {when} {kind}" + (f": {e['reason']}" if e.get("reason") else ""))
    return "\n".join(out)


def signature_words(status: str) -> str:
    return {"verified": _("signature verified"), "unsigned": _("UNSIGNED release")}.get(status, _("signature unknown"))
