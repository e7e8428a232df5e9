"""NumPy ``.npy``: any array as it is, no axes; the header's size checked before loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.io.atomic import atomic_write
from segflow.io.formats.base import FileFormat, check_declared_size, squeeze_channel


class Npy(FileFormat):
    """``.npy``: any array, a single channel dropped on writing."""

    suffixes = (".npy",)

    def read(self, path: Path, palette_indices: bool) -> tuple[np.ndarray, str | None]:
        """See ``FileFormat.read``."""
        _check_npy_size(path)
        return np.load(path, allow_pickle=False), None

    def write(self, path: Path, array: np.ndarray, ndim: int, reference: Path | None, palette: bool) -> None:
        """See ``FileFormat.write``."""
        arr = squeeze_channel(array, ndim)
        atomic_write(path, lambda tmp: _save_npy(tmp, arr))


def _check_npy_size(path: Path) -> None:
    """The ``.npy`` header's shape must fit in the file (np.load would allocate it first)."""
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(f)
        else:
            return  # np.load reads (and checks) other versions itself
        stored = path.stat().st_size - f.tell()
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    check_declared_size(path, nbytes, compressed=False, stored=stored)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save given a name would add ".npy" to one spelt ".NPY"
        np.save(f, arr, allow_pickle=False)
