"""What the autopilot does in the app: the scenarios (generators taking the :class:`~.autopilot.Pilot`).

Each scenario acts like a health worker (real touches on real buttons, files picked in the real file
list) and yields what to wait for: an ``int`` (that many frames) or a predicate (until true). Its
findings go to ``p.report``. ``SCENARIOS`` names them for ``python -m leukedge.edge_app.autopilot``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .i18n import language, set_language


def wait_model(p):
    yield lambda: p.ctl.screener is not None or p.ctl.model_error is not None
    p.report["model_error"] = p.ctl.model_error
    p.report["capture_status"] = p.screen("capture").status_text
    p.report["release"] = p.ctl.screener.release.folder.name if p.ctl.screener else None
    p.report["model_loaded_unix"] = time.time()
    p.mark("model_ready")
    yield 3
    p.report["started_with"] = {"language": language(), "has_pin": p.ctl.settings.has_pin,
                                "threshold": p.ctl.screener.threshold if p.ctl.screener else None,
                                "retention_days": p.ctl.store.retention_days() if p.ctl.store else None}


def start_sample(p, sample_id):
    """Type the sample ID on the capture screen and touch Start sample."""
    cap = p.screen("capture")
    if p.app.root.current != "capture":
        p.app.go("capture")
        yield 2
    p.type_text(cap.ids.sample_id, sample_id)
    yield 1
    p.touch(cap.ids.btn_start)
    yield lambda: cap.sample_open or cap.status_error
    yield 2


def add_field(p, path):
    """Choose a file on the capture screen and touch "Add this field"; waits until it is shown and saved."""
    if p.app.root.current != "capture":
        p.touch(p.screen("result").ids.btn_add)
        yield lambda: p.app.root.current == "capture"
        yield 1
    p.choose(path)
    yield 2
    yield from screen_now(p, settle=3)


def screen_now(p, settle: int = 2):
    """Touch "Add this field" on the capture screen (file or camera frame already chosen); waits
    until the field is shown (or the screen reports an error) and its record is saved."""
    cap = p.screen("capture")
    n = len(p.ctl._statuses)
    p.touch(cap.ids.btn_screen)
    yield 1
    yield lambda: not p.ctl.busy and (len(p.ctl._statuses) > n or cap.status_error)
    yield lambda: p.ctl._pending == 0
    yield settle


def finish(p):
    """Touch Finish sample on the sample view; waits for the finished view."""
    res = p.screen("result")
    p.touch(res.ids.btn_finish)
    yield lambda: res.finished or res.note_text
    yield 3


def new_sample(p):
    p.touch(p.screen("result").ids.btn_again)
    yield lambda: p.app.root.current == "capture"
    yield 2


def hand_over_all(p) -> list:
    """Touch the three hand-over buttons (twice the PDF: a second, new file); returns the notes."""
    res, notes = p.screen("result"), []
    for btn in ("btn_pdf", "btn_pdf", "btn_fhir", "btn_csv"):
        before = p.ctl.last_export
        p.touch(res.ids[btn])
        yield lambda: p.ctl.last_export != before or "Could not" in res.note_text
        yield 2
        notes.append(res.note_text)
    p.report["hand_over_notes"] = notes


def result_state(p) -> dict:
    r = p.screen("result")
    return {"headline": r.headline, "verdict": r.verdict, "next_step": r.next_step, "meaning": r.meaning_text,
            "caveat": r.caveat_text, "performance": r.performance_text, "field_title": r.field_title,
            "probability_text": r.probability_text, "detail": r.detail_text, "fields": r.fields_text,
            "model_text": r.model_text, "note": r.note_text, "show_heatmap": r.show_heatmap,
            "finished": r.finished, "screen": p.app.root.current, "image_rect": p.rect(r.ids.image_box),
            "legend": {"shown": r.ids.legend.opacity == 1 and r.ids.legend.height > 0 and r.legend_texture is not None,
                       "ends": [w.text for w in reversed(r.ids.legend.children) if hasattr(w, "text")],
                       "bar_rect": p.rect(r.ids.legend_bar), "line": r.ids.heat_line.text}}


def capture_state(p) -> dict:
    cap, res = p.screen("capture"), p.screen("result")
    return {"screen": p.app.root.current, "selection": list(cap.ids.chooser.selection),
            "sample_id": cap.ids.sample_id.text, "sample_open": cap.sample_open, "sample_text": cap.sample_text,
            "preview": cap.ids.preview.texture is not None, "selected_text": cap.ids.selected.text,
            "status": cap.status_text, "error": cap.status_error, "result_headline": res.headline,
            "result_fields": res.fields_text, "result_image": res.base_texture is not None,
            "result_heatmap": res.heat_texture is not None, "session_open": p.ctl.session.sample_uid
            if p.ctl.session else None}


def stored(p) -> list[dict]:
    """Every sample in the database, oldest first, with its fields' statuses and image hashes."""
    return [{"sample_id": s.sample_id, "id_source": s.id_source, "verdict": s.verdict.code, "finished": s.finished,
             "fields": [{"status": f.status, "probability": f.probability, "image_sha256": f.image_sha256,
                         "voided": f.voided} for f in s.fields]}
            for s in reversed(p.ctl.store.samples(limit=1000))]


