"""Variable-length batches for the recurrent layers, with ``torch.nn.utils.rnn``'s semantics: ``PackedSequence``,
``pack_padded_sequence``, ``pad_packed_sequence``, ``pad_sequence`` and ``pack_sequence``.

A packed sequence holds the valid time steps only, time-major: ``data`` (sum(lengths), *) is step 0 of every
sequence, then step 1 of the sequences longer than 1, ...; ``batch_sizes[t]`` is how many sequences have a step
``t`` (a NumPy int64 array, on the host as in PyTorch). The sequences are in decreasing order of length;
``sorted_indices`` / ``unsorted_indices`` map the caller's batch order to that order and back (``None`` when the
caller's batch was already sorted, ``enforce_sorted=True``). Packing and padding are gathers (``F.index``), so
gradients flow through them to the valid steps only.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from ... import functional as F
from ...backend import namespace_of, to_numpy
from ...errors import ShapeError

__all__ = ["PackedSequence", "pack_padded_sequence", "pad_packed_sequence", "pad_sequence", "pack_sequence"]


class PackedSequence(NamedTuple):
    """``torch.nn.utils.rnn.PackedSequence``: ``data`` (sum(lengths), *) (an array or Tensor), ``batch_sizes``
    (T,) int64 NumPy array, ``sorted_indices`` / ``unsorted_indices`` (int64 NumPy arrays or ``None``)."""

    data: Any
    batch_sizes: np.ndarray
    sorted_indices: Optional[np.ndarray] = None
    unsorted_indices: Optional[np.ndarray] = None


def _array(x: Any) -> Any:
    return x.data if hasattr(x, "_node") else x


def lengths_array(lengths: Any, batch: int, steps: int, where: str) -> np.ndarray:
    """``lengths`` (a list, NumPy/CuPy array or Tensor of ``batch`` integers in 1..``steps``) as an int64 NumPy
    array; ``ValueError`` names ``where``, the expected and the given values."""
    arr = np.asarray(to_numpy(_array(lengths)) if not isinstance(lengths, (list, tuple)) else lengths)
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(f"{where}: expected {batch} lengths (one per sequence of the batch), got shape "
                         f"{tuple(arr.shape)}")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise TypeError(f"{where}: lengths must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if batch and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(f"{where}: lengths must be between 1 and the sequence length {steps}, got "
                         f"min {int(arr.min())}, max {int(arr.max())}" +
                         (" (a length longer than the padded sequence)" if arr.max() > steps else
                          " (every sequence needs at least one step)"))
    return arr


def batch_sizes_of(lengths: np.ndarray) -> np.ndarray:
    """``batch_sizes[t]`` = the number of sequences longer than ``t``, for ``t < max(lengths)``."""
    return (lengths[None, :] > np.arange(int(lengths.max()))[:, None]).sum(axis=1).astype(np.int64)


def lengths_of(batch_sizes: np.ndarray) -> np.ndarray:
    """The sequence lengths (in the packed order) of a packed batch's ``batch_sizes`` (the inverse of
    ``batch_sizes_of``)."""
    return (batch_sizes[None, :] > np.arange(int(batch_sizes[0]))[:, None]).sum(axis=1).astype(np.int64)


def pack_time_major(x: Any, batch_sizes: np.ndarray) -> Any:
    """Padded (T, B, *) in decreasing order of length -> packed data (sum(batch_sizes), *), one gather."""
    steps, batch = x.shape[0], x.shape[1]
    rows = np.concatenate([t * batch + np.arange(n) for t, n in enumerate(batch_sizes)])
    flat = F.reshape(x, (steps * batch,) + tuple(x.shape[2:]))
    return F.index(flat, namespace_of(_array(x)).asarray(rows))


def pad_time_major(data: Any, batch_sizes: np.ndarray, steps: int, padding_value: float = 0.0) -> Any:
    """Packed data (sum(batch_sizes), *) -> padded (steps, B, *) in the packed (sorted) batch order, one gather from
    the data with one padding row appended."""
    batch, total, rest = int(batch_sizes[0]), int(data.shape[0]), tuple(data.shape[1:])
    xp = namespace_of(_array(data))
    offsets = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]])
    rows = np.full((steps, batch), total, dtype=np.int64)  # the padding row by default
    for t, n in enumerate(batch_sizes):
        rows[t, :n] = offsets[t] + np.arange(n)
    pad = xp.full((1,) + rest, padding_value, dtype=_array(data).dtype)
    ext = F.concat([data, pad], axis=0)
    return F.reshape(F.index(ext, xp.asarray(rows.reshape(-1))), (steps, batch) + rest)


def pack_padded_sequence(input: Any, lengths: Any, batch_first: bool = False,  # noqa: A002 (torch's name)
                         enforce_sorted: bool = True) -> PackedSequence:
    """Pack a padded batch, ``torch.nn.utils.rnn.pack_padded_sequence``: ``input`` (T, B, *) (or (B, T, *) with
    ``batch_first``), ``lengths`` (B,) integers in 1..T. With ``enforce_sorted`` the lengths must be in decreasing
    order (``ValueError`` otherwise); ``enforce_sorted=False`` sorts the batch and keeps the permutation.
    Raises ``ShapeError`` for an input of fewer than 2 axes, ``ValueError`` for lengths out of range."""
    where = "pack_padded_sequence"
    x = input
    if not hasattr(x, "ndim"):
        raise TypeError(f"{where}: expected input to be an array or Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ShapeError(f"{where}: expected input of shape {'(B, T, *)' if batch_first else '(T, B, *)'}, got "
                         f"{tuple(x.shape)}")
    if batch_first:
        x = F.permute_dims(x, (1, 0) + tuple(range(2, x.ndim)))
    lens = lengths_array(lengths, x.shape[1], x.shape[0], where)
    sorted_indices = unsorted_indices = None
    if enforce_sorted:
        if np.any(lens[1:] > lens[:-1]):
            raise ValueError(f"{where}: `lengths` must be sorted in decreasing order when enforce_sorted=True, got "
                             f"{lens.tolist()}; pass enforce_sorted=False to sort the batch inside (the packed "
                             "sequence then keeps the permutation)")
    else:
        sorted_indices = np.argsort(-lens, kind="stable").astype(np.int64)
        unsorted_indices = np.argsort(sorted_indices).astype(np.int64)
        lens = lens[sorted_indices]
        x = F.index(x, (slice(None), namespace_of(_array(x)).asarray(sorted_indices)))
    batch_sizes = batch_sizes_of(lens)
    return PackedSequence(pack_time_major(x, batch_sizes), batch_sizes, sorted_indices, unsorted_indices)


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = False, padding_value: float = 0.0,
                        total_length: Optional[int] = None) -> tuple[Any, np.ndarray]:
    """Pad a packed batch back, ``torch.nn.utils.rnn.pad_packed_sequence``: ``(padded, lengths)`` with padded
    (T, B, *) (or (B, T, *) with ``batch_first``), ``padding_value`` past each sequence's end, in the caller's batch
    order, and ``lengths`` an int64 NumPy array. ``total_length`` pads to that many steps (``ValueError`` if it is
    shorter than the longest sequence)."""
    where = "pad_packed_sequence"
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"{where}: expected a PackedSequence, got {type(sequence).__name__}")
    batch_sizes = np.asarray(sequence.batch_sizes, dtype=np.int64)
    steps = len(batch_sizes)
    if total_length is not None:
        if total_length < steps:
            raise ValueError(f"{where}: expected total_length to be at least the length of the longest sequence "
                             f"({steps}), got {total_length}")
        steps = int(total_length)
    padded = pad_time_major(sequence.data, batch_sizes, steps, padding_value)
    lengths = lengths_of(batch_sizes)
    if sequence.unsorted_indices is not None:
        unsorted = sequence.unsorted_indices
        padded = F.index(padded, (slice(None), namespace_of(_array(padded)).asarray(unsorted)))
        lengths = lengths[unsorted]
    if batch_first:
        padded = F.permute_dims(padded, (1, 0) + tuple(range(2, padded.ndim)))
    return padded, lengths


def _sequence_list(sequences: Any, where: str) -> list[Any]:
    """``sequences`` (a list or tuple of arrays/Tensors (L_i, *) with one trailing shape and dtype) checked."""
    if isinstance(sequences, (list, tuple)):
        seqs = list(sequences)
    else:
        raise TypeError(f"{where}: expected a list or tuple of arrays or Tensors (L_i, *), got "
                        f"{type(sequences).__name__}")
    if not seqs:
        raise ValueError(f"{where}: expected at least one sequence, got an empty {type(sequences).__name__}")
    for i, seq in enumerate(seqs):
        if not hasattr(seq, "ndim") or seq.ndim < 1:
            raise ShapeError(f"{where}: expected sequence {i} to be an array or Tensor of shape (L, *), got "
                             f"{type(seq).__name__}{'' if not hasattr(seq, 'shape') else ' ' + str(tuple(seq.shape))}")
        if tuple(seq.shape[1:]) != tuple(seqs[0].shape[1:]) or _array(seq).dtype != _array(seqs[0]).dtype:
            raise ShapeError(f"{where}: expected every sequence to have the trailing shape and dtype of sequence 0 "
                             f"({tuple(seqs[0].shape[1:])}, {_array(seqs[0]).dtype}), got "
                             f"({tuple(seq.shape[1:])}, {_array(seq).dtype}) at sequence {i}")
    return seqs


def pad_sequence(sequences: Any, batch_first: bool = False, padding_value: float = 0.0,
                 padding_side: str = "right") -> Any:
    """Stack sequences of different lengths into one padded batch, ``torch.nn.utils.rnn.pad_sequence``:
    ``sequences`` a list of (L_i, *) arrays or Tensors -> (max L_i, B, *) (``batch_first``: (B, max L_i, *)),
    ``padding_value`` after each sequence (``padding_side="left"``: before it). Gradients flow to the sequences.
    Raises ``TypeError``/``ValueError``/``ShapeError`` naming the function for a bad list."""
    where = "pad_sequence"
    if padding_side not in ("right", "left"):
        raise ValueError(f"{where}: padding_side must be 'right' or 'left', got {padding_side!r}")
    seqs = _sequence_list(sequences, where)
    steps = max(int(seq.shape[0]) for seq in seqs)
    xp = namespace_of(_array(seqs[0]))
    rows = []
    for seq in seqs:
        n = steps - int(seq.shape[0])
        if n:
            pad = xp.full((n,) + tuple(seq.shape[1:]), padding_value, dtype=_array(seq).dtype)
            seq = F.concat([seq, pad] if padding_side == "right" else [pad, seq], axis=0)
        rows.append(seq)
    return F.stack(rows, axis=0 if batch_first else 1)


def pack_sequence(sequences: Any, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of (L_i, *) arrays or Tensors, ``torch.nn.utils.rnn.pack_sequence``: ``pad_sequence`` then
    ``pack_padded_sequence`` with the lengths L_i (``enforce_sorted``: they must be in decreasing order)."""
    seqs = _sequence_list(sequences, "pack_sequence")
    return pack_padded_sequence(pad_sequence(seqs), [int(seq.shape[0]) for seq in seqs],
                                enforce_sorted=enforce_sorted)
