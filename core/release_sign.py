"""Sign a release folder: refresh the card's file list and hashes, then sign ``card.json``.

:func:`sign_release` is what ``leukedge release sign DIR --key KEY`` runs and what a
pipeline calls after writing a release. It never copies, prints or logs the private key:
the key is read from its path, used, and dropped.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .card import CARD_SCHEMA, card_markdown
from .errors import ModelError
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from .release_check import (VERIFIED, ReleaseCheck, card_files, inside, provenance_files, runtime_files,
                            verify_release)
from .spec import ModelSpec
from .trust import SIGNATURE_FILE, SIGNED_FILE, key_id, load_private_key, sign_bytes, trusted_keys

log = logging.getLogger(__name__)


def refresh_card_files(folder: Path, card: dict) -> dict:
    """Set the card's ``files`` (and ``file_sizes``, ``spec_sha256``) to the current sha256 of
    every file the runtime reads, the release's provenance records (recipe, compress record,
    split, evaluation, parity, capture bench: :data:`~leukedge.release_check.PROVENANCE_FILES`)
    and every other listed file that still exists.

    Raises:
        ModelError: a listed or runtime path outside the folder, or a runtime file missing.
    """
    spec = ModelSpec.load(folder)
    listed = card_files(card) if isinstance(card.get("files"), dict) else {}
    names = set(runtime_files(folder, spec)) | set(provenance_files(folder))
    for n in listed:
        if inside(folder, n, "listed file").is_file():
            names.add(n)
        else:
            log.warning("%s: %s is listed in card.json but gone; dropped from the card", folder, n)
    files, sizes = {}, {}
    for n in sorted(names):
        p = inside(folder, n, "file")
        if not p.is_file():
            raise ModelError(f"{p}: the spec names it but it does not exist", "restore the file or fix spec.json")
        files[n], sizes[n] = sha256_file(p), p.stat().st_size
    card["files"] = files
    card["file_sizes"] = sizes
    if "spec_sha256" in card:
        card["spec_sha256"] = files["spec.json"]
    return card


def sign_card(folder: Path, key: Ed25519PrivateKey) -> dict:
    """Sign the current bytes of ``folder/card.json`` and write ``card.sig``; returns the signature doc."""
    data = (folder / SIGNED_FILE).read_bytes()
    doc = sign_bytes(data, key)
    atomic_write_bytes(folder / SIGNATURE_FILE, (json.dumps(doc, indent=2) + "\n").encode("ascii"))
    return doc


def sign_release(folder: str | os.PathLike, key_path: str | os.PathLike, refresh: bool = True) -> ReleaseCheck:
    """Refresh ``card.json``'s file hashes (``refresh``), rewrite ``card.md``, sign the card.

    Args:
        folder: the release folder (``models/<name>``, with ``spec.json`` and ``card.json``).
        key_path: the Ed25519 private key (PEM).
        refresh: re-hash the files first (False: sign the card exactly as it is).

    Returns:
        The verification of the signed release (``unsigned`` with a warning when the key is
        not in this machine's trust store yet).

    Raises:
        ModelError / ConfigError: no release there, unreadable key, a path outside the folder.
    """
    folder = Path(folder)
    key = load_private_key(key_path)
    if not folder.is_dir() or not (folder / SIGNED_FILE).is_file():
        raise ModelError(f"{folder}: no card.json (not a release folder)",
                         "sign a release folder made by `leukedge compress` (models/<name>)")
    try:
        card = json.loads((folder / SIGNED_FILE).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ModelError(f"{folder / SIGNED_FILE}: not a valid model card ({type(exc).__name__})") from None
    if not isinstance(card, dict):
        raise ModelError(f"{folder / SIGNED_FILE}: a model card must be a JSON object")
    if refresh:
        refresh_card_files(folder, card)
        atomic_write_json(folder / SIGNED_FILE, card)
        if card.get("schema") == CARD_SCHEMA and (folder / "card.md").exists():
            atomic_write_text(folder / "card.md", card_markdown(card) + "\n")
    check = verify_release(folder, signature=False)  # complete, hashes, schema, paths: else nothing is signed
    sign_card(folder, key)
    kid = key_id(key.public_key())
    del key
    trusted = trusted_keys().get(kid)
    if trusted is None:
        log.warning("%s: signed with key %s, which is NOT in this machine's trust store: `release verify` and the "
                    "app will refuse it until its public key is added (docs/trust.md)", folder, kid)
        check.problem = f"signed by key {kid}, which is not in the trust store"
    else:
        check.status, check.key_id, check.key_source, check.problem = VERIFIED, kid, str(trusted.source), None
    log.info("signed %s with key %s (%d files listed)", folder, kid, len(check.files))
    return check