# ----- scenarios --------------------------------------------------------------------------
def tour(p):
    """The app test: a sample of a smear (result + heatmap at 3 opacities), a camera frame, a lymphocyte
    crop and a corrupt file as fields; finish; hand-over; history; detail; model; settings behind a PIN."""
    a = p.args
    yield from wait_model(p)
    p.screenshot("capture")
    yield from start_sample(p, "SMEAR-1")
    yield from add_field(p, a.smear)
    p.report["smear"] = result_state(p)
    slider = p.screen("result").ids.opacity_slider
    for name, value in (("result", 0.5), ("result_heat0", 0.0), ("result_heat1", 1.0)):
        slider.value = value
        yield 3
        p.screenshot(name)
    slider.value = 0.5
    cap = p.screen("capture")
    if a.camera:   # the camera button with a video file as the camera (frame-source layer)
        p.touch(p.screen("result").ids.btn_add)
        yield 2
        p.touch(cap.ids.btn_camera)
        yield lambda: p.ctl._frame is not None
        yield 3
        p.screenshot("capture_camera")
        yield from screen_now(p, settle=3)
        p.report["camera"] = result_state(p)
        f = p.ctl.last_step.field if p.ctl.last_step else None
        p.report["camera"]["record_image_path"] = str(f.image_path) if f and f.image_path else None
        p.app.go("capture")
        yield 1
        p.touch(cap.ids.btn_camera)   # stop it again
        yield 2
        p.report["camera"]["stopped"] = p.ctl.source is None
    if a.ood:
        yield from add_field(p, a.ood)
        p.report["ood"] = result_state(p)
        p.screenshot("result_ood")
    if a.corrupt:
        yield from add_field(p, a.corrupt)
        p.report["corrupt"] = result_state(p)
        p.screenshot("result_unreadable")
    yield from finish(p)
    p.report["finished"] = result_state(p)
    yield from hand_over_all(p)
    p.report["exports"] = sorted(f.name for f in p.ctl.export_folder().glob("*"))
    yield from new_sample(p)
    yield from start_sample(p, "SMEAR-2")
    yield from add_field(p, a.smear2 or a.smear)
    p.report["after_corrupt"] = result_state(p)
    yield from finish(p)
    p.touch(p.screen("result").ids.btn_history)
    yield lambda: p.app.root.current == "history"
    yield lambda: len(p.screen("history").ids.rv.data) >= 2
    yield 3
    p.report["history"] = {"rows": [d["text"] for d in p.screen("history").ids.rv.data], "count": p.ctl.store.count()}
    p.screenshot("history")
    hist = p.screen("history")
    exports = p.ctl.export_folder()
    n0 = len(list(exports.glob("leukedge-samples-*.csv")))
    for i in range(2):        # two exports in the same second: two files, the first one kept
        p.touch(hist.ids.btn_export)
        yield lambda: len(list(exports.glob("leukedge-samples-*.csv"))) > n0 + i and hist.summary.startswith("Export")
    p.report["history_exports"] = sorted(f.name for f in exports.glob("leukedge-samples-*.csv"))
    p.report["export_summary"] = hist.summary
    rows = [c for c in p.screen("history").ids.rv.children[0].children]
    if rows:
        p.touch(rows[-1])   # children are in reverse order: the last is the top row
        yield lambda: p.app.root.current == "detail"
        yield 3
        p.report["detail"] = p.screen("detail").text
        p.screenshot("detail")
    p.report["stored"] = stored(p)
    p.app.go("model")
    yield 5
    p.report["model_info"] = p.screen("model").text
    p.screenshot("model")
    yield from settings_tour(p)


