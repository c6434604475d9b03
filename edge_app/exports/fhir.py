"""A sample as FHIR R4 JSON: a Bundle with a DiagnosticReport, one Observation per field, Media per image.

Built with ``fhir.resources.R4B`` models (FHIR 4.3, the R4 maintenance release; the
elements used here are the same in 4.0.1), so what is written has been validated by
construction, and :func:`parse_bundle` reads a file back through the same models.

- ``DiagnosticReport``: the sample verdict (``conclusion`` with the safe wording,
  ``conclusionCode`` from the LeukEdge code system), the sample ID as identifier,
  ``effectiveDateTime`` = when the sample was started, with its zone; ``media`` links
  the images; status ``entered-in-error`` for a voided sample.
- ``Observation`` per field: the field status as ``valueCodeableConcept``; the model's
  score as a ``component`` only for a scored field; a hidden score is a
  ``dataAbsentReason`` (``not-performed``/``error``), never a number.
- ``Media`` per kept image (the capture, and the heatmap overlay of a scored field),
  embedded as base64.
"""
from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle

from ..records.clock import Stamp
from ..records.store import FieldRecord, SampleRecord
from ..records.wording import FIELD_WORDS, HEADLINES, result_words, verdict_text
from .naming import export_name, write_new

SYSTEM = "https://leukedge.example.org/fhir/CodeSystem"
VERDICT_SYSTEM = f"{SYSTEM}/sample-verdict"
FIELD_SYSTEM = f"{SYSTEM}/field-status"
SAMPLE_ID_SYSTEM = "urn:leukedge:sample-id"
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp", ".tif": "image/tiff",
        ".tiff": "image/tiff"}


#: Required value sets (FHIR R4) of the status elements written here: the models check types, cardinality
#: and formats, but not these codes, so they are checked on top.
STATUS_CODES = {
    "DiagnosticReport": {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended",
                         "cancelled", "entered-in-error", "unknown"},
    "Observation": {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
                    "unknown"},
    "Media": {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error",
              "unknown"},
}


def check_bindings(bundle: Bundle) -> Bundle:
    """Refuse a status code outside its required FHIR R4 value set (ValueError)."""
    for e in bundle.entry or []:
        kind = e.resource.get_resource_type()
        allowed = STATUS_CODES.get(kind)
        if allowed is not None and e.resource.status not in allowed:
            raise ValueError(f"{kind}.status {e.resource.status!r} is not in its FHIR R4 value set")
    return bundle


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _device(f: FieldRecord) -> str:
    return (f"{f.model_name} v{f.model_version} ({f.model_variant or 'unknown variant'}; "
            f"signature {f.signature_status})")


def _media(path: Path, f: FieldRecord, what: str) -> dict:
    data = path.read_bytes()
    return {"resourceType": "Media", "status": "completed",
            "createdDateTime": f.created.iso_local(),
            "deviceName": _device(f),
            "note": [{"text": what}],
            "content": {"contentType": MIME.get(path.suffix.lower(), "application/octet-stream"),
                        "data": base64.b64encode(data).decode("ascii"), "title": path.name, "size": len(data)}}


