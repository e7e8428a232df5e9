"""Arrays read lazily in BiaPy's axis order: a stored array (a Zarr or HDF5 dataset, an LMDB record, a memory map)
seen channels last, ``(y, x, c)`` or ``(z, y, x, c)``, reading only what is sliced.

Stored axes are named with BiaPy's letters (``DATA.*.INPUT_IMG_AXES_ORDER``, e.g. ``TZCYX``): ``Z``, ``Y``, ``X``
spatial, ``C`` channels, ``T`` time (one time point is used). The stored array is opened on first use in each
process: a data-loader worker, forked or spawned, opens its own handle (an HDF5 file or an LMDB environment must
not be shared across a fork).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from segflow.errors import SegflowError

AXES = "TZCYX"


class _Lazy:
    """What every lazy array offers besides ``shape``, ``dtype``, ``ndim`` and ``__getitem__``."""

    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of values."""
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)


class LazyArray(_Lazy):
    """``(*spatial, C)`` view of a stored array with axes ``axes`` (``(*spatial)`` without ``channels``: a mask, whose
    C axis, if stored, must hold one channel); ``where`` names it in errors and ``key`` is the config key that sets
    ``axes``. Slicing reads; ``shape``, ``dtype`` and ``ndim`` never do."""

    def __init__(
        self, opener: Callable[[], Any], axes: str, ndim: int, where: str, key: str, channels: bool = True, stored: Any = None
    ) -> None:
        # ``stored``: the array ``opener`` already gave in this process, so it is not opened twice.
        self._opener, self._array, self._pid = opener, stored, os.getpid() if stored is not None else 0
        self.where = where
        axes = axes.upper()
        stored = tuple(self.stored.shape)
        problem = _axes_problem(axes, stored, ndim, channels)
        if problem:
            raise SegflowError(f"{where}: {problem}; set {key} to the order of the stored axes (letters of {AXES})")
        spatial = "ZYX"[-ndim:]
        self._order = [axes.index(a) for a in spatial]  # stored axis of each spatial output axis
        self._channel = axes.index("C") if "C" in axes and channels else None
        # Axes read at index 0: T, Z of a 2D image, and C of a mask.
        self._fixed = [i for i, a in enumerate(axes) if a not in spatial and i != self._channel]
        self._channels = channels
        last = ((stored[self._channel],) if self._channel is not None else (1,)) if channels else ()
        self.shape = tuple(stored[i] for i in self._order) + last
        self.dtype = np.dtype(self.stored.dtype)
        self.ndim = len(self.shape)


    @property
    def stored(self) -> Any:
        """The stored array, opened in this process on first use (a forked worker opens its own)."""
        if self._array is None or self._pid != os.getpid():
            self._array, self._pid = self._opener(), os.getpid()
        return self._array

    @property
    def chunk_rows(self) -> int:
        """The stored chunks' extent along the first spatial axis (1 when the array is not chunked)."""
        chunks = getattr(self.stored, "chunks", None)
        return int(chunks[self._order[0]]) if chunks else 1

    def __getstate__(self) -> dict:
        # Pickled into a data-loader worker: the worker opens its own handle.
        return {**self.__dict__, "_array": None}


    def __getitem__(self, key: Any) -> np.ndarray:
        """Read ``key`` (integers and slices over ``(*spatial, C)``, or ``...``) from the stored array."""
        key = _full_key(key, self.ndim)
        stored: list[Any] = [slice(None)] * len(self.stored.shape)
        for i in self._fixed:
            stored[i] = 0
        for k, axis in zip(key, self._order):
            stored[axis] = k
        if self._channel is not None:
            stored[self._channel] = key[-1]
        try:
            out = np.asarray(self.stored[tuple(stored)])
        except Exception as exc:  # a chunk that fails to decode, a file gone or truncated: name it
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise SegflowError(f"{self.where}: cannot read {_describe(key)} ({type(exc).__name__}: {reason}); the file may be corrupt or truncated") from None
        # The read keeps the stored order of the axes that were not indexed by an integer: put them in ours.
        kept = [i for i, k in enumerate(stored) if not _is_int(k)]
        ours = [axis for k, axis in zip(key, self._order) if not _is_int(k)]
        if self._channel is not None and not _is_int(key[-1]):
            ours.append(self._channel)
        out = out.transpose([kept.index(axis) for axis in ours])
        return out if self._channel is not None or not self._channels else out[..., None][..., key[-1]]


