"""The OME-Zarr output (``.ome.zarr``, NGFF 0.5): napari (napari-ome-zarr) and Fiji open it as layers.

The probabilities are the image (``0``, ``1``, ...: multiscale levels, axes ``c(z)yx``, one channel per class,
scaled by the input's voxel size), each labels array a label image of it (``labels/classes``,
``labels/classes_post_processing``), and the work's own arrays (``done``, the confusion matrices, the filtered
probabilities) sit in ``segflow/``, which OME-Zarr readers pass over. The tasks write level 0; ``finish`` builds the
coarser levels with dask, chunk by chunk, and writes the metadata with ome-zarr's writer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from segflow.inference.stores.base import Layout
from segflow.inference.stores.zarr_store import ZarrStore

LABEL_NAMES = {"labels": "classes", "labels_post_processing": "classes_post_processing"}


class OmeZarrStore(ZarrStore):
    """See ``VolumeStore``; written as ``ZarrStore`` writes, at OME-Zarr's paths."""

    name: ClassVar[str] = "ome-zarr"
    suffixes: ClassVar[tuple[str, ...]] = (".ome.zarr", ".zarr")

    def where(self, name: str) -> str:
        """Level 0 of the image or of a label image, or ``segflow/NAME`` for the rest."""
        if name == "probabilities":
            return "0"
        if name in LABEL_NAMES:
            return f"labels/{LABEL_NAMES[name]}/0"
        return f"segflow/{name}"

    def finish(self, path: str, layout: Layout, voxel_size: tuple[float, ...] | None) -> None:
        """The coarser levels of the image and of each label image, then their OME-Zarr metadata."""
        import zarr
        from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

        root = zarr.open_group(path, mode="r+")
        voxel = tuple(voxel_size) if voxel_size else (1.0,) * len(layout.spatial)
        space = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"[-len(layout.spatial) :]]
        levels = _pyramid(root, layout.chunk, 1)
        write_multiscales_metadata(root, _datasets(levels, voxel, 1), axes=[{"name": "c", "type": "channel"}, *space], name="probabilities",
                                   metadata={"omero": _omero(layout.channels)})  # fmt: skip
        for array, label in LABEL_NAMES.items():
            if array in layout.arrays:
                group = root[f"labels/{label}"]
                write_multiscales_metadata(group, _datasets(_pyramid(group, layout.chunk, 0), voxel, 0), axes=space, name=label)
                write_label_metadata(root["labels"], label, source={"image": "../../"})


def _pyramid(group: Any, chunk: tuple[int, ...], lead: int) -> list[tuple[int, ...]]:
    """Levels ``1, 2, ...`` of the array ``0`` of ``group``, each taking every second voxel (nearest, as labels need)
    along the axes still longer than a chunk, until the level fits in one chunk; returns each level's factors.
    ``lead`` leading axes (the channels) are kept. Written chunk by chunk by dask, from the level before."""
    import dask.array as da

    factors = [(1,) * len(chunk)]
    while True:
        prev = group[str(len(factors) - 1)]
        spatial = prev.shape[lead:]
        step = tuple(2 if n > c else 1 for n, c in zip(spatial, chunk))
        if step == (1,) * len(step):
            return factors
        name = str(len(factors))
        if name in group:
            del group[name]  # a level left by an earlier run: built again from this run's level 0
        level = da.from_zarr(prev)[(slice(None),) * lead + tuple(slice(None, None, s) for s in step)]
        target = group.create_array(name, shape=level.shape, chunks=prev.chunks, dtype=prev.dtype, fill_value=0)
        da.store(level.rechunk(target.chunks), target, lock=False)  # dask blocks = Zarr chunks: no two write one file
        factors.append(tuple(f * s for f, s in zip(factors[-1], step)))


def _datasets(factors: list[tuple[int, ...]], voxel: tuple[float, ...], lead: int) -> list[dict]:
    return [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [1.0] * lead + [v * f for v, f in zip(voxel, fs)]}]}
            for i, fs in enumerate(factors)]  # fmt: skip


def _omero(channels: int) -> dict:
    """One channel per class (one, the foreground's, for a binary model), shown from 0 to 1, so a viewer names and
    scales each probability layer."""
    colors = ["FFFFFF", "FF00FF", "00FF00", "FFFF00", "00FFFF", "FF0000", "0000FF"]
    names = ["foreground"] if channels == 1 else [f"class {k}" for k in range(channels)]
    return {"channels": [{"label": names[k], "color": colors[k % len(colors)], "active": True,
                          "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}} for k in range(channels)]}  # fmt: skip