def _observation(f: FieldRecord, sample: SampleRecord, media_refs: list[str]) -> dict:
    status = "entered-in-error" if (f.voided or sample.voided) else "final"
    obs = {"resourceType": "Observation", "status": status,
           "code": {"text": "Leukemia screening of one blood-smear field of view (LeukEdge)"},
           "effectiveDateTime": f.created.iso_local(),
           "valueCodeableConcept": {"coding": [{"system": FIELD_SYSTEM, "code": f.status,
                                                "display": FIELD_WORDS[f.status]}],
                                    "text": result_words(f.status, f.quality)},
           "device": {"display": _device(f)},
           "identifier": [{"system": "urn:leukedge:field-uid", "value": f.uid}],
           "derivedFrom": [{"reference": r} for r in media_refs]}
    notes = [f"field {f.seq} of sample {sample.sample_id}"]
    if f.voided:
        notes.append(f"voided: {f.void_reason}")
    if f.probability is not None:  # only a scored field has a score
        comp = {"code": {"text": "model score for leukemia (0-1); decision threshold in referenceRange"},
                "valueQuantity": {"value": round(float(f.probability), 6), "unit": "1",
                                  "system": "http://unitsofmeasure.org", "code": "1"}}
        if f.threshold is not None:
            comp["referenceRange"] = [{"high": {"value": round(float(f.threshold), 6)},
                                       "text": "refer at or above the threshold"}]
        obs["component"] = [comp]
    else:
        reason = "error" if f.status == "unreadable" else "not-performed"
        obs["component"] = [{"code": {"text": "model score for leukemia (0-1)"},
                             "dataAbsentReason": {"coding": [{"system": ABSENT, "code": reason}],
                                                  "text": f"no score: {result_words(f.status, f.quality)}"}}]
    obs["note"] = [{"text": n} for n in notes]
    return obs


def sample_bundle(sample: SampleRecord, card: dict | None = None) -> Bundle:
    """The FHIR R4 Bundle (type ``collection``) of one sample, built through the validating models."""
    entries, obs_refs, media_links = [], [], []
    for f in sample.fields:
        refs = []
        for path, what in ((f.image_path, "captured field of view"),
                           (f.heatmap_path, "heatmap overlay: where the model looked (red = most)")):
            if path is not None and Path(path).is_file():
                url = _urn()
                entries.append({"fullUrl": url, "resource": _media(Path(path), f, f"field {f.seq}: {what}")})
                refs.append(url)
                media_links.append({"comment": f"field {f.seq}: {what}", "link": {"reference": url}})
        url = _urn()
        entries.append({"fullUrl": url, "resource": _observation(f, sample, refs)})
        obs_refs.append(url)
    text = verdict_text(sample.verdict, card)
    models = sorted({_device(f) for f in sample.fields if f.model_name})
    report = {"resourceType": "DiagnosticReport",
              "status": "entered-in-error" if sample.voided else ("final" if sample.finished else "preliminary"),
              "code": {"text": "Leukemia screening of a peripheral blood smear (LeukEdge, screening aid)"},
              "identifier": [{"system": SAMPLE_ID_SYSTEM, "value": sample.sample_id},
                             {"system": "urn:leukedge:sample-uid", "value": sample.uid}],
              "effectiveDateTime": sample.created.iso_local(),
              "issued": Stamp.now().iso_local(),  # when this report was made
              "result": [{"reference": r} for r in obs_refs],
              "conclusion": " ".join([text.headline + ".", text.meaning, text.next_step, text.caveat,
                                      text.performance, "Model: " + "; ".join(models) if models else ""]).strip(),
              "conclusionCode": [{"coding": [{"system": VERDICT_SYSTEM, "code": sample.verdict.code,
                                              "display": HEADLINES[sample.verdict.code]}]}]}
    if media_links:
        report["media"] = media_links
    entries.insert(0, {"fullUrl": _urn(), "resource": report})
    return check_bindings(Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                                                 "timestamp": sample.created.iso_local(), "entry": entries}))


def bundle_json(sample: SampleRecord, card: dict | None = None) -> str:
    return sample_bundle(sample, card).model_dump_json(indent=1, exclude_none=True)


def parse_bundle(text: str | bytes) -> Bundle:
    """Read an exported file back through the FHIR models (raises on anything invalid)."""
    return check_bindings(Bundle.model_validate_json(text))


def export_sample_fhir(sample: SampleRecord, folder: str | os.PathLike, card: dict | None = None) -> Path:
    """A new timestamped ``leukedge-<sample ID>-<time>.fhir.json`` in ``folder``."""
    text = bundle_json(sample, card)
    json.loads(text)  # it is JSON before it is written
    return write_new(folder, export_name(f"leukedge-{sample.sample_id}", "fhir.json"), text.encode("utf-8"))
