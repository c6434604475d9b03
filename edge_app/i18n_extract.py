"""Find the translatable strings of the app: ``_("...")`` / ``N_("...")`` in Python and .kv files.

Used by ``scripts/update_translations.py`` (writes the ``.pot`` template and merges the
``.po`` files) and by ``tests/test_i18n.py`` (every string has a translation; no bare
user-facing literal in a .kv file).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

#: Files with user-facing text, relative to the edge_app folder.
PY_GLOBS = ("presenter.py", "controller.py", "gui.py", "screens/*.py", "records/wording.py")
KV_GLOB = "kv/*.kv"
MARKERS = {"_", "N_"}

_KV_CALL = re.compile(r"""\b_\(\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*\)""")
#: kv properties that show text to the user.
_KV_TEXT_PROP = re.compile(r"""^\s*(text|hint_text)\s*:\s*(.*)$""")
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""")


def python_messages(path: Path) -> list[str]:
    """Constant first arguments of ``_()``/``N_()`` calls (implicit concatenation included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in MARKERS
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append(node.args[0].value)
    return out


def kv_messages(path: Path) -> list[str]:
    return [ast.literal_eval(m.group(1)) for m in _KV_CALL.finditer(path.read_text())]


def kv_bare_strings(path: Path) -> list[tuple[int, str]]:
    """``text:``/``hint_text:`` values holding a string literal outside ``_()`` (untranslated)."""
    found = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = _KV_TEXT_PROP.match(line)
        if not m:
            continue
        expr = _KV_CALL.sub("_()", m.group(2))
        expr = re.sub(r'\.format\(', "(", expr)
        for s in _STRING.findall(expr):
            if re.search(r"[A-Za-z]", ast.literal_eval(s)):
                found.append((n, s))
    return found


def all_messages(app_dir: Path) -> dict[str, list[str]]:
    """``{msgid: [where, ...]}`` over the app's Python and kv files."""
    out: dict[str, list[str]] = {}
    files = [f for g in PY_GLOBS for f in sorted(app_dir.glob(g))]
    for f in files:
        for msg in python_messages(f):
            out.setdefault(msg, []).append(str(f.relative_to(app_dir)))
    for f in sorted(app_dir.glob(KV_GLOB)):
        for msg in kv_messages(f):
            out.setdefault(msg, []).append(str(f.relative_to(app_dir)))
    return out