def settings_tour(p):
    p.app.go("capture")
    yield 2
    p.touch(p.screen("capture").ids.btn_settings)      # locked: the PIN screen first
    yield lambda: p.app.root.current != "capture"
    yield 2
    pin = p.screen("pin")
    p.report["pin_screen"] = {"screen": p.app.root.current, "creating": pin.creating}
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 3
    p.report["settings"] = {"models": list(p.screen("settings").model_values),
                            "operating_points": list(p.screen("settings").op_values)}
    p.screenshot("settings")
    st = p.screen("settings")
    p.report["settings"]["retention_values"] = list(st.retention_values)
    st.ids.retention_spinner.text = st.retention_values[1]       # keep captured images 30 days
    if len(st.op_values) > 1:   # choose the second validated operating point and apply
        st.ids.op_spinner.text = st.op_values[1]
        yield 2
        p.touch(st.ids.btn_apply)
        yield lambda: p.app.root.current == "capture"
        yield 3
        p.report["settings"]["after_apply"] = {"threshold": p.ctl.screener.threshold,
                                               "model_text": p.screen("capture").model_text,
                                               "retention_days": p.ctl.store.retention_days()}
    # Settings lock again when left; a wrong PIN is refused; the language changes every screen.
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current != "capture"
    yield 2
    p.report["settings"]["relocked"] = p.app.root.current == "pin" and not pin.creating
    p.type_text(pin.ids.pin, "0000")
    p.touch(pin.ids.btn_ok)
    yield 3
    p.report["settings"]["wrong_pin"] = {"screen": p.app.root.current, "message": pin.message}
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 2
    st.ids.language_spinner.text = "Français"
    yield 2
    p.touch(st.ids.btn_apply)
    yield lambda: p.app.root.current == "capture"
    yield 3
    p.report["settings"]["french"] = {"history_button": p.screen("capture").ids.btn_history.text,
                                      "status": p.screen("capture").status_text}
    p.screenshot("capture_fr")
    # Change the PIN from the (unlocked) settings: the old one stops working.
    pin, st = p.screen("pin"), p.screen("settings")      # the language change re-created the screens
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current != "capture"
    p.report["settings"]["locked_after_apply"] = p.app.root.current == "pin"
    if p.app.root.current != "pin":
        return
    yield 2
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 2
    p.touch(st.ids.btn_change_pin)
    yield lambda: p.app.root.current == "pin"       # a tap inside a ScrollView arrives a little later
    yield 2
    changing = {"screen": p.app.root.current, "creating": pin.creating}
    p.type_text(pin.ids.pin, "97531")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 2
    p.touch(st.ids.btn_back)
    yield lambda: p.app.root.current == "capture"
    yield 2
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current == "pin"
    yield 2
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: pin.error or p.app.root.current == "settings"
    old_refused = p.app.root.current == "pin" and pin.error
    p.type_text(pin.ids.pin, "97531")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    p.report["settings"]["pin_change"] = {**changing, "old_refused": old_refused}


