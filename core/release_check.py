"""Verify a release folder: signed card, complete file list, every hash, every path inside.

A release ``models/<name>/`` is accepted when all of these hold:

1. ``card.sig`` is a valid Ed25519 signature of the exact bytes of ``card.json`` by a key
   in the trust store (:mod:`leukedge.trust`);
2. ``card.json`` passes the card schema (:mod:`leukedge.schema`) and every path it lists
   stays inside the folder (relative, no ``..``, no symlink pointing out);
3. every listed file exists and has the listed sha256;
4. every file the runtime reads (:func:`runtime_files`: ``spec.json``, every model file,
   the OOD statistics named by the spec, ``ood.json``, the figures the app shows) is listed;
5. ``spec.json`` passes the spec schema.

With ``allow_unsigned`` only step 1 may fail (the release is then reported ``unsigned``);
the others are always enforced. Any failure raises :class:`leukedge.errors.ModelError`
with one line naming the problem.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError
from .fileio import sha256_file
from .schema import check_relpath, validate_card
from .spec import ModelSpec
from .trust import SIGNATURE_FILE, SIGNED_FILE, TrustedKey, read_signature, trusted_keys, verify_bytes

log = logging.getLogger(__name__)

#: Files that hold a model (every one is read by some runtime path: predict, evaluate, bench).
MODEL_SUFFIXES = (".tflite", ".h5", ".keras")
#: Other files the runtime reads when present (``Release.ood_rates`` falls back to ``ood.json``;
#: ``figures/*.png`` are added by :func:`runtime_files`).
RUNTIME_EXTRAS = ("spec.json", "ood.json")
#: The records of how a release was made and what it measured: signed with it when present
#: (``leukedge release sign`` lists them in the card), so that editing the recipe, the parity
#: verdicts or the measured numbers after signing is detected like a swapped model file.
PROVENANCE_FILES = ("recipe.json", "compress.json", "split.csv", "evaluation.json", "parity.json",
                    "parity-val.json", "bench/captures.json", "bench/captures-mosaic.json")
#: A card larger than this is not a card (it is read whole into memory).
MAX_CARD_BYTES = 10 * 1000 * 1000

VERIFIED, UNSIGNED, UNVERIFIED = "verified", "unsigned", "unverified"


@dataclass
class ReleaseCheck:
    """What :func:`verify_release` found.

    Attributes:
        folder: the release folder.
        status: ``verified`` (signed by a trusted key, complete) or ``unsigned`` (accepted
            with ``allow_unsigned``; ``problem`` says why it is not verified).
        files: ``{relative path: sha256}`` listed by the card (all checked).
        card: the parsed card.
        spec: the parsed spec.
        key_id: the signing key's id (verified releases).
        key_source: the trusted ``.pub`` file that verified it.
        problem: why the release is not verified (``unsigned`` only).
    """

    folder: Path
    status: str
    files: dict[str, str]
    card: dict
    spec: ModelSpec
    key_id: str | None = None
    key_source: str | None = None
    problem: str | None = None
    checked: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.status == VERIFIED:
            return (f"{self.folder}: verified (signed by key {self.key_id}, {Path(self.key_source).name}); "
                    f"{len(self.files)} files match card.json")
        return f"{self.folder}: UNSIGNED ({self.problem}); {len(self.files)} files match card.json"


def card_files(card: dict) -> dict[str, str]:
    """``{filename: sha256}`` from a card's ``files`` (values: a hash or ``{"sha256": ...}``), plus
    ``spec.json`` from the older ``spec_sha256`` key when ``files`` does not list it."""
    out = {}
    files = card.get("files")
    for name, v in (files.items() if isinstance(files, dict) else ()):
        sha = v.get("sha256") if isinstance(v, dict) else v
        if isinstance(sha, str):
            out[name] = sha
    spec_sha = card.get("spec_sha256")
    if isinstance(spec_sha, str):
        if "spec.json" in out and out["spec.json"] != spec_sha:
            raise ModelError("card.json lists two different sha256 for spec.json (files and spec_sha256)",
                             "re-sign the release with `leukedge release sign`")
        out.setdefault("spec.json", spec_sha)
    return out


def inside(folder: Path, name: str, what: str = "path") -> Path:
    """``folder / name`` after checking that it stays inside ``folder`` (symlinks resolved).

    Raises:
        ModelError: an absolute path, ``..``, or a symlink leading out of the folder.
    """
    try:
        check_relpath(name, f"{what} '{name}'")
    except ValueError as exc:
        raise ModelError(f"{folder}: {exc}", "a release names only files inside its own folder") from None
    p = folder / name
    root = folder.resolve()
    target = p.resolve()
    if target != root and root not in target.parents:
        raise ModelError(f"{folder}: {what} '{name}' leads outside the release folder (symlink to {target})",
                         "a release names only files inside its own folder")
    return p


def runtime_files(folder: Path, spec: ModelSpec) -> list[str]:
    """Relative paths of the files the runtime reads from ``folder`` (those that exist, and the
    OOD statistics named by the spec, which must exist)."""
    names = {f.name for f in folder.iterdir()
             if not f.name.startswith(".") and (f.suffix in MODEL_SUFFIXES or f.name in RUNTIME_EXTRAS)
             and (f.is_file() or f.is_symlink())}
    names.add("spec.json")
    if (folder / "figures").is_dir():  # the app's model screen shows them (Release.figures)
        names.update(f"figures/{f.name}" for f in (folder / "figures").glob("*.png"))
    if spec.ood.method != "none" and spec.ood.stats_file:
        names.add(spec.ood.stats_file)
    return sorted(names)


def provenance_files(folder: Path) -> list[str]:
    """The :data:`PROVENANCE_FILES` that exist in ``folder`` (relative paths)."""
    return [n for n in PROVENANCE_FILES if (folder / n).is_file()]


def _read_card(folder: Path) -> tuple[bytes, dict]:
    path = inside(folder, SIGNED_FILE, "card")
    if not path.is_file():
        raise ModelError(f"{folder}: no card.json (not a release folder)", "pass models/<name> made by `leukedge compress`")
    if path.stat().st_size > MAX_CARD_BYTES:
        raise ModelError(f"{path}: {path.stat().st_size} bytes is too large for a model card")
    data = path.read_bytes()
    try:
        card = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a valid model card ({type(exc).__name__})", "re-download the release") from None
    return data, card


def check_signature(folder: Path, data: bytes, keys: dict[str, TrustedKey] | None = None) -> TrustedKey:
    """The trusted key whose signature in ``card.sig`` matches ``data`` (the card's bytes).

    Raises:
        ModelError: unsigned, malformed signature, untrusted key, or wrong signature.
    """
    doc = read_signature(folder / SIGNATURE_FILE)
    return verify_bytes(data, doc, trusted_keys() if keys is None else keys, str(folder))


def check_hashes(folder: Path, files: dict[str, str], names=None) -> list[str]:
    """Check the sha256 of ``names`` (default: all listed); returns the names checked.

    Raises:
        ModelError: a path outside the folder, a missing file, or a hash mismatch.
    """
    checked = []
    for n in (files if names is None else names):
        p = inside(folder, n, "listed file")
        if not p.is_file():
            raise ModelError(f"{p}: listed in the model card but missing", "re-download the release")
        actual = sha256_file(p)
        if actual != files[n]:
            raise ModelError(f"{p}: sha256 {actual[:12]}... does not match the model card ({files[n][:12]}...)",
                             "the file was modified or corrupted; refusing to load it. Re-download the release")
        checked.append(n)
    return checked


def verify_release(folder: str | os.PathLike, allow_unsigned: bool = False,
                   keys: dict[str, TrustedKey] | None = None, signature: bool = True) -> ReleaseCheck:
    """Verify a release folder (see the module docstring).

    Args:
        folder: the release folder.
        allow_unsigned: accept a missing, wrong or untrusted signature (reported as ``unsigned``).
        keys: trusted keys (default: the trust store).
        signature: False checks everything but the signature (what a signer checks before signing).

    Raises:
        ModelError: one line naming the first problem found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such release folder", "pass models/<name>")
    data, card = _read_card(folder)
    key, problem = None, "signature not checked"
    try:
        if signature:
            key, problem = check_signature(folder, data, keys), None
    except ModelError as exc:
        if not allow_unsigned:
            raise
        problem = exc.message.removeprefix(f"{folder}: ")
        log.warning("%s: NOT VERIFIED (%s); running it only because --allow-unsigned was given",
                    folder, exc.message)
    validate_card(card, str(folder / SIGNED_FILE))
    files = card_files(card)
    for n in files:
        inside(folder, n, "listed file")
    if "spec.json" not in files:
        raise ModelError(f"{folder}: spec.json is not listed in card.json, cannot verify it",
                         "re-sign the release with `leukedge release sign`")
    checked = check_hashes(folder, files, ["spec.json"])
    spec = ModelSpec.load(folder)
    if spec.ood.stats_file:
        inside(folder, spec.ood.stats_file, "spec ood.stats_file")
    missing = [n for n in runtime_files(folder, spec) if n not in files]
    if missing:
        raise ModelError(f"{folder}: {', '.join(missing)} not listed in card.json (the runtime reads "
                         f"{'it' if len(missing) == 1 else 'them'}, so the card must vouch for "
                         f"{'it' if len(missing) == 1 else 'them'})", "re-sign the release with `leukedge release sign`")
    checked += check_hashes(folder, files, [n for n in files if n != "spec.json"])
    status = UNSIGNED if key is None else VERIFIED
    return ReleaseCheck(folder, status, files, card, spec, key.key_id if key else None,
                        str(key.source) if key else None, problem, checked)