def _is_int(k: Any) -> bool:
    return isinstance(k, int | np.integer)


def _full_key(key: Any, ndim: int) -> tuple:
    """``key`` as one integer or slice per axis (``...`` and missing trailing axes become full slices)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    if len(key) > ndim or not all(_is_int(k) or isinstance(k, slice) for k in key):
        raise IndexError(f"a lazy array takes up to {ndim} integers or slices, not {key!r}")
    return key + (slice(None),) * (ndim - len(key))


def _describe(key: tuple) -> str:
    """``[0:64, 5, :]`` for a key of slices and integers."""
    parts = [str(k) if _is_int(k) else f"{'' if k.start is None else k.start}:{'' if k.stop is None else k.stop}" for k in key]
    return f"[{', '.join(parts)}]"


def _axes_problem(axes: str, shape: tuple[int, ...], ndim: int, channels: bool = True) -> str | None:
    """What is wrong with reading an array of ``shape`` with stored ``axes`` as a ``ndim``-D image (a mask without
    ``channels``), or None."""
    if len(axes) != len(shape):
        return f"the axes order {axes} has {len(axes)} letters but the array has {len(shape)} axes {shape}"
    if set(axes) - set(AXES) or len(set(axes)) != len(axes):
        return f"the axes order {axes} must use each of the letters {AXES} at most once"
    spatial = "ZYX"[-ndim:]
    missing = [a for a in spatial if a not in axes]
    if missing:
        return f"the axes order {axes} lacks {''.join(missing)}, needed for a {ndim}D image"
    if not channels and "C" in axes and shape[axes.index("C")] != 1:
        return f"the mask has {shape[axes.index('C')]} channels (axis C of {shape}, {axes}); a mask holds one class id per pixel"
    long = [f"{a} ({shape[i]})" for i, a in enumerate(axes) if a not in spatial and a != "C" and shape[i] != 1]
    if long:
        return f"axes {', '.join(long)} of the array {shape} ({axes}) hold more than one {ndim}D image; give one image per array"
    return None


def slabs(array: Any, limit: int = 2**24, aligned: bool = False) -> range:
    """Start rows of slabs of the first axis holding at most ``limit`` values each (at least one row); with
    ``aligned``, whole chunks of a chunked array instead (a thinner slab would decode each chunk again and again)."""
    step = max(1, limit // max(1, math.prod(array.shape[1:])))
    rows = getattr(array, "chunk_rows", 1) if aligned else 1
    return range(0, array.shape[0], -(-step // rows) * rows)


def value_range(array: Any) -> tuple[float, float]:
    """Smallest and largest value of any sliceable array, one slab of the first axis at a time."""
    lo, hi = math.inf, -math.inf
    rows = slabs(array)
    for i in rows:
        slab = np.asarray(array[i : i + rows.step])
        lo, hi = min(lo, slab.min()), max(hi, slab.max())
    return lo, hi


class RowView(_Lazy):
    """Rows ``start:stop`` of the first axis of a lazy array, itself lazy (the validation split of one large volume)."""

    def __init__(self, array: Any, start: int, stop: int) -> None:
        self.array, self.start = array, start
        self.shape = (stop - start, *array.shape[1:])
        self.dtype, self.ndim = array.dtype, array.ndim
        self.where = getattr(array, "where", "")



    def __getitem__(self, key: Any) -> np.ndarray:
        """Read ``key`` (as ``LazyArray``) relative to the first row."""
        key = _full_key(key, self.ndim)
        first = key[0]
        if _is_int(first):
            first = self.start + range(self.shape[0])[first]
        else:
            lo, hi, step = first.indices(self.shape[0])
            first = slice(self.start + lo, self.start + hi, step)
        return self.array[(first, *key[1:])]


def first_rows(array: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of the first axis: a numpy view, or a ``RowView`` that reads nothing yet."""
    return array[start:stop] if isinstance(array, np.ndarray) else RowView(array, start, stop)

