"""The Zarr output (``.zarr``): every array at the top of one Zarr v3 group, segflow's attributes on the group."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from segflow.inference.stores.base import Layout, VolumeStore


class ZarrStore(VolumeStore):
    """See ``VolumeStore``. Each chunk of every array is its own file, so tasks in any process write at once."""

    name: ClassVar[str] = "zarr"
    suffixes: ClassVar[tuple[str, ...]] = (".zarr",)

    def where(self, name: str) -> str:
        """The path of the array ``name`` inside the group."""
        return name

    def create(self, path: str, layout: Layout, attrs: dict) -> None:
        """See ``VolumeStore.create``."""
        import zarr

        group = zarr.open_group(path, mode="w")
        for name in layout.every_array():
            shape, chunks, dtype = layout.spec(name)
            group.create_array(self.where(name), shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
        group.attrs["segflow"] = attrs

    def attrs(self, path: str) -> dict:
        """See ``VolumeStore.attrs``."""
        import zarr

        try:
            return dict(zarr.open_group(path, mode="r").attrs.get("segflow", {}))
        except Exception:  # not a Zarr group, or damaged: the caller says what to do
            return {}

    def update_attrs(self, path: str, **values: Any) -> None:
        """See ``VolumeStore.update_attrs``."""
        import zarr

        group = zarr.open_group(path, mode="r+")
        group.attrs["segflow"] = {**group.attrs["segflow"], **values}

    def read(self, path: str, name: str) -> Any:
        """See ``VolumeStore.read``."""
        import zarr

        return zarr.open_group(path, mode="r")[self.where(name)]

    def write(self, path: str, index: tuple[int, ...], core: tuple[slice, ...], outputs: dict[str, np.ndarray],
              confusions: dict[str, np.ndarray]) -> None:  # fmt: skip
        """See ``VolumeStore.write``: whole storage chunks, so no two tasks write the same file."""
        import zarr

        group = zarr.open_group(path, mode="r+")
        for name, values in outputs.items():
            array = group[self.where(name)]
            array[(slice(None), *core) if values.ndim > len(core) else core] = values.astype(array.dtype, copy=False)
        for name, matrix in confusions.items():
            group[self.where(name)][index] = matrix
        group[self.where("done")][index] = 1  # last: a chunk killed part-way is predicted again
