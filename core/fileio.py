"""Small file helpers: bounded reads of regular files, atomic writes and hashing.

Every file LeukEdge reads from a user (images, JSON, manifests, ``.npz``) goes through
:func:`open_regular` / :func:`read_limited`: FIFOs, devices, sockets and folders are refused
before anything blocks, and a read stops at a byte limit instead of filling the memory
(``/dev/zero``, a 10 GB file renamed ``.jpg``).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError, DataError, LeukEdgeError

#: Default byte limits per kind of file; each can be changed with the environment variable
#: ``LEUKEDGE_MAX_<KIND>_BYTES`` (e.g. ``LEUKEDGE_MAX_IMAGE_BYTES=134217728``).
MAX_BYTES = {
    "image": 64 * 2**20,     # a 12-megapixel uncompressed TIFF is ~36 MiB
    "json": 16 * 2**20,      # spec, card, reports
    "csv": 64 * 2**20,       # split manifests, predictions
    "npz": 256 * 2**20,      # OOD statistics, heatmaps
}


def byte_limit(kind: str) -> int:
    """The byte limit for ``kind`` (a key of :data:`MAX_BYTES`), after ``LEUKEDGE_MAX_<KIND>_BYTES``.

    Raises:
        ConfigError: the environment variable is not a positive integer.
    """
    env = f"LEUKEDGE_MAX_{kind.upper()}_BYTES"
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return MAX_BYTES[kind]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{env}={raw!r} is not a number of bytes", "unset it or give a positive integer") from None
    if value < 1:
        raise ConfigError(f"{env}={raw!r} must be at least 1", "unset it or give a positive integer")
    return value


def check_byte_limits() -> None:
    """Validate every ``LEUKEDGE_MAX_<KIND>_BYTES`` variable (the CLI calls this first).

    Raises:
        ConfigError: one is not a positive integer.
    """
    for kind in MAX_BYTES:
        byte_limit(kind)


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: str | os.PathLike, error: type[LeukEdgeError] = DataError, what: str = "file") -> os.stat_result:
    """``os.stat`` a path and refuse anything but a regular file, without opening it.

    Raises:
        error: missing, a broken symbolic link, a folder, FIFO, device or socket, or not statable.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise error(f"{p}: broken symbolic link (points to {os.readlink(p)})",
                        "fix or remove the link") from None
        raise error(f"{p}: no such file", "check the path") from None
    except OSError as exc:
        raise error(f"{p}: cannot read ({exc.strerror or exc})", "check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: is {_kind_of(st.st_mode)}, not a regular file", f"name a regular {what} file")
    return st


def open_regular(path: str | os.PathLike, error: type[LeukEdgeError] = DataError, what: str = "file"):
    """Open a regular file for binary reading without ever blocking on a FIFO or device.

    The path is checked with ``os.stat`` first, then opened with ``O_NONBLOCK`` (so a FIFO
    swapped in after the check cannot block the open) and checked again with ``fstat``.

    Raises:
        error: see :func:`check_regular`.
    """
    check_regular(path, error, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"{path}: cannot open ({exc.strerror or exc})", "check the file's permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: is {_kind_of(st.st_mode)}, not a regular file", f"name a regular {what} file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: normal reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: str | os.PathLike, kind: str = "json", error: type[LeukEdgeError] = DataError,
                 max_bytes: int | None = None) -> bytes:
    """All bytes of a regular file, refusing it when it holds more than the limit for ``kind``.

    The size is checked before reading and the read itself is bounded (a file that grows
    while it is read, or reports a wrong size, is still cut off at the limit).

    Raises:
        error: not a regular file (see :func:`check_regular`), too large, or a read error.
    """
    limit = byte_limit(kind) if max_bytes is None else max_bytes
    with open_regular(path, error, kind) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise error(f"{path}: file is {_human(size)}, larger than the {_human(limit)} limit for a {kind} file",
                        f"use a smaller file or raise LEUKEDGE_MAX_{kind.upper()}_BYTES")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror or exc})", "check the file and the disk") from None
    if len(data) > limit:
        raise error(f"{path}: file is larger than the {_human(limit)} limit for a {kind} file",
                    f"use a smaller file or raise LEUKEDGE_MAX_{kind.upper()}_BYTES")
    return data


def read_json(path: str | os.PathLike, error: type[LeukEdgeError] = DataError, expect: type = dict):
    """Parse a JSON file (UTF-8, bounded size) and check its top-level type.

    Raises:
        error: not a regular file, too large, not UTF-8, not JSON, or not a ``expect``.
    """
    data = read_limited(path, "json", error)
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})", "save the file as UTF-8 JSON") from None
    except ValueError as exc:
        raise error(f"{path}: not valid JSON ({exc})", "fix the file or make it again") from None
    if expect is not None and not isinstance(obj, expect):
        want = {dict: "an object {...}", list: "a list [...]"}.get(expect, expect.__name__)
        raise error(f"{path}: JSON is {type(obj).__name__}, expected {want}", "fix the file or make it again")
    return obj


def _human(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20, error: type[LeukEdgeError] = DataError) -> str:
    """Hex sha256 of a regular file (a FIFO or device is refused, never read forever).

    Raises:
        error: not a regular file or unreadable.
    """
    h = hashlib.sha256()
    with open_regular(path, error) as fh:
        try:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror or exc})", "check the file and the disk") from None
    return h.hexdigest()


def check_output_path(path: str | os.PathLike, what: str = "output file", suffix: str | None = None) -> Path:
    """Refuse an output path that cannot be written, before any long work starts.

    A missing parent folder is fine (it is created on write); a parent that is a file, a
    path that is a folder, a non-regular file (FIFO, device) or a read-only folder are refused.

    Raises:
        ConfigError: the path cannot be written.
    """
    p = Path(path)
    if suffix and p.suffix.lower() != suffix:
        raise ConfigError(f"{p}: the {what} must end in {suffix}", f"name it like {p.with_suffix(suffix).name}")
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; the {what} must be a file path", f"name a file, e.g. {p / ('out' + (suffix or '.json'))}")
    if p.exists() and not p.is_file():
        raise ConfigError(f"{p}: exists and is not a regular file", f"name a new {what}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{p}: {parent} is a file, not a folder", f"choose another place for the {what}")
    _probe_writable(p, parent, what)
    return p


def _probe_writable(p: Path, folder: Path, what: str) -> None:
    """Create and delete a temporary file in ``folder``: the real test (root ignores modes,
    read-only mounts and /proc ignore os.access)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".leukedge-probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot write in {folder} ({exc.strerror or exc})",
                          f"choose another place for the {what}") from None


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse an output folder that is a file or cannot be created / written.

    Raises:
        ConfigError: the folder cannot be used.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: is a file; the {what} must be a folder", "name a folder (it is created if missing)")
    parent = p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{p}: {parent} is a file, not a folder", f"choose another place for the {what}")
    _probe_writable(p, parent, what)
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so a crash never leaves a half-written file.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, then
    renamed over ``path`` (an atomic operation on POSIX file systems).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; released files must be readable
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a file atomically (temporary file + rename)."""
    return atomic_write_bytes(dst, Path(src).read_bytes())


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
