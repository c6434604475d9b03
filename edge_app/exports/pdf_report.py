"""The per-sample referral report (PDF, fpdf2): what a clinic receives with the patient.

One A4 page per few fields: the sample ID and when it was screened (local time with its
zone), the verdict in colour with what it means and what to do next (the same words as
the screen, :mod:`..records.wording`), then each field of view: the captured image, the
heatmap overlay (scored fields only) with a colour legend, and its status. The model
name, version, file variant and signature status close the report. fpdf2's built-in
fonts are Latin-1: other characters (e.g. in a sample ID) are printed as ``?``.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
from fpdf import FPDF
from PIL import Image, UnidentifiedImageError

from leukedge import __version__

from leukedge.heatmap import colorize
from ..records.clock import Stamp
from ..records.store import FieldRecord, SampleRecord
from ..records.wording import score_text, verdict_text
from .naming import export_name, write_new

THUMB_MM = 42
LEGEND = ("Heatmap: where the model looked most (red) to least (blue) when scoring the field. "
          "It is not a map of leukemic cells.")


def latin1(text) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _legend_png() -> io.BytesIO:
    bar = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (12, 1))
    buf = io.BytesIO()
    Image.fromarray(colorize(bar)).save(buf, format="PNG")
    buf.seek(0)
    return buf


class _Report(FPDF):
    footer_text = ""

    def footer(self):
        self.set_y(-12)
        self.set_font("Helvetica", size=7)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, latin1(f"{self.footer_text}   page {self.page_no()}/{{nb}}"), align="C")


def _field_block(pdf: FPDF, f: FieldRecord) -> None:
    if pdf.get_y() + THUMB_MM + 14 > pdf.h - 18:
        pdf.add_page()
    y = pdf.get_y()
    pdf.set_font("Helvetica", "B", 10)
    pdf.set_text_color(0, 0, 0)
    head = f"Field {f.seq}  -  {f.created.display()}" + ("  -  VOIDED: " + f.void_reason if f.voided else "")
    pdf.cell(0, 6, latin1(head), new_x="LMARGIN", new_y="NEXT")
    y = pdf.get_y()
    x = pdf.l_margin
    for path, label in ((f.image_path, "captured image"), (f.heatmap_path, "heatmap overlay")):
        why = ("deleted (retention)" if f.image_deleted else
               "no heatmap: no score" if label == "heatmap overlay" else "not kept")
        if path is not None and Path(path).is_file():
            try:
                pdf.image(str(path), x=x, y=y, w=THUMB_MM, h=THUMB_MM)
                why = None
            except (OSError, ValueError, UnidentifiedImageError):
                why = "cannot be displayed"
        if why:
            pdf.set_draw_color(170, 170, 170)
            pdf.rect(x, y, THUMB_MM, THUMB_MM)
            pdf.set_xy(x + 2, y + THUMB_MM / 2 - 3)
            pdf.set_font("Helvetica", size=7)
            pdf.multi_cell(THUMB_MM - 4, 3.5, latin1(f"{label}: {why}"), align="C")
        x += THUMB_MM + 4
    pdf.set_xy(x, y)
    pdf.set_font("Helvetica", size=9)
    lines = [f"Result: {score_text(f.status, f.probability, quality=f.quality)}"]
    if f.probability is not None and f.threshold is not None:
        lines.append(f"Refer threshold: {f.threshold:.2f}")
    if f.quality and f.quality != "ok":
        lines.append(f"Quality: {f.quality}")
    if f.error:  # file names only: no machine paths in a report that leaves the device
        lines.append("Error: " + re.sub(r"(?:[A-Za-z]:)?[/\\][^\s:]*[/\\]([^/\\\s:]+)", r"\1", f.error))
    if f.image_sha256:
        lines.append(f"Image sha256: {f.image_sha256[:16]}...")
    pdf.multi_cell(pdf.w - pdf.r_margin - x, 4.5, latin1("\n".join(lines)))
    pdf.set_y(y + THUMB_MM + 3)


def sample_pdf(sample: SampleRecord, card: dict | None = None, printed: Stamp | None = None) -> bytes:
    """The referral report of one sample as PDF bytes."""
    text = verdict_text(sample.verdict, card)
    fields = sample.fields
    models = sorted({(f.model_name, f.model_version, f.model_variant, f.signature_status, f.model_sha256[:12])
                     for f in fields if f.model_name})
    pdf = _Report(format="A4")
    pdf.footer_text = (f"LeukEdge {__version__} screening aid - printed {(printed or Stamp.now()).display()} - "
                       f"sample record {sample.uid}")
    pdf.alias_nb_pages()
    pdf.set_auto_page_break(True, margin=16)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 8, latin1(f"Leukemia screening - sample {sample.sample_id}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    src = {"typed": "typed", "scanned": "scanned from the label", "legacy": "from the previous history"}
    pdf.multi_cell(0, 4.5, latin1(
        f"Screened {sample.created.display()}; sample ID {src.get(sample.id_source, sample.id_source)}"
        + (f" (corrected from '{sample.original_sample_id}')" if sample.original_sample_id != sample.sample_id else "")
        + (f". VOIDED: {sample.void_reason}" if sample.voided else "")
        + ("" if sample.finished else ". Sample not finished: the verdict may still change.")),
        new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    r, g, b = (int(255 * c) for c in text.colour[:3])
    pdf.set_fill_color(r, g, b)
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 11, latin1(text.headline), fill=True, new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_text_color(0, 0, 0)
    pdf.ln(1)
    for label, body in (("What it means", text.meaning), ("What to do next", text.next_step),
                        ("Important", text.caveat), ("How reliable the model is", text.performance)):
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(0, 5.5, latin1(label), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 5, latin1(body), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(0, 4, latin1(f"Verdict rule: {sample.verdict.rule.describe()}. Usable fields: "
                                f"{sample.verdict.n_usable} of {sample.verdict.n_fields}."),
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    y = pdf.get_y()
    pdf.image(_legend_png(), x=pdf.l_margin, y=y, w=50, h=4)
    pdf.set_xy(pdf.l_margin + 52, y - 0.5)
    pdf.set_font("Helvetica", size=7.5)
    pdf.multi_cell(0, 3.5, latin1("low  ->  high.  " + LEGEND), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for f in fields:
        _field_block(pdf, f)
    if not fields:
        pdf.cell(0, 6, "No field of view was recorded.", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 5.5, "Model", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    for name, version, variant, sig, sha in models or [("unknown", "", "", "unknown", "")]:
        pdf.multi_cell(0, 4.5, latin1(f"{name}  version {version}  file {variant or '?'}  sha256 {sha}...  "
                                      f"signature: {sig}"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def export_sample_pdf(sample: SampleRecord, folder: str | os.PathLike, card: dict | None = None) -> Path:
    """A new timestamped ``leukedge-referral-<sample ID>-<time>.pdf`` in ``folder``."""
    return write_new(folder, export_name(f"leukedge-referral-{sample.sample_id}", "pdf"), sample_pdf(sample, card))
