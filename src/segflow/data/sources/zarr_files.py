"""The Zarr source: Zarr v2 and v3 stores (``.zarr``) and OME-Zarr images (multiscale: level 0), read lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from segflow.data.sources.container import ContainerSource
from segflow.errors import SegflowError


class ZarrSource(ContainerSource):
    """``.zarr`` stores; see ``ContainerSource``."""

    name: ClassVar[str] = "zarr"
    suffixes: ClassVar[tuple[str, ...]] = (".zarr",)

    @staticmethod
    def open_array(path: Path, inner: str | None) -> Any:
        """The array at ``inner`` of the store, or its one array: the store's root array, level 0 of an OME-Zarr
        image, or the only array in the store's groups."""
        import zarr  # here: only Zarr data needs it

        try:
            node = zarr.open(str(path), mode="r")
        except Exception as exc:
            raise SegflowError(f"{path}: cannot be opened as Zarr ({type(exc).__name__}: {exc}); check the path or the store") from None
        if isinstance(node, zarr.Array):
            if inner:
                raise SegflowError(f"{path}: a single Zarr array has no '{inner}' inside; leave the array path empty")
            return node
        arrays = sorted(k for k, v in node.members(max_depth=None) if isinstance(v, zarr.Array))
        if inner is None:
            levels = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
            if levels:
                inner = levels[0]["datasets"][0]["path"]
            elif len(arrays) == 1:
                inner = arrays[0]
            else:
                raise SegflowError(
                    f"{path}: holds {len(arrays)} arrays ({', '.join(arrays[:5]) or 'none'}); give one array per store, or set "
                    "DATA.TRAIN.INPUT_ZARR_MULTIPLE_DATA with INPUT_ZARR_MULTIPLE_DATA_RAW_PATH and _GT_PATH to the arrays to read"
                )
        if inner not in arrays:
            raise SegflowError(
                f"{path}: no array '{inner}' inside (it holds: {', '.join(arrays[:8]) or 'no arrays'}); "
                "set DATA.TRAIN.INPUT_ZARR_MULTIPLE_DATA_RAW_PATH / _GT_PATH to one of them"
            )
        return node[inner]

    @classmethod
    def voxel_size(cls, path: Path, inner: str | None, ndim: int) -> tuple[float, ...] | None:
        """The scale of the OME-Zarr level read (``inner``, None: level 0), its last ``ndim`` values."""
        import zarr

        try:
            attrs = zarr.open_group(str(path), mode="r").attrs
        except Exception:  # a plain array, or no group: no voxel size
            return None
        levels = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales") or [{}]
        for dataset in levels[0].get("datasets", []):
            if inner in (None, dataset["path"]):
                scale = next((t["scale"] for t in dataset.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
                return tuple(float(v) for v in scale[-ndim:]) if scale else None
        return None
