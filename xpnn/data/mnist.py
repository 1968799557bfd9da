"""MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` ...): a reader with clear errors, and ``load_mnist``."""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import XpnnError

__all__ = ["DatasetError", "read_idx", "write_idx", "load_mnist", "MNIST_FILES"]

PathLike = Union[str, "os.PathLike[str]"]

# IDX type byte -> big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetError(XpnnError, ValueError):
    """A dataset file exists but is truncated, corrupt or inconsistent."""


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"read_idx: {path} is a damaged gzip file ({exc}); download it again") from None
    return data


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a NumPy array of its stored shape and native byte order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_idx: no file {path}")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"read_idx: {path} is not an IDX file (first bytes {data[:4].hex() or 'missing'}; "
            "expected 00 00 <type 08/09/0b/0c/0d/0e> <ndim>)"
        )
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"read_idx: {path} is truncated inside its header ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(
            f"read_idx: {path} holds {len(data) - header} data bytes but its header (shape {shape}, {dtype.name}) "
            f"needs {expected}; the file is truncated or corrupt"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # native order, writable copy


def _find(directory: Path, stem: str) -> Path:
    # the usual spellings: original names, with .gz, and the "train-images.idx3-ubyte" variant
    alt = stem.replace("-idx", ".idx")
    candidates = [stem, stem + ".gz", alt, alt + ".gz"]
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"load_mnist: {directory} has none of {', '.join(candidates)}; download the four MNIST IDX files "
        "(train-images, train-labels, t10k-images, t10k-labels) into that folder"
    )


def load_mnist(
    path: PathLike, *, raw: bool = False, flatten: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST (or Fashion-MNIST, same layout) from a folder holding the four IDX files.

    Returns ``((X_train, y_train), (X_test, y_test))``: X float32 in [0, 1] (``raw=True``: uint8 0..255),
    shape ``(n, 784)`` (``flatten=False``: ``(n, 28, 28)``); y int64.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"load_mnist: {directory} is not a folder; pass the folder holding the IDX files")
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in MNIST_FILES.items()}
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"load_mnist: {split} images {images.shape} and labels {labels.shape} do not match "
                "(expected (n, rows, cols) and (n,))"
            )
        X = images if raw else images.astype(np.float32) / np.float32(255.0)
        if flatten:
            X = X.reshape(X.shape[0], -1)
        out.append((X, labels.astype(np.int64)))
    return out[0], out[1]


def write_idx(path: PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip when ``compress`` or when ``path`` ends in ``.gz``); the inverse of
    ``read_idx``, handy for tests and for exporting data to other MNIST tools."""
    path = Path(path)
    arr = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(
            f"write_idx: dtype {arr.dtype} has no IDX type code (use uint8, int8, int16, int32, float32, float64)"
        )
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = header + arr.astype(_IDX_DTYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