def mixup(p):
    """The reported sample mix-up, by touch: sample S-1 with image A (chosen by touching its row),
    finish, "New sample", type S-2, start, tap "Add this field" at once (must not add A), then choose
    image B by touch and add it."""
    a = p.args
    cap = p.screen("capture")
    yield from wait_model(p)
    cap.ids.chooser.path = str(Path(a.smear).parent)
    yield 3
    yield from start_sample(p, "S-1")
    p.scroll_to_file(a.smear)
    yield 3
    p.touch(p.file_row(a.smear))
    yield lambda: cap.ids.chooser.selection   # a ScrollView passes a tap on after a short delay
    p.log(f"selection {cap.ids.chooser.selection}, sample '{cap.sample_open}'")
    p.touch(cap.ids.btn_screen)
    yield 1
    yield lambda: p.result_done() and p.ctl._pending == 0
    yield 2
    p.report["first"] = result_state(p)
    p.report["after_field"] = capture_state(p)       # the file is not selected any more
    yield from finish(p)
    yield from new_sample(p)
    p.report["after_new_sample"] = capture_state(p)
    p.screenshot("capture_new_sample")
    yield from start_sample(p, "S-2")
    p.touch(cap.ids.btn_screen)             # the reported step: tapping the add button with the new ID
    yield 5
    yield lambda: not p.ctl.busy and p.ctl._pending == 0
    p.report["screen_without_image"] = {**capture_state(p), "fields": len(p.ctl._statuses)}
    p.scroll_to_file(a.smear2)
    yield 3
    p.touch(p.file_row(a.smear2))
    yield lambda: cap.ids.chooser.selection
    p.touch(cap.ids.btn_screen)
    yield 1
    yield lambda: p.result_done() and p.ctl._pending == 0
    yield 2
    p.report["second"] = result_state(p)
    yield from finish(p)
    p.report["stored"] = stored(p)


def scan(p):
    """The sample ID read from a QR label held in front of the camera (``--camera`` a video of it):
    Scan ID, Start sample, one field captured, finish; the sample's ID source is "scanned"."""
    cap = p.screen("capture")
    yield from wait_model(p)
    p.touch(cap.ids.btn_camera)
    yield lambda: p.ctl._frame is not None
    yield 3
    p.touch(cap.ids.btn_scan)
    yield 1
    yield lambda: not p.ctl.busy and (cap.sample_id() or cap.status_error)
    yield 2
    p.report["scanned"] = {"text": cap.sample_id(), "status": cap.status_text, "source": cap.id_source()}
    p.screenshot("scanned")
    p.touch(cap.ids.btn_start)
    yield lambda: cap.sample_open or cap.status_error
    yield 2
    yield from screen_now(p)
    yield from finish(p)
    p.app.go("capture")
    yield 1
    p.touch(cap.ids.btn_camera)
    yield 2
    p.report["stored"] = stored(p)


def relanguage(p):
    """The language changed (screens re-created) while a sample is open: the sample stays open on the
    new capture screen and its next field is added to it."""
    a = p.args
    yield from wait_model(p)
    yield from start_sample(p, "LANG-1")
    yield from add_field(p, a.smear)
    set_language("fr")
    p.ctl.settings.language = "fr"
    p.app.rebuild_screens()
    yield 3
    p.app.go("capture")
    yield 2
    cap = p.screen("capture")
    p.report["after_rebuild"] = {"sample_open": cap.sample_open, "sample_id": cap.ids.sample_id.text,
                                 "sample_text": cap.sample_text, "start_button": cap.ids.btn_start.text}
    yield from add_field(p, a.smear2 or a.smear)
    p.report["stored"] = stored(p)


def records_trouble(p):
    """A damaged database at start (moved aside, salvaged, said on screen), then the database file
    removed while a sample is open: the next field is shown but "NOT saved", finishing says why, and
    the app keeps running."""
    a = p.args
    cap, res = p.screen("capture"), p.screen("result")
    yield from wait_model(p)
    p.report["notice"] = {"text": cap.notice_text, "error": cap.notice_error}
    p.screenshot("notice")
    yield from start_sample(p, "R-1")
    yield from add_field(p, a.smear)
    p.report["first"] = {"note": res.note_text, "saved": p.ctl.last_step is not None}
    os.remove(p.ctl.db_path)                 # the storage went away under the running app
    yield from add_field(p, a.smear2 or a.smear)
    p.report["second"] = {"note": res.note_text, "status": cap.status_text, "error": cap.status_error,
                          "probability_text": res.probability_text, "screen": p.app.root.current}
    p.screenshot("not_saved")
    p.touch(res.ids.btn_finish)
    yield lambda: not p.ctl.busy
    yield 3
    p.report["finish"] = {"note": res.note_text, "finished": res.finished, "screen": p.app.root.current}


