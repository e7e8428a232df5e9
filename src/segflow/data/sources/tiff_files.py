"""The lazy TIFF source: folders of TIFF images and masks with ``IN_MEMORY: false``, read one patch at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from segflow.config.schema import Config
from segflow.data.sources.container import ContainerSource
from segflow.errors import SegflowError
from segflow.io.formats.tiff import Tiff, biapy_axes, open_lazy, pixel_size, series_axes


class TiffSource(ContainerSource):
    """Folders of ``.tif``/``.tiff`` files paired by name, each read patch by patch (a memory map of uncompressed
    pixels, or tifffile's Zarr view that decodes only the pages or tiles a patch touches), in the axes the file
    records; see ``ContainerSource``. Chosen only with ``DATA.TRAIN.IN_MEMORY`` (or ``DATA.VAL.IN_MEMORY``)
    false and a folder of TIFF images alone; other folders are decoded into memory (``FolderSource``)."""

    name: ClassVar[str] = "tiff"
    suffixes: ClassVar[tuple[str, ...]] = Tiff.suffixes

    @classmethod
    def accepts(cls, cfg: Config, image_path: str, what: str) -> bool:
        """A folder whose every image is a TIFF, for a part read patch by patch."""
        path = Path(image_path)
        if (cfg.DATA.TRAIN if what == "train" else cfg.DATA.VAL).IN_MEMORY or not path.is_dir():
            return False
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        return bool(files) and all(cls._is_container(p) for p in files)

    @staticmethod
    def open_array(path: Path, inner: str | None) -> Any:
        """The file's first series (``inner`` is always None: one image per file)."""
        return open_lazy(path)

    @classmethod
    def default_axes(cls, path: Path, shape: tuple[int, ...], ndim: int, channels: int, key: str) -> str:
        """The axes the file records, in BiaPy's letters (``io.formats.tiff.biapy_axes``), as reading it whole would
        take them."""
        found = series_axes(path)
        axes = biapy_axes(found, shape, ndim, channels)
        if axes is None:
            raise SegflowError(f"{path}: cannot tell the axes of the TIFF (tifffile reads {found} for {shape}); set {key} to them (letters of TZCYX)")
        return axes

    @classmethod
    def voxel_size(cls, path: Path, inner: str | None, ndim: int) -> tuple[float, ...] | None:
        """The pixel size the TIFF records (``io.formats.tiff.pixel_size``)."""
        return pixel_size(path, ndim)
