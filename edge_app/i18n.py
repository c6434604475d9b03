"""User-facing text through gettext: ``_("English text")`` in Python and in the .kv files.

Catalogues live in ``edge_app/locale/<lang>/LC_MESSAGES/leukedge.po`` (the source, edited by
translators) and ``.mo`` (compiled with GNU ``msgfmt``: ``scripts/compile_translations.sh``;
the compiled files are committed so the app needs no build step). English is the source
language. ``tests/test_i18n.py`` fails on any user-facing string without a French translation.
"""
from __future__ import annotations

import gettext
import logging
from importlib import resources

log = logging.getLogger(__name__)

DOMAIN = "leukedge"
#: Language code -> its own name (shown in Settings).
LANGUAGES = {"en": "English", "fr": "Français"}
DEFAULT_LANGUAGE = "en"

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = DEFAULT_LANGUAGE


def locale_dir() -> str:
    return str(resources.files("leukedge.edge_app") / "locale")


def set_language(code: str) -> str:
    """Use language ``code`` for every later ``_()`` call; unknown codes fall back to English."""
    global _translation, _language
    if code not in LANGUAGES:
        log.warning("unknown language %r, using English", code)
        code = DEFAULT_LANGUAGE
    _translation = gettext.translation(DOMAIN, locale_dir(), languages=[code], fallback=True)
    _language = code
    return code


def language() -> str:
    return _language


def _(message: str) -> str:
    """The translation of ``message`` in the current language."""
    return _translation.gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for translation without translating it now (translate with ``_`` when shown)."""
    return message
