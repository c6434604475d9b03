"""Every user-facing string goes through gettext and has a French translation."""
from __future__ import annotations

import gettext
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leukedge.edge_app import i18n, presenter
from leukedge.edge_app.i18n_extract import all_messages, kv_bare_strings
from leukedge.edge_app.quality import GUIDANCE

APP = Path("edge_app")
PO = APP / "locale" / "fr" / "LC_MESSAGES" / "leukedge.po"
FIELD = re.compile(r"\{[^}]*\}")


@pytest.fixture
def french():
    i18n.set_language("fr")
    yield gettext.translation(i18n.DOMAIN, i18n.locale_dir(), languages=["fr"])
    i18n.set_language("en")


def test_no_bare_text_in_kv_files():
    bare = {str(f): kv_bare_strings(f) for f in sorted((APP / "kv").glob("*.kv"))}
    assert not any(bare.values()), {k: v for k, v in bare.items() if v}


def test_every_string_has_a_french_translation(french):
    messages = all_messages(APP)
    assert len(messages) > 100                     # the extractor sees the app's text
    same_in_french = {"{name}  version {version}"}   # no words to translate
    missing = [m for m in messages if french.gettext(m) == m and m not in same_in_french]
    assert missing == [], missing
    for m in messages:                             # the same {fields} on both sides
        assert sorted(FIELD.findall(m)) == sorted(FIELD.findall(french.gettext(m))), m


def test_quality_advice_and_verdicts_are_in_the_catalogue(french):
    messages = all_messages(APP)
    assert set(GUIDANCE.values()) <= set(messages)  # edge_app/quality.py's advice is translated
    for v in presenter.VERDICTS:
        t = presenter.verdict_texts(v)
        assert t["headline"] and t["next_step"] and t["headline"] != presenter.VERDICT_TEXT[v][0]
    assert "n'exclut pas" in presenter.verdict_texts(presenter.NO_SIGNS)["next_step"]


def test_compiled_catalogue_matches_the_po_file():
    sys.path.insert(0, "scripts")
    from update_translations import read_po

    po = read_po(PO)
    mo = gettext.GNUTranslations(open(PO.with_suffix(".mo"), "rb"))
    assert po and all(mo.gettext(k) == v for k, v in po.items())
    if shutil.which("msgfmt"):
        r = subprocess.run(["msgfmt", "--check-format", "-o", "/dev/null", str(PO)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_unknown_language_falls_back_to_english():
    assert i18n.set_language("xx") == "en"
    assert i18n._(presenter.POSITIVE) == presenter.POSITIVE
