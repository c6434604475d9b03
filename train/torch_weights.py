"""Read PyTorch checkpoints (``.pth`` state dicts) into numpy arrays without PyTorch.

Both serialisation formats of ``torch.save`` are supported:

* the legacy stream (PyTorch < 1.6 and ``_use_new_zipfile_serialization=False``): five
  pickles back to back -- magic number, protocol version, system info, the object pickle
  (tensors refer to storages through ``persistent_id``), the list of storage keys -- then,
  for each storage in that order, an 8-byte little-endian element count and the raw data;
* the zip archive (PyTorch >= 1.6): ``<prefix>/data.pkl`` plus one raw file per storage,
  ``<prefix>/data/<key>``.

Unpickling is restricted: :class:`_Unpickler.find_class` resolves only the handful of
globals a state dict needs (tensor rebuild functions, storage types, ``OrderedDict``) to
safe local reconstructions and refuses everything else, so a malicious checkpoint cannot
run code. Only state dicts (a mapping of names to tensors, possibly nested) are supported.
"""
from __future__ import annotations

import collections
import io
import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np

from leukedge.errors import ModelError

log = logging.getLogger(__name__)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

#: torch storage class name -> numpy dtype ("bfloat16" is widened to float32 on read).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for ``torch.<X>Storage`` inside the pickle: only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    """A storage whose bytes may arrive after the object pickle (legacy format)."""

    def __init__(self, key: str, stype: _StorageType, numel: int):
        self.key, self.stype, self.numel = key, stype, int(numel)
        self.array: np.ndarray | None = None

    def set_bytes(self, raw: bytes) -> None:
        if self.stype.dtype == "bfloat16":
            u16 = np.frombuffer(raw, dtype="<u2")
            self.array = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            self.array = np.frombuffer(raw, dtype=np.dtype(self.stype.dtype).newbyteorder("<"))


class _StorageView:
    """A slice of another storage (legacy ``view_metadata``); resolved lazily."""

    def __init__(self, base: _Storage, offset: int, numel: int):
        self.base, self.offset, self.numel = base, int(offset), int(numel)
        self.key = f"{base.key}[{offset}:{offset + numel}]"

    @property
    def array(self):
        data = self.base.array
        return None if data is None else data[self.offset:self.offset + self.numel]


class _LazyTensor:
    """What ``_rebuild_tensor_v2`` returns: a strided view, materialised once data is in."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def materialize(self) -> np.ndarray:
        data = self.storage.array
        if data is None:
            raise ModelError(f"checkpoint storage '{self.storage.key}' has no data (truncated file?)")
        if 0 not in self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if self.offset < 0 or last >= data.size or min(self.stride, default=0) < 0:
                raise ModelError(f"tensor view exceeds storage '{self.storage.key}' (corrupt checkpoint)")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="), copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


class _StateDict(collections.OrderedDict):
    """``OrderedDict`` that tolerates the ``_metadata`` attribute torch sets via BUILD."""


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """Unpickler that only knows the globals a state dict needs."""

    def __init__(self, file, storages: dict, load_storage):
        super().__init__(file)
        self._storages = storages
        self._load_storage = load_storage
        self._views: dict = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise ModelError(f"refusing to load '{module}.{name}' from a PyTorch checkpoint",
                             "Only state dicts of tensors can be read without PyTorch") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ModelError(f"unsupported persistent id in checkpoint: {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(stype, _StorageType):
            raise ModelError(f"unsupported storage type in checkpoint: {stype!r}")
        if key not in self._storages:
            self._storages[key] = _Storage(key, stype, numel)
            self._load_storage(self._storages[key])
        storage = self._storages[key]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy storage views: (view_key, offset, size)
            vkey = f"view:{view[0]}"
            if vkey not in self._views:
                self._views[vkey] = _StorageView(storage, view[1], view[2])
            return self._views[vkey]
        return storage


def _materialize(obj):
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _safe_pickle(f) -> object:
    """One pickle from ``f`` through the restricted unpickler (no storages allowed)."""

    def no_storage(st):
        raise ModelError("unexpected tensor storage in a checkpoint header")

    return _Unpickler(f, {}, no_storage).load()


def _read_legacy(f) -> object:
    magic = _safe_pickle(f)
    if magic != _LEGACY_MAGIC:
        raise ModelError("not a PyTorch checkpoint (bad magic number)")
    protocol = _safe_pickle(f)
    if protocol != _LEGACY_PROTOCOL:
        raise ModelError(f"unsupported PyTorch legacy protocol version {protocol}")
    sys_info = _safe_pickle(f)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ModelError("big-endian PyTorch checkpoints are not supported")
    storages: dict = {}
    obj = _Unpickler(f, storages, lambda st: None).load()
    keys = _safe_pickle(f)
    for key in keys:
        st = storages.get(str(key))
        if st is None:
            raise ModelError(f"checkpoint lists unknown storage '{key}'")
        head = f.read(8)
        if len(head) != 8:
            raise ModelError("PyTorch checkpoint is truncated")
        count = int.from_bytes(head, "little", signed=True)
        if count != st.numel:
            raise ModelError(f"storage '{key}' holds {count} elements, the checkpoint announced {st.numel} (corrupt)")
        nbytes = count * st.stype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ModelError("PyTorch checkpoint is truncated")
        st.set_bytes(raw)
    return obj


def _read_zip(path: Path) -> object:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise ModelError(f"{path}: zip file without <name>/data.pkl is not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder").strip() != b"little":
            raise ModelError("big-endian PyTorch checkpoints are not supported")

        def load_storage(st: _Storage) -> None:
            try:
                st.set_bytes(zf.read(f"{prefix}data/{st.key}"))
            except KeyError:
                raise ModelError(f"{path}: storage '{st.key}' missing from the archive") from None

        storages: dict = {}
        return _Unpickler(io.BytesIO(zf.read(pkl[0])), storages, load_storage).load()


def load_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a PyTorch state dict file into ``{name: numpy array}`` without importing torch.

    Args:
        path: a ``.pth``/``.pt`` file written by ``torch.save(model.state_dict(), path)``
            (legacy or zip format). A checkpoint dict holding a ``state_dict``/``model``
            entry is unwrapped.

    Returns:
        an ordered mapping of parameter/buffer names to numpy arrays (C-contiguous, native
        byte order; PyTorch's layouts, e.g. conv weights OIHW).

    Raises:
        ModelError: missing, truncated, corrupt or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            obj = _read_zip(path)
        else:
            with open(path, "rb") as f:
                obj = _read_legacy(f)
    except ModelError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError,
            zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"cannot read PyTorch checkpoint {path}: {exc}") from None
    obj = _materialize(obj)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ModelError(f"{path} is not a state dict of tensors")
    log.debug("read %d tensors from %s", len(obj), path)
    return collections.OrderedDict((str(k), v) for k, v in obj.items())