def fill_disk(filler: Path) -> Path:
    """Write ``filler`` until the file system holding it is full, to the last byte (a real ENOSPC
    for whatever is written there next)."""
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * 4096
        while True:
            try:
                fh.write(block)
            except OSError:
                break
        for n in (512, 64, 1):  # the tail, smaller than a block
            while True:
                try:
                    fh.write(b"\0" * n)
                except OSError:
                    break
    return filler


def disk_full(p):
    """The disk holding the history fills up during a sample (``--fill FILE`` is written until the device
    is full): the next field is shown and the screen says it was NOT saved, or saved without its image;
    with the filler removed the next field is saved, and the sample finishes."""
    a = p.args
    cap, res = p.screen("capture"), p.screen("result")
    yield from wait_model(p)
    yield from start_sample(p, "FULL-1")
    yield from add_field(p, a.smear)
    p.report["first"] = {"note": res.note_text, "saved": p.ctl.last_step is not None}
    fill_disk(Path(a.fill))
    p.ctl.last_step = None
    yield from add_field(p, a.smear2 or a.smear)
    p.report["second"] = {"note": res.note_text, "status": cap.status_text, "error": cap.status_error,
                          "probability_text": res.probability_text, "saved": p.ctl.last_step is not None}
    os.remove(a.fill)
    p.ctl.last_step = None
    yield from add_field(p, a.smear)
    p.report["third"] = {"note": res.note_text, "saved": p.ctl.last_step is not None}
    yield from finish(p)
    p.report["finish"] = {"note": res.note_text, "finished": res.finished}


