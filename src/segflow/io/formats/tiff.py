"""TIFF: 2D images, 3D stacks and channels, with their axes; predictions as ImageJ hyperstacks for Fiji."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import tifffile

from segflow.errors import SegflowError
from segflow.io.atomic import atomic_write
from segflow.io.formats.base import FileFormat, check_declared_size


class Tiff(FileFormat):
    """``.tif``/``.tiff``: any array, read with the axes tifffile finds in the file."""

    suffixes = (".tif", ".tiff")

    def read(self, path: Path, palette_indices: bool) -> tuple[np.ndarray, str | None]:
        """See ``FileFormat.read``: the first series, its header checked first."""
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_tiff_header(path, series)
            return series.asarray(), series.axes

    def write(self, path: Path, array: np.ndarray, ndim: int, reference: Path | None, palette: bool) -> None:
        """See ``write_tiff``."""
        write_tiff(path, array, ndim, reference)

    def label_suffix(self, mask_path: Path) -> tuple[str, bool]:
        """``.tiff`` for ``.tiff`` masks, else ``.tif``."""
        return (".tiff" if mask_path.suffix.lower() == ".tiff" else ".tif"), False


def _check_tiff_header(path: Path, series: tifffile.TiffPageSeries) -> None:
    """The first page must store every strip or tile it declares, and no more pixels than the file can hold."""
    page = series.keyframe
    declared = math.prod(getattr(page, "chunked", ()) or (1,))
    if len(page.dataoffsets) < declared:
        raise SegflowError(
            f"{path}: cannot be read as an image (the header declares {declared} strips or tiles but lists "
            f"{len(page.dataoffsets)}); the file may be corrupt or truncated"
        )
    # A 1-bit (bilevel) page stores 8 pixels a byte, though it decodes to one bool byte a pixel.
    stored = series.nbytes if page.bitspersample != 1 else -(-series.nbytes // 8)
    check_declared_size(path, stored, compressed=page.compression != 1)


def write_tiff(path: str | os.PathLike, array: np.ndarray, ndim: int, reference: str | os.PathLike | None = None) -> None:
    """Write ``array`` (channels last) as an ImageJ hyperstack TIFF, atomically.

    Channels go where ImageJ expects them (``CYX`` / ``ZCYX``), so Fiji shows one channel per class.
    ``reference`` is the input image the array was predicted from: its pixel size (resolution, unit,
    z spacing) is copied so the output overlays the input in Fiji.
    """
    arr = np.asarray(array)
    if arr.ndim == ndim + 1 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == ndim + 1:
        arr = np.moveaxis(arr, -1, 0 if ndim == 2 else 1)
        axes = "CYX" if ndim == 2 else "ZCYX"
    else:
        axes = "YX" if ndim == 2 else "ZYX"
    kwargs: dict = {"imagej": arr.dtype in (np.uint8, np.uint16, np.float32)}
    metadata: dict = {"axes": axes}
    if reference is not None and Path(reference).suffix.lower() in (".tif", ".tiff"):
        try:
            with tifffile.TiffFile(reference) as tif:
                page = tif.pages[0]
                if "XResolution" in page.tags and "YResolution" in page.tags:
                    kwargs["resolution"] = (page.tags["XResolution"].value, page.tags["YResolution"].value)
                    unit = page.tags.get("ResolutionUnit")
                    if unit is not None and not kwargs["imagej"]:
                        kwargs["resolutionunit"] = unit.value
                for key in ("unit", "spacing"):
                    if tif.imagej_metadata and key in tif.imagej_metadata:
                        metadata[key] = tif.imagej_metadata[key]
        except Exception:  # metadata is a courtesy; an unreadable reference must not stop the output
            kwargs = {"imagej": kwargs["imagej"]}
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, metadata=metadata, **kwargs))
