"""`leukedge release sign|verify|keygen`: sign a release folder, verify one, make a key pair.

Only argparse is imported here; the work is in :mod:`leukedge.release_sign`,
:mod:`leukedge.release_check` and :mod:`leukedge.trust`.
"""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    r = sub.add_parser("release", help="sign and verify release folders (Ed25519 over card.json)",
                       description="Sign a release folder (refresh card.json's sha256 of every file the runtime "
                                   "reads, then sign card.json into card.sig), verify one against the trust store, "
                                   "or make a new key pair. See docs/trust.md.")
    r.set_defaults(_parser=r)
    rsub = r.add_subparsers(dest="release_command", metavar="ACTION")

    s = rsub.add_parser("sign", help="refresh the card's file hashes and sign it",
                        description="Refresh card.json's file list and sha256 (every model file, spec.json, the OOD "
                                    "statistics, ood.json), rewrite card.md, and write card.sig (Ed25519).")
    s.add_argument("folder", metavar="DIR", help="release folder models/<name>")
    s.add_argument("--key", required=True, help="Ed25519 private key (PEM); it is read, never copied or printed")
    s.add_argument("--no-refresh", action="store_true", help="sign card.json exactly as it is (no re-hashing)")
    s.set_defaults(func=cmd_sign)

    v = rsub.add_parser("verify", help="exit 0 only for a complete release signed by a trusted key",
                        description="Check card.sig against the trust store, every sha256 listed in card.json, that "
                                    "every file the runtime reads is listed and that every path stays in the folder. "
                                    "Prints one line per folder; exit 0 only when all are verified.")
    v.add_argument("folders", nargs="+", metavar="DIR", help="release folder(s) models/<name>")
    v.set_defaults(func=cmd_verify)

    k = rsub.add_parser("keygen", help="make an Ed25519 key pair (e.g. a clinic's own signing key)",
                        description="Write PREFIX.key (private, mode 0600: keep it secret) and PREFIX.pub (public: "
                                    "put it in the trust store of every device that should accept your releases).")
    k.add_argument("prefix", metavar="PREFIX", help="output path without extension, e.g. keys/clinic-release")
    k.set_defaults(func=cmd_keygen)


def cmd_sign(args: argparse.Namespace) -> int:
    from .release_sign import sign_release

    check = sign_release(args.folder, args.key, refresh=not args.no_refresh)
    print(check.summary())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .errors import LeukEdgeError
    from .release_check import verify_release

    rc = 0
    for folder in args.folders:
        try:
            print(verify_release(folder).summary())
        except LeukEdgeError as exc:
            if len(args.folders) == 1:
                raise
            print(f"leukedge: error: {exc.one_line()}", file=sys.stderr)
            rc = exc.exit_code
    return rc


def cmd_keygen(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .errors import ConfigError
    from .trust import key_id, private_pem, public_pem

    key_path, pub_path = Path(args.prefix + ".key"), Path(args.prefix + ".pub")
    for p in (key_path, pub_path):
        if p.exists():
            raise ConfigError(f"{p} already exists", "choose another prefix; an existing key is never overwritten")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem(key))
    pub_path.write_bytes(public_pem(key))
    print(f"wrote {key_path} (private: keep it secret) and {pub_path} (public, key id {key_id(key.public_key())})")
    return 0
