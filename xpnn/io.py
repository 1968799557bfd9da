"""Checkpoints: ``save(obj, path)`` / ``load(path)`` for nested dicts/lists of arrays and Python scalars.

File format: an NPZ archive (``numpy.savez``; never pickled) holding every array as ``a0.npy, a1.npy, ...`` plus one
entry ``__xpnn_metadata__``, a uint8 array of UTF-8 JSON: the format name and version, the xpnn version, a table of
the arrays (their place in the structure, dtype and shape) and the structure itself, where every Python value is
stored exactly (floats as ``float.hex``, ints as JSON integers, str, bool, None; dict key types and order, dict vs
OrderedDict, list vs tuple). A model state dict, an optimizer state dict (``{"state": {0: {...}}, "param_groups":
[...]}``) or any mix of them round-trips bit for bit.

Writes are atomic: the archive goes to a temporary file in the target's folder, is flushed and fsync'ed, and then
``os.replace``-d over the target, so a crash or an exception mid-write leaves the previous file untouched.
Arrays from any backend (CuPy included) are saved through ``to_numpy``; ``load`` returns NumPy arrays
(``model.load_state_dict`` moves them to the model's backend).

``save_safetensors(state_dict, path)`` / ``load_safetensors(path)`` read and write a flat state dict in the
safetensors format (Hugging Face's; ``pip install "xpnn[safetensors]"``), under the state dict's keys, which are
PyTorch's: a file of ``safetensors.torch.save_file(torch_model.state_dict(), path)`` loads into the xpnn model of the
same layout, and the other way round. Same atomic write.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile
import zipfile
from typing import Any, BinaryIO, Callable, Optional, Union

import array_api_compat
import numpy as np

from ._version import __version__
from .backend import BackendLike, get_backend, to_numpy
from .errors import CheckpointError

__all__ = ["save", "load", "save_safetensors", "load_safetensors", "CheckpointError", "CheckpointNotFoundError",
           "FORMAT", "FORMAT_VERSION"]

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "xpnn-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__xpnn_metadata__"


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (both a ``CheckpointError`` and a ``FileNotFoundError``)."""


# --- encoding: Python structure -> JSON tree + list of arrays --------------------------------------------------

class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.table: dict[str, dict[str, Any]] = {}

    def _array(self, arr: np.ndarray, where: str, kind: str) -> dict[str, Any]:
        if arr.dtype.hasobject:
            raise TypeError(
                f"xpnn.save: {where or 'the object'} is an object array, which NPZ cannot hold without pickle"
            )
        key = f"a{len(self.arrays)}"
        self.arrays[key] = arr
        self.table[key] = {"path": where or "/", "dtype": arr.dtype.str, "shape": list(arr.shape)}
        return {"type": kind, "key": key}

    def node(self, obj: Any, where: str) -> dict[str, Any]:
        # order matters: bool before int, numpy scalars before Python numbers (np.float64 is a float subclass)
        if obj is None:
            return {"type": "none"}
        if isinstance(obj, np.generic):
            return self._array(np.asarray(obj), where, "npscalar")
        if isinstance(obj, np.ndarray):
            return self._array(obj, where, "array")
        if isinstance(obj, bool):
            return {"type": "bool", "value": obj}
        if isinstance(obj, int):
            return {"type": "int", "value": int(obj)}
        if isinstance(obj, float):
            return {"type": "float", "value": float(obj).hex()}
        if isinstance(obj, str):
            return {"type": "str", "value": obj}
        if isinstance(obj, dict):
            kind = "odict" if isinstance(obj, collections.OrderedDict) else "dict"
            keys, values = [], []
            for k, v in obj.items():
                if not isinstance(k, (str, int, float, type(None))) or isinstance(k, np.generic):
                    raise TypeError(
                        f"xpnn.save: dict key {k!r} at {where or '/'} must be a str, int, float, bool or None"
                    )
                keys.append(self.node(k, where))
                values.append(self.node(v, f"{where}/{k}"))
            return {"type": kind, "keys": keys, "values": values}
        if isinstance(obj, (list, tuple)):
            kind = "tuple" if isinstance(obj, tuple) else "list"
            return {"type": kind, "items": [self.node(v, f"{where}/{i}") for i, v in enumerate(obj)]}
        if array_api_compat.is_array_api_obj(obj):  # CuPy, array_api_strict, ...: saved as NumPy
            return self._array(np.asarray(to_numpy(obj)), where, "array")
        hint = "; save its state_dict() instead" if hasattr(obj, "state_dict") else ""
        raise TypeError(
            f"xpnn.save: cannot store {type(obj).__name__} at {where or '/'} (supported: arrays, dict, list, tuple, "
            f"str, int, float, bool, None){hint}"
        )


