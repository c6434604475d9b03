"""Ed25519 signatures (pyca ``cryptography``) and the trust store of public keys.

A release is signed by signing the exact bytes of its ``card.json`` (which lists the sha256
of every file the runtime reads, see :mod:`leukedge.release_check`). The signature lives
beside it in ``card.sig``, a small JSON document::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signed_file": "card.json",
     "signature": "<base64 of the 64-byte signature>"}

``key_id`` is the first 16 hex digits of the sha256 of the raw 32-byte public key.

Trusted public keys (PEM, ``*.pub``) are read from, in order:

1. ``leukedge/trusted_keys/`` shipped with the package (the project's release key);
2. every folder in ``$LEUKEDGE_TRUSTED_KEYS`` (``os.pathsep``-separated);
3. the user's folder ``$XDG_CONFIG_HOME/leukedge/trusted-keys`` (default
   ``~/.config/leukedge/trusted-keys``): where a clinic puts its own keys.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.resources
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

ALGORITHM = "ed25519"
SIGNATURE_FILE = "card.sig"
SIGNED_FILE = "card.json"
KEY_ID_CHARS = 16
ENV_TRUSTED_KEYS = "LEUKEDGE_TRUSTED_KEYS"
#: Largest key or signature file read (bytes): both are tiny; anything bigger is not one.
MAX_SMALL_FILE = 64 * 1024


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short id of a public key: sha256 of its raw 32 bytes, first 16 hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_CHARS]


def _read_small(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what} file")
    if path.stat().st_size > MAX_SMALL_FILE:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for an {what} file")
    return path.read_bytes()


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (unencrypted PKCS#8).

    Raises:
        ConfigError: missing file, not a PEM key, or not Ed25519.
    """
    p = Path(path)
    data = _read_small(p, "Ed25519 private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{p}: not an unencrypted PEM private key ({type(exc).__name__})",
                          "pass the Ed25519 private key made by `leukedge release keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{p}: a {type(key).__name__}, not an Ed25519 key", "releases are signed with Ed25519 keys")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file.

    Raises:
        ConfigError: missing file, not a PEM public key, or not Ed25519.
    """
    p = Path(path)
    data = _read_small(p, "Ed25519 public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{p}: not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{p}: a {type(key).__name__}, not an Ed25519 key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The PEM (SubjectPublicKeyInfo) of a key's public half."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM of a private key (to save a new key; never log it)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# ----- trust store ------------------------------------------------------------------------
def user_keys_dir() -> Path:
    """The user's folder of trusted keys (``$XDG_CONFIG_HOME/leukedge/trusted-keys``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "leukedge" / "trusted-keys"


def trust_dirs() -> list[Path]:
    """Folders searched for trusted ``*.pub`` keys, in order (see module docstring)."""
    dirs = [Path(str(importlib.resources.files("leukedge") / "trusted_keys"))]
    dirs += [Path(d).expanduser() for d in os.environ.get(ENV_TRUSTED_KEYS, "").split(os.pathsep) if d]
    dirs.append(user_keys_dir())
    return dirs


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    key: Ed25519PublicKey
    source: Path


def trusted_keys(dirs: list[Path] | None = None) -> dict[str, TrustedKey]:
    """``{key_id: TrustedKey}`` of every readable Ed25519 ``*.pub`` in the trust folders.

    An unreadable or non-Ed25519 file is skipped with a warning (it trusts nothing).
    """
    out: dict[str, TrustedKey] = {}
    for d in trust_dirs() if dirs is None else dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.pub")):
            try:
                k = load_public_key(f)
            except ConfigError as exc:
                log.warning("trust store: %s skipped (%s)", f, exc.one_line())
                continue
            out.setdefault(key_id(k), TrustedKey(key_id(k), k, f))
    return out


# ----- signatures -------------------------------------------------------------------------
def sign_bytes(data: bytes, key: Ed25519PrivateKey) -> dict:
    """The signature document (``card.sig`` contents) of ``data``."""
    return {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()), "signed_file": SIGNED_FILE,
            "signature": base64.b64encode(key.sign(data)).decode("ascii")}


def read_signature(path: Path) -> dict:
    """Parse a ``card.sig`` file.

    Raises:
        ModelError: missing, unreadable or malformed.
    """
    if not path.is_file() or path.is_symlink():
        raise ModelError(f"{path.parent}: unsigned release (no {path.name})",
                         "sign it with `leukedge release sign DIR --key KEY`, or pass --allow-unsigned for development")
    try:
        doc = json.loads(path.read_bytes()[:MAX_SMALL_FILE])
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path}: not a valid signature file ({type(exc).__name__})",
                         "re-sign the release with `leukedge release sign`") from None
    if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM \
            or not isinstance(doc.get("key_id"), str) or not isinstance(doc.get("signature"), str):
        raise ModelError(f"{path}: not an Ed25519 signature file (needs algorithm, key_id, signature)",
                         "re-sign the release with `leukedge release sign`")
    return doc


def verify_bytes(data: bytes, doc: dict, keys: dict[str, TrustedKey], where: str) -> TrustedKey:
    """Check that ``doc`` is a valid signature of ``data`` by a trusted key; returns that key.

    Raises:
        ModelError: untrusted key id, or a signature that does not match ``data``.
    """
    kid = doc["key_id"]
    trusted = keys.get(kid)
    if trusted is None:
        raise ModelError(f"{where}: signed by key {kid[:KEY_ID_CHARS]}, which is not in the trust store",
                         f"if you trust its maker, put their public key in {user_keys_dir()} "
                         f"(or a folder named by ${ENV_TRUSTED_KEYS}); see docs/trust.md")
    try:
        sig = base64.b64decode(doc["signature"], validate=True)
        trusted.key.verify(sig, data)
    except (binascii.Error, ValueError, InvalidSignature):
        raise ModelError(f"{where}: the signature does not match card.json (changed after signing, or a forged "
                         f"signature)", "refusing the release; re-download it, or re-sign it if you changed it") from None
    return trusted
