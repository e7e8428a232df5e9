"""The HDF5 source: ``.h5``/``.hdf5`` files, a dataset read lazily (each process opens the file itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from segflow.data.sources.container import ContainerSource
from segflow.errors import SegflowError


class Hdf5Source(ContainerSource):
    """HDF5 files; see ``ContainerSource``."""

    name: ClassVar[str] = "hdf5"
    suffixes: ClassVar[tuple[str, ...]] = (".h5", ".hdf5")

    @staticmethod
    def open_array(path: Path, inner: str | None) -> Any:
        """The dataset at ``inner`` of the file, or its one dataset."""
        import h5py  # here: only HDF5 data needs it

        try:
            f = h5py.File(path, "r")
        except Exception as exc:
            raise SegflowError(f"{path}: cannot be opened as HDF5 ({type(exc).__name__}: {exc}); check the path or the file") from None
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        if inner is None and len(names) != 1:
            raise SegflowError(
                f"{path}: holds {len(names)} datasets ({', '.join(names[:5]) or 'none'}); give one dataset per file, or set "
                "DATA.TRAIN.INPUT_ZARR_MULTIPLE_DATA with INPUT_ZARR_MULTIPLE_DATA_RAW_PATH and _GT_PATH to the datasets to read"
            )
        inner = inner or names[0]
        if inner.strip("/") not in names:
            raise SegflowError(
                f"{path}: no dataset '{inner}' inside (it holds: {', '.join(names[:8]) or 'no datasets'}); "
                "set DATA.TRAIN.INPUT_ZARR_MULTIPLE_DATA_RAW_PATH / _GT_PATH to one of them"
            )
        return f[inner]  # the dataset keeps its file open

    @classmethod
    def voxel_size(cls, path: Path, inner: str | None, ndim: int) -> tuple[float, ...] | None:
        """The dataset's ``element_size_um`` attribute (Fiji's and ilastik's), its last ``ndim`` values."""
        size = cls.open_array(path, inner).attrs.get("element_size_um")
        return None if size is None or len(size) < ndim else tuple(float(v) for v in size[-ndim:])