def _encode_meta(meta: dict[str, Any]) -> np.ndarray:
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))  # no float reaches it: they are hex strings
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


# --- atomic write ----------------------------------------------------------------------------------------------

def _default_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` gives a new file. Linux shows the umask in
    ``/proc/self/status``; elsewhere ``os.umask`` reads it only by setting it, so a strict mask stands for that
    instant (a file another thread creates then is private, never wide open)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o077)
        os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # not possible on every OS/file system; the data itself is already synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_npz(f: Any, arrays: dict[str, np.ndarray], compress: bool) -> None:
    (np.savez_compressed if compress else np.savez)(f, **arrays)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None], where: str = "xpnn.save") -> None:
    """Call ``write(f)`` on a temporary file in ``path``'s folder, flush and fsync it, then ``os.replace`` it over
    ``path`` (keeping an existing file's permissions): a crash or an exception in ``write`` leaves ``path`` as it
    was and no temporary file behind. ``where`` names the caller in the error for a missing folder."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{where}: folder {directory} does not exist")
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else _default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def save(obj: Any, path: PathLike, *, metadata: Optional[dict[str, Any]] = None, compress: bool = False) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of arrays and Python scalars, e.g. ``model.state_dict()`` or
    ``{"model": ..., "optimizer": ...}``) to ``path`` atomically. ``metadata``: an optional dict of your own,
    returned by ``load(path, with_metadata=True)``. ``compress=True`` deflates the arrays (smaller, slower)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"xpnn.save: folder {directory} does not exist")
    enc = _Encoder()
    tree = enc.node(obj, "")
    user = enc.node(metadata, "metadata") if metadata is not None else None
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "xpnn_version": __version__,
        "arrays": enc.table,
        "structure": tree,
        "metadata": user,
    }
    arrays = dict(enc.arrays)
    arrays[META_KEY] = _encode_meta(meta)
    atomic_write(path, lambda f: _write_npz(f, arrays, compress))


# --- reading ---------------------------------------------------------------------------------------------------

def _decode(node: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    try:
        kind = node["type"]
        if kind == "none":
            return None
        if kind == "bool":
            return bool(node["value"])
        if kind == "int":
            if not isinstance(node["value"], int):
                raise ValueError("int node without an integer")
            return node["value"]
        if kind == "float":
            return float.fromhex(node["value"])
        if kind == "str":
            return str(node["value"])
        if kind == "array":
            return arrays[node["key"]]
        if kind == "npscalar":
            return arrays[node["key"]][()]
        if kind in ("dict", "odict"):
            cls = collections.OrderedDict if kind == "odict" else dict
            keys, values = node["keys"], node["values"]
            if len(keys) != len(values):
                raise ValueError("dict node with unequal keys and values")
            return cls((_decode(k, arrays, path), _decode(v, arrays, path)) for k, v in zip(keys, values))
        if kind in ("list", "tuple"):
            items = [_decode(v, arrays, path) for v in node["items"]]
            return tuple(items) if kind == "tuple" else items
    except CheckpointError:
        raise  # from a nested entry, which already said what is damaged
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"xpnn.load: {path} has a damaged structure entry ({type(exc).__name__}: {exc})"
        ) from None
    raise CheckpointError(f"xpnn.load: {path} has an unknown structure entry type {kind!r}")


def _read_npz(z: Any, path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Check the metadata of an open NPZ and read every array (checking dtype and shape): ``(meta, arrays)``."""
    names = set(z.files)
    if META_KEY not in names:
        members = z.zip.namelist()
        if all(name.endswith(".npy") for name in members):
            what, advice = "an NPZ file", "; read it with numpy.load"
        else:
            what, advice = "a ZIP archive", ""
        raise CheckpointError(
            f"xpnn.load: {path} is {what} but not an xpnn checkpoint (no {META_KEY} entry; it holds "
            f"{sorted(members)[:5]}{' ...' if len(members) > 5 else ''}){advice}"
        )
    meta = json.loads(bytes(z[META_KEY]).decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"xpnn.load: {path} has metadata of an unknown format")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"xpnn.load: {path} uses checkpoint format {version!r} (written by xpnn "
            f"{meta.get('xpnn_version')}); this xpnn reads format <= {FORMAT_VERSION}: upgrade xpnn"
        )
    table = meta.get("arrays")
    if not isinstance(table, dict) or "structure" not in meta:
        raise CheckpointError(f"xpnn.load: {path} has damaged metadata (no array table or no structure)")
    if set(table) != names - {META_KEY}:
        raise CheckpointError(
            f"xpnn.load: {path} is inconsistent: its metadata lists {len(table)} arrays, "
            f"the archive holds {len(names) - 1}"
        )
    arrays = {}
    for key, info in table.items():
        arr = z[key]  # zipfile checks the CRC of every entry it reads
        if arr.dtype.str != info["dtype"] or list(arr.shape) != info["shape"]:
            raise CheckpointError(
                f"xpnn.load: {path}: array {info.get('path')!r} is {arr.dtype.str} {list(arr.shape)}, "
                f"its metadata says {info['dtype']} {info['shape']}"
            )
        arrays[key] = arr
    return meta, arrays


_ZIP_MAGIC = b"PK"  # every ZIP archive (hence every NPZ file and every checkpoint) starts with it
_IDX_DTYPES = (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)  # the third byte of an IDX file's magic number


def _check_head(head: bytes, path: str) -> None:
    """Raise a ``CheckpointError`` that says what the file is when its first bytes show it is no checkpoint (empty,
    a single .npy array, an IDX or text file, ...) rather than letting ``numpy.load`` guess (it takes any unknown
    file for a pickle)."""
    if not head:
        raise CheckpointError(f"xpnn.load: {path} is empty (0 bytes): truncated or corrupt, not a readable xpnn "
                              "checkpoint; restore it from a backup or save again")
    if head.startswith(_ZIP_MAGIC) or _ZIP_MAGIC.startswith(head):
        return  # a ZIP archive (or a truncated one): read on
    if head.startswith(b"\x93NUMPY"):
        what = "a single .npy array"
    elif len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _IDX_DTYPES:
        what = "an IDX file (MNIST-style data, read by xpnn.data.load_mnist)"
    elif head.startswith(b"\x1f\x8b"):
        what = "a gzip-compressed file"
    elif head.startswith(b"\x89HDF"):
        what = "an HDF5 file"
    elif head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        what = "a Python pickle (xpnn checkpoints never hold pickles)"
    else:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:  # a character cut at the end of the 512 bytes is still text
            text = head[:exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
        if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
            what = "a text file"
        else:
            what = f"a file starting with the bytes {head[:8]!r}"
    raise CheckpointError(f"xpnn.load: {path} is not an xpnn checkpoint: it is {what}; expected an NPZ archive "
                          "written by xpnn.save or `xpnn train --save`")


def load(path: PathLike, *, with_metadata: bool = False) -> Any:
    """Read a checkpoint written by ``save``: exactly the saved structure, with NumPy arrays.

    ``with_metadata=True`` returns ``(obj, meta)``; ``meta`` holds ``format_version``, ``xpnn_version``, ``arrays``
    (for each stored array its place ``path``, ``dtype`` and ``shape``) and ``metadata`` (what you passed to save).
    Raises ``CheckpointNotFoundError`` for a missing file and ``CheckpointError`` for a truncated or corrupt one,
    and for any file that is no xpnn checkpoint (saying what it is: a .npy array, an NPZ or ZIP archive without
    xpnn's metadata, an IDX, text or other file, an empty file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"xpnn.load: no checkpoint file {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            f.seek(0)
            _check_head(head, path)
            z = np.load(f, allow_pickle=False)
            with z:
                meta, arrays = _read_npz(z, path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError, UnicodeDecodeError) as exc:
        size = os.path.getsize(path)
        raise CheckpointError(
            f"xpnn.load: {path} ({size} bytes) is truncated or corrupt and cannot be read "
            f"({type(exc).__name__}: {exc}); restore it from a backup or save again"
        ) from None
    obj = _decode(meta["structure"], arrays, path)
    if not with_metadata:
        return obj
    user = meta.get("metadata")
    info = {
        "format": meta["format"],
        "format_version": meta["format_version"],
        "xpnn_version": meta.get("xpnn_version"),
        "arrays": {
            v["path"]: {"dtype": np.dtype(v["dtype"]).name, "shape": tuple(v["shape"])} for v in meta["arrays"].values()
        },
        "metadata": None if user is None else _decode(user, arrays, path),
    }
    return obj, info


# --- safetensors -----------------------------------------------------------------------------------------------

def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError('xpnn.io: reading and writing .safetensors files needs the safetensors package: '
                          'pip install "xpnn[safetensors]"') from None
    return safetensors.numpy


def save_safetensors(state_dict: Any, path: PathLike, *, metadata: Optional[dict[str, str]] = None) -> None:
    """Write ``state_dict`` (a flat mapping ``str -> array`` of any backend, e.g. ``model.state_dict()``) to
    ``path`` in the safetensors format, atomically, each array under its key with its dtype and shape.
    ``metadata``: ``str -> str`` pairs stored in the header (``load_safetensors(..., with_metadata=True)``).

    Raises ``TypeError`` naming the entry that is not an array (a nested dict: save ``state["model"]``) or a
    metadata pair that is not ``str -> str``; ``ImportError`` without the safetensors package."""
    st = _safetensors_numpy()
    path = os.fspath(path)
    if not hasattr(state_dict, "items"):
        raise TypeError(f"xpnn.save_safetensors: expected a mapping of name -> array, got {type(state_dict).__name__}")
    tensors: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"xpnn.save_safetensors: keys must be str, got {key!r}")
        if isinstance(value, (np.ndarray, np.generic)):
            arr = np.asarray(value)
        elif array_api_compat.is_array_api_obj(value):
            arr = np.asarray(to_numpy(value))
        else:
            raise TypeError(f"xpnn.save_safetensors: entry {key!r} is a {type(value).__name__}, not an array "
                            "(safetensors holds a flat name -> array mapping; for a checkpoint dict pass its "
                            "state_dict, or use xpnn.save)")
        if arr.dtype.hasobject:
            raise TypeError(f"xpnn.save_safetensors: entry {key!r} is an object array")
        tensors[key] = arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"xpnn.save_safetensors: metadata must map str to str, got {metadata!r}")
    payload = st.save(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(payload), where="xpnn.save_safetensors")


def load_safetensors(path: PathLike, backend: BackendLike = None, *, with_metadata: bool = False) -> Any:
    """Read a safetensors file (written by ``save_safetensors``, ``safetensors.torch.save_file`` or
    ``safetensors.numpy.save_file``) as an ordered ``name -> array`` dict, for ``model.load_state_dict``.

    Arrays are NumPy unless ``backend`` names another (``"cuda"``, ...). ``with_metadata=True`` returns
    ``(state, metadata)`` with the header's ``str -> str`` metadata (``{}`` when there is none).
    Raises ``CheckpointNotFoundError`` for a missing file and ``CheckpointError`` naming the file for a truncated or
    corrupt one (safetensors keeps no checksum: a flipped bit inside the data is not detected);
    ``ImportError`` without the safetensors package."""
    _safetensors_numpy()
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"xpnn.load_safetensors: no file {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = dict(f.metadata() or {})
            state = collections.OrderedDict((key, f.get_tensor(key)) for key in f.keys())
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError, ValueError) for bad files
        size = os.path.getsize(path)
        raise CheckpointError(
            f"xpnn.load_safetensors: {path} ({size} bytes) is truncated or not a safetensors file and cannot be "
            f"read ({type(exc).__name__}: {exc})") from None
    if backend is not None:
        be = get_backend(backend)
        state = collections.OrderedDict((k, be.asarray(v)) for k, v in state.items())
    return (state, meta) if with_metadata else state
