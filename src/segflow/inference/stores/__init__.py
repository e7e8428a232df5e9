"""The formats a chunked prediction writes, chosen by name (``--output-format``) or by the output's suffix."""

from __future__ import annotations

from pathlib import Path

from segflow.errors import SegflowError
from segflow.inference.stores.base import Layout, VolumeStore
from segflow.inference.stores.hdf5_store import Hdf5Store
from segflow.inference.stores.ome_zarr_store import OmeZarrStore
from segflow.inference.stores.zarr_store import ZarrStore

STORES: dict[str, type[VolumeStore]] = {cls.name: cls for cls in (ZarrStore, OmeZarrStore, Hdf5Store)}

__all__ = ["STORES", "Layout", "VolumeStore", "get_store", "store_for"]


def get_store(name: str) -> VolumeStore:
    """The store called ``name`` (``zarr``, ``ome-zarr``, ``h5``)."""
    return STORES[name]()


def store_for(path: str | Path, name: str | None = None, key: str = "--output-format") -> VolumeStore:
    """The store ``name`` (None: the one ``path``'s suffix names, OME-Zarr before Zarr), checked against the suffix."""
    lower = str(path).lower().rstrip("/")
    # ".ome.zarr" names OME-Zarr; an OME-Zarr may also be asked for by name at a plain ".zarr"
    by_suffix = OmeZarrStore if lower.endswith(".ome.zarr") else next((c for c in (ZarrStore, Hdf5Store) if lower.endswith(c.suffixes)), None)
    if name is None:
        if by_suffix is None:
            raise SegflowError(f"OUTPUT {path}: name it .zarr, .ome.zarr, .h5 or .hdf5 (the output's format), or give {key}")
        return by_suffix()
    chosen = STORES.get(name.lower().replace("_", "-"))
    if chosen is None:
        raise SegflowError(f"{key} {name}: choose one of {', '.join(STORES)}")
    if not lower.endswith(chosen.suffixes):
        raise SegflowError(f"OUTPUT {path}: {key} {chosen.name} is written to a name ending {' or '.join(chosen.suffixes)}; rename the output")
    return chosen()
