"""Assemble a release folder ``models/<name>/`` so a crash never leaves a half-written model.

Files are written (each atomically: temporary file + fsync + rename) into a hidden staging
folder beside the target (``models/.<name>.partial-<pid>``); :meth:`Release.commit` then
swaps the staging folder into place with renames. A crash before the commit leaves only the
hidden ``.partial`` folder (never a folder that looks like a valid release); a crash during
the swap leaves the previous release as ``.<name>.previous-<pid>``. Every file is checked to
be under :data:`MAX_FILE_BYTES` (100 MB) before it is written.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
from pathlib import Path

from leukedge.errors import ModelError
from leukedge.fileio import atomic_copy, atomic_write_bytes, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 100 * 1000 * 1000


def check_size(name: str, n_bytes: int, limit: int = MAX_FILE_BYTES) -> None:
    """Raise when a release file would be too large (GitHub/app-store style limit of 100 MB)."""
    if n_bytes >= limit:
        raise ModelError(f"{name} would be {n_bytes / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB limit per release file",
                         "use the int8 or pruned variant, a smaller backbone or a smaller input size")


def gzip_size(data: bytes) -> int:
    """Size of ``data`` gzip-compressed (level 9): what a download or an APK asset costs."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


class Release:
    """A release folder being written.

    Use as a context manager: the staging folder is removed when the block raises.

    Args:
        out: the final folder (``models/<name>``); its name is the release name.
        ood_map: every ``.tflite`` file written gets the OOD gate's feature-map output
            (:func:`leukedge.compress.ood_map.add_ood_output`: one more signature output, no op or
            weight changed); what was exposed is in ``ood_map_outputs``. None: only when the graph
            has a residual block (else the file as it is, the reason in ``ood_map_outputs``).
    """

    def __init__(self, out, ood_map: bool | None = False):
        self.out = Path(out)
        self.name = self.out.name
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.out.parent / f".{self.name}.partial-{os.getpid()}"
        _remove_stale(self.out.parent, self.name)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir()
        self.files: dict[str, dict] = {}
        self.committed = False
        self.ood_map = ood_map
        self.ood_map_outputs: dict[str, dict] = {}

    def __enter__(self) -> "Release":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False

    def path(self, name: str) -> Path:
        """Where ``name`` lives now (staging before the commit, the release after)."""
        return (self.out if self.committed else self.staging) / name

    def model_name(self, variant: str) -> str:
        return f"{self.name}.{variant}.tflite"

    def write_bytes(self, name: str, data: bytes) -> Path:
        if self.ood_map is not False and name.endswith(".tflite"):
            from leukedge.errors import ModelError

            from .ood_map import add_ood_output

            try:
                data, info = add_ood_output(data)
                self.ood_map_outputs[name] = {k: v for k, v in info.items() if k != "added"}
            except ModelError as exc:
                if self.ood_map:
                    raise
                self.ood_map_outputs[name] = {"skipped": exc.one_line()}
                log.info("%s: no ood_map output (%s)", name, exc.one_line())
        check_size(name, len(data))
        p = atomic_write_bytes(self.path(name), data)
        self.files[name] = {"bytes": len(data), "sha256": sha256_file(p)}
        if name.endswith(".tflite"):
            self.files[name]["gzip_bytes"] = gzip_size(data)
        log.info("wrote %s (%.2f MiB)", p, len(data) / 2**20)
        return p

    def write_json(self, name: str, obj) -> Path:
        p = atomic_write_json(self.path(name), obj)
        check_size(name, p.stat().st_size)
        return p

    def copy(self, src, name: str) -> Path:
        src = Path(src)
        check_size(name, src.stat().st_size)
        return atomic_copy(src, self.path(name))

    def commit(self) -> Path:
        """Swap the staging folder into place (the previous release, if any, is replaced)."""
        if self.committed:
            return self.out
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.name}.previous-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.out, old)
        os.replace(self.staging, self.out)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.out.parent)
        log.info("release folder ready: %s", self.out)
        return self.out

    def abort(self) -> None:
        if not self.committed and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
            log.warning("release %s not written (staging folder removed)", self.name)


def _remove_stale(parent: Path, name: str) -> None:
    """Remove staging folders of this release left by killed processes (their pid is gone)."""
    for p in parent.glob(f".{name}.partial-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            log.info("removing %s (left by an interrupted run)", p)
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
