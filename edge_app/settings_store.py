"""App settings kept across restarts: a JSON file in the app's data folder, the PIN as a salted hash.

The PIN is never stored: ``pbkdf2_hmac("sha256", pin, salt, ITERATIONS)`` with a random
16-byte salt is, and :meth:`AppSettings.check_pin` compares in constant time. The file is
written atomically, so a crash never leaves half a settings file.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leukedge.errors import ConfigError
from leukedge.fileio import atomic_write_text

log = logging.getLogger(__name__)

FILE_NAME = "settings.json"
ITERATIONS = 200_000
MIN_PIN_DIGITS = 4


def hash_pin(pin: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    return hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations).hex()


@dataclass
class AppSettings:
    """What the settings screen changes.

    Attributes:
        model: release folder name (None: the recommended release).
        threads: interpreter threads (None: the runtime's default).
        operating_point: a validated operating point of that release (None: the spec's default).
        language: ``en`` or ``fr``.
        pin: ``{"salt": hex, "hash": hex, "iterations": n}`` or None when no PIN is set yet.
    """

    model: str | None = None
    threads: int | None = None
    operating_point: str | None = None
    language: str = "en"
    pin: dict | None = field(default=None, repr=False)

    # ----- PIN ---------------------------------------------------------------------------
    @property
    def has_pin(self) -> bool:
        return bool(self.pin and self.pin.get("hash"))

    def set_pin(self, pin: str) -> None:
        if not (pin.isdigit() and len(pin) >= MIN_PIN_DIGITS):
            raise ConfigError(f"a PIN needs at least {MIN_PIN_DIGITS} digits", "type digits only")
        salt = secrets.token_bytes(16)
        self.pin = {"salt": salt.hex(), "hash": hash_pin(pin, salt), "iterations": ITERATIONS}

    def check_pin(self, pin: str) -> bool:
        if not self.has_pin:
            return False
        want = self.pin["hash"]
        got = hash_pin(pin, bytes.fromhex(self.pin["salt"]), int(self.pin.get("iterations", ITERATIONS)))
        return hmac.compare_digest(got, want)

    # ----- file --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "AppSettings":
        """The settings in ``path`` (defaults when it does not exist or cannot be read)."""
        path = Path(path)
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            return cls(**known)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: cannot read the settings (%s); using defaults", path, exc)
            return cls()

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def settings_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / FILE_NAME
