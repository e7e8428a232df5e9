"""The HDF5 output (``.h5``, ``.hdf5``): every array a dataset at the file's root, segflow's attributes as JSON.

HDF5 is written by one process: the worker threads of this process share one handle (h5py serialises its calls),
and the file is flushed after each chunk's ``done`` flag, so a killed run leaves the chunks it recorded. A run
killed inside HDF5's own write can still leave the file unreadable; that is said, and ``--overwrite`` starts anew.
"""

from __future__ import annotations

import json
import threading
from typing import Any, ClassVar

import numpy as np

from segflow.inference.stores.base import Layout, VolumeStore

_LOCK = threading.Lock()
_HANDLES: dict[str, Any] = {}  # path -> this process's one read-write handle on it


def _handle(path: str) -> Any:
    """This process's read-write handle on ``path``, opened on first use."""
    import h5py

    if path not in _HANDLES:
        _HANDLES[path] = h5py.File(path, "r+")
    return _HANDLES[path]


def close(path: str) -> None:
    """Close this process's handle on ``path`` (before the file is replaced or opened read-only)."""
    with _LOCK:
        handle = _HANDLES.pop(path, None)
        if handle:
            handle.close()


class Hdf5Store(VolumeStore):
    """See ``VolumeStore``."""

    name: ClassVar[str] = "h5"
    suffixes: ClassVar[tuple[str, ...]] = (".h5", ".hdf5")
    many_processes: ClassVar[bool] = False

    def create(self, path: str, layout: Layout, attrs: dict) -> None:
        """See ``VolumeStore.create``."""
        import h5py

        close(path)
        with h5py.File(path, "w") as f:
            for name in layout.every_array():
                shape, chunks, dtype = layout.spec(name)
                f.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, fillvalue=0)
            f.attrs["segflow"] = json.dumps(attrs)

    def attrs(self, path: str) -> dict:
        """See ``VolumeStore.attrs``."""
        import h5py

        close(path)
        try:
            with h5py.File(path, "r") as f:
                return json.loads(f.attrs.get("segflow", "{}"))
        except Exception:  # not HDF5, or damaged by a kill inside a write: the caller says what to do
            return {}

    def update_attrs(self, path: str, **values: Any) -> None:
        """See ``VolumeStore.update_attrs``."""
        with _LOCK:
            f = _handle(path)
            f.attrs["segflow"] = json.dumps({**json.loads(f.attrs["segflow"]), **values})
            f.flush()

    def read(self, path: str, name: str) -> Any:
        """See ``VolumeStore.read``."""
        return _Dataset(path, name)

    def write(self, path: str, index: tuple[int, ...], core: tuple[slice, ...], outputs: dict[str, np.ndarray],
              confusions: dict[str, np.ndarray]) -> None:  # fmt: skip
        """See ``VolumeStore.write``; flushed after the ``done`` flag."""
        with _LOCK:
            f = _handle(path)
            for name, values in outputs.items():
                f[name][(slice(None), *core) if values.ndim > len(core) else core] = values.astype(f[name].dtype, copy=False)
            for name, matrix in confusions.items():
                f[name][index] = matrix
            f["done"][index] = 1
            f.flush()

    def finish(self, path: str, layout: Layout, voxel_size: tuple[float, ...] | None) -> None:
        """The voxel size as ``element_size_um`` (Fiji's and ilastik's attribute) on each dataset; the handle closed."""
        if voxel_size:
            with _LOCK:
                f = _handle(path)
                for name in layout.arrays:
                    f[name].attrs["element_size_um"] = np.asarray(voxel_size, dtype=np.float64)
        close(path)


class _Dataset:
    """A dataset of the output, read through this process's handle while a run holds one, else opened read-only for
    each read (so a finished output is never held open)."""

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = path, name
        self.shape, self.dtype = self._read(lambda d: (d.shape, d.dtype))

    def _read(self, fn: Any) -> Any:
        import h5py

        with _LOCK:
            if self.path in _HANDLES:
                return fn(_HANDLES[self.path][self.name])
            with h5py.File(self.path, "r") as f:
                return fn(f[self.name])

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._read(lambda d: d[key])
