#!/usr/bin/env python
"""Update the app's translation catalogues: extract the strings, merge them into each .po, compile .mo.

Writes ``edge_app/locale/leukedge.pot`` from the ``_()``/``N_()`` strings of the app
(:mod:`leukedge.edge_app.i18n_extract`), keeps every existing translation of each
``edge_app/locale/<lang>/LC_MESSAGES/leukedge.po``, adds new strings untranslated (empty
msgstr: ``tests/test_i18n.py`` then fails until a translator fills them in), drops strings no
longer used, and compiles each .po with GNU ``msgfmt`` (``apt install gettext``).

Usage: python scripts/update_translations.py [--check]
"""
from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

APP = Path("edge_app")
LOCALE = APP / "locale"


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def read_po(path: Path) -> dict[str, str]:
    """msgid -> msgstr of a simple .po file (no plurals/contexts: the app uses none)."""
    entries, key, cur, field = {}, None, [], None

    def flush():
        if field == "msgstr" and key is not None:
            entries[key] = "".join(cur)

    msgid = None
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        line = line.strip()
        if line.startswith("msgid "):
            flush()
            field, cur = "msgid", [ast.literal_eval(line[6:])]
        elif line.startswith("msgstr "):
            msgid, field, cur = "".join(cur), "msgstr", [ast.literal_eval(line[7:])]
            key = msgid
        elif line.startswith('"') and field:
            cur.append(ast.literal_eval(line))
        elif not line or line.startswith("#"):
            flush()
            field, key = None, None
    entries.pop("", None)
    return entries


def write_po(path: Path, messages: dict[str, list[str]], translations: dict[str, str], lang: str) -> None:
    lines = [f"# LeukEdge app, {lang}.", 'msgid ""', 'msgstr ""',
             '"Content-Type: text/plain; charset=UTF-8\\n"', f'"Language: {lang}\\n"', ""]
    for msg, where in messages.items():
        lines.append("#: " + " ".join(sorted(set(where))))
        lines += [f"msgid {quote(msg)}", f"msgstr {quote(translations.get(msg, ''))}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    sys.path.insert(0, str(Path.cwd()))
    from leukedge.edge_app.i18n_extract import all_messages

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    messages = all_messages(APP)
    write_po(LOCALE / "leukedge.pot", messages, {}, "template")
    msgfmt = shutil.which("msgfmt")
    for po in sorted(LOCALE.glob("*/LC_MESSAGES/leukedge.po")):
        lang = po.parent.parent.name
        old = read_po(po)
        write_po(po, messages, old, lang)
        missing = [m for m in messages if not old.get(m)]
        print(f"{po}: {len(messages) - len(missing)}/{len(messages)} translated")
        if msgfmt is None:
            print("msgfmt not found (apt install gettext): .mo not compiled", file=sys.stderr)
            return 1
        subprocess.run([msgfmt, "--check-format", "-o", str(po.with_suffix(".mo")), str(po)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
