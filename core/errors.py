"""Errors a user can act on.

Every error raised for bad input derives from :class:`LeukEdgeError`; the CLI turns it
into a one-line message and a non-zero exit, the app into a message on screen.
"""
from __future__ import annotations
import difflib


class LeukEdgeError(Exception):
    """An error caused by the user's input, with a hint on how to fix it.

    Args:
        message: what was found.
        hint: what is allowed / how to fix it (optional).
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message.rstrip(". ")
        if self.hint:
            text += f". {self.hint.rstrip('. ')}"
        return text.replace("\n", " ")


class ImageError(LeukEdgeError):
    """An image file that cannot be used (not an image, truncated, too large...)."""


class DataError(LeukEdgeError):
    """A data folder or manifest that cannot be used."""


class ModelError(LeukEdgeError):
    """A model file or release folder that cannot be used (missing, corrupt, tampered)."""


class ConfigError(LeukEdgeError):
    """An unknown name or an invalid setting."""


def did_you_mean(name: str, choices) -> str:
    """Return a 'did you mean' hint for an unknown registry name."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"choose one of: {', '.join(choices)}"
    if close:
        hint = f"did you mean '{close[0]}'? ({hint})"
    return hint