def session(p):
    """Issue 22's two-sample session at the window's size, every screen audited (see :func:`audit`) and
    screenshotted as ``session_*``: sample A with fields ``--fields-a`` (one unusable), finished and handed
    over; "New sample"; sample B with ``--fields-b``; History, a sample's detail, voiding a field with a
    reason; the model, guide, PIN and settings screens."""
    a = p.args
    if a.language:
        set_language(a.language)
        p.ctl.settings.language = a.language      # as if chosen in Settings (not saved)
        p.app.rebuild_screens()
        yield 2
    yield from wait_model(p)
    p.report["audit"] = {}

    def check(name, as_name):
        p.report["audit"][as_name] = audit(p, name)
        p.report["audit"][as_name]["screen"] = name
        p.screenshot(f"session_{as_name}-{a.size}")

    if a.start_dir:
        p.screen("capture").ids.chooser.path = a.start_dir
        yield 2
    check("capture", "01_capture")
    yield from start_sample(p, a.sample_a)
    p.report["sample_a"] = {"fields": []}
    for i, f in enumerate(a.fields_a, 1):
        yield from add_field(p, f)
        p.report["sample_a"]["fields"].append(result_state(p))
        check("result", f"{2 + i:02d}_a_field{i}")
        if i == 1:
            p.app.go("capture")
            yield 3
            check("capture", "02_a_capture")          # the open sample on the capture screen
    yield from finish(p)
    p.report["sample_a"]["finished"] = result_state(p)
    yield from hand_over_all(p)
    check("result", "06_a_finished")
    p.report["exports"] = sorted(f.name for f in p.ctl.export_folder().glob("*"))
    yield from new_sample(p)
    p.report["after_new_sample"] = capture_state(p)
    check("capture", "07_new_sample")
    yield from start_sample(p, a.sample_b)
    p.report["sample_b"] = {"fields": []}
    for i, f in enumerate(a.fields_b, 1):
        yield from add_field(p, f)
        p.report["sample_b"]["fields"].append(result_state(p))
        if i == len(a.fields_b):
            check("result", "08_b_last_field")
    yield from finish(p)
    p.report["sample_b"]["finished"] = result_state(p)
    check("result", "09_b_finished")
    p.touch(p.screen("result").ids.btn_history)
    yield lambda: p.app.root.current == "history"
    yield lambda: len(p.screen("history").ids.rv.data) >= 2
    yield 3
    p.report["history"] = [d["text"] for d in p.screen("history").ids.rv.data]
    check("history", "10_history")
    rows = p.screen("history").ids.rv.children[0].children
    p.touch(rows[-2])                # the second row from the top: sample A
    yield lambda: p.app.root.current == "detail"
    yield 3
    p.report["detail"] = p.screen("detail").text
    check("detail", "11_detail")
    p.touch(p.screen("detail").ids.btn_amend)
    yield lambda: p.app.root.current == "amend"
    yield 2
    am = p.screen("amend")
    void = next((k for k in am.actions if k.endswith(" 2")), am.actions[-1])
    am.ids.action.text = void                     # "Void field 2"
    yield 2
    p.touch(am.ids.btn_save)                      # no reason: refused
    yield 2
    p.report["amend_without_reason"] = {"message": am.message, "error": am.error}
    p.type_text(am.ids.reason, "wrong slide")
    yield 1
    check("amend", "12_amend")
    p.touch(am.ids.btn_save)
    yield lambda: p.app.root.current == "detail"
    yield 3
    p.report["detail_after_void"] = p.screen("detail").text
    p.report["stored"] = stored(p)
    for name in ("model", "guide", "pin"):
        p.app.go(name)
        yield 4
        check(name, {"model": "13_model", "guide": "14_guide", "pin": "15_pin"}[name])
    p.app.go("capture")
    yield 2
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current == "pin"
    yield 2
    p.type_text(p.screen("pin").ids.pin, "1357")
    p.touch(p.screen("pin").ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 3
    check("settings", "16_settings")
    p.app.go("capture")
    yield 2
    if a.camera:      # a video file as the camera
        cap = p.screen("capture")
        p.touch(cap.ids.btn_camera)
        yield lambda: p.ctl._frame is not None and p.ctl.framing is not None   # the framing hint is shown
        yield 4
        check("capture", "17_camera")
        p.touch(cap.ids.btn_camera)
        yield 2


def framing(p):
    """Live framing guidance (``--camera`` a video of segments): with a sample open, the camera on; every
    judged preview frame's hint is recorded with the video position it came from until the video has
    played ``--repeat`` times; a field is captured while the hint is not "ready" (guidance, not a lock);
    the guidance stops off the capture screen, resumes on it, and stops with the camera."""
    import threading

    a, cap = p.args, p.screen("capture")
    yield from wait_model(p)
    yield from start_sample(p, "FRAME-1")
    p.touch(cap.ids.btn_camera)
    yield lambda: p.ctl._frame is not None
    seen, state = [], {"wraps": 0, "pos": None, "last": None}
    p.report["framing"] = {"main_thread": threading.current_thread().name, "main_thread_id": threading.get_ident(),
                           "seen": seen}

    def watch():
        f = p.ctl.framing
        if f is not None and f is not state["last"]:
            state["last"] = f
            seen.append({"pos": f.frame_pos, "status": f.status, "hint": cap.hint_text, "ready": cap.hint_ready,
                         "thread": f.thread, "thread_id": f.thread_id, "ms": round(f.ms, 2), "size": list(f.size),
                         "guide": p.screen("capture").ids.preview.guide is f})
        pos = p.ctl._frame_pos
        if pos is not None and state["pos"] is not None and pos < state["pos"]:
            state["wraps"] += 1
        state["pos"] = pos
        return state["wraps"] >= a.repeat

    t0 = time.monotonic()
    yield watch
    fr = p.report["framing"]
    fr["seconds"] = round(time.monotonic() - t0, 2)
    yield lambda: p.ctl.framing is not None and p.ctl.framing.ready
    yield 3
    label = cap.ids.framing_hint
    from kivy.metrics import sp

    fr["label"] = {"text": label.text, "sp": label.font_size / sp(1), "rect": p.rect(label),
                   "preview_rect": p.rect(cap.ids.preview), "audit": audit(p, "capture")}
    p.screenshot("framing_ready")
    yield lambda: p.ctl.framing is not None and not p.ctl.framing.ready
    fr["captured_with"] = cap.hint_text
    p.screenshot("framing_not_ready")
    n = len(p.ctl._statuses)
    yield from screen_now(p)
    fr["captured"] = len(p.ctl._statuses) - n
    fr["left_to"] = p.app.root.current
    done = p.ctl._framing.evaluations
    fr["running_off_screen"] = p.ctl._framing.running
    yield 30
    fr["evaluations_off_screen"] = p.ctl._framing.evaluations - done
    p.touch(p.screen("result").ids.btn_add)
    yield lambda: p.app.root.current == "capture"
    yield lambda: p.ctl._framing.evaluations > done
    fr["resumed"] = p.ctl._framing.running
    p.touch(cap.ids.btn_camera)
    yield 2
    done = p.ctl._framing.evaluations
    yield 30
    fr["after_stop"] = {"running": p.ctl._framing.running, "hint": cap.hint_text, "camera": p.ctl.source is not None,
                        "evaluations": p.ctl._framing.evaluations - done, "guide": cap.ids.preview.guide is not None}
    fr["evaluations"] = p.ctl._framing.evaluations


def audit(p, name: str) -> dict:
    """Sizes on the current screen: touch targets, font sizes, text wider than its widget."""
    from kivy.core.window import Window
    from kivy.metrics import dp, sp
    from kivy.uix.button import Button
    from kivy.uix.label import Label
    from kivy.uix.slider import Slider
    from kivy.uix.textinput import TextInput

    def shown(w):
        while w is not None and w is not Window:
            if w.opacity <= 0 or w.height < 1 or w.width < 1:
                return False
            w = w.parent
        return True

    screen = p.screen(name)
    problems, n_targets, n_labels = [], 0, 0
    for w in screen.walk(restrict=True):
        if not shown(w):
            continue
        label = f"{type(w).__name__}#{next((k for k, v in screen.ids.items() if v is w), '')} '{str(getattr(w, 'text', ''))[:40]}'"
        if isinstance(w, (Button, TextInput, Slider)):
            n_targets += 1
            if w.height < dp(48) - 0.5 or w.width < dp(48) - 0.5:
                problems.append(f"touch target {label} is {w.width:.0f}x{w.height:.0f} px (< 48 dp)")
        if isinstance(w, Label) and w.text:
            n_labels += 1
            w.texture_update()
            if w.font_size < sp(16) - 0.01:
                problems.append(f"text {label} at {w.font_size / sp(1):.0f} sp (< 16 sp)")
            if w.texture_size[0] > w.width + 1:
                problems.append(f"text {label} is {w.texture_size[0]} px wide in a {w.width:.0f} px widget")
            if w.texture_size[1] > w.height + 1:
                problems.append(f"text {label} is {w.texture_size[1]} px tall in a {w.height:.0f} px widget")
    out = {"problems": problems, "touch_targets": n_targets, "labels": n_labels,
           "window": [Window.width, Window.height]}
    if name == "capture":
        out["status"] = screen.status_text
    if name == "result":
        h = screen.ids.headline
        out["verdict_sp"] = h.font_size / sp(1)
        out["image_px"] = [round(screen.ids.image_box.width), round(screen.ids.image_box.height)]
        vis, text = p.rect(screen.ids.visual), p.rect(screen.ids.text_box)
        out["side_by_side"] = vis[2] <= text[0] + 1
    return out


def latency(p):
    """Add each image N times as fields (a new sample every 5 fields) and record 'image handed to
    the session -> field result on screen' latencies (and 'saved')."""
    a = p.args
    yield from wait_model(p)
    k = 0
    for _ in range(a.repeat):
        for img in a.images:
            if k % 5 == 0:
                if p.ctl.session.sample_uid is not None:
                    yield from finish(p)
                    yield from new_sample(p)
                yield from start_sample(p, f"LAT-{k // 5 + 1:03d}")
            yield from add_field(p, img)
            k += 1
    timings = p.ctl.last_result.timings if p.ctl.last_result else {}
    p.report["inference_timings_ms"] = timings
    p.report["saved_ms"] = list(p.ctl.saved_ms)


def startup(p):
    """Cold start: first frame and model-ready times are recorded by the pilot; then quit."""
    yield from wait_model(p)


SCENARIOS = {"tour": tour, "mixup": mixup, "session": session, "layout": session, "latency": latency,
             "startup": startup, "records_trouble": records_trouble, "scan": scan, "disk_full": disk_full,
             "relanguage": relanguage, "framing": framing}
