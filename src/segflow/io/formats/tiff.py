"""TIFF: 2D images, 3D stacks and channels, with their axes; predictions as ImageJ hyperstacks for Fiji."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

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
            _check_tiff_header(path, tif.pages.first, tif.pages.first.nbytes)  # first: tifffile's series can take
            series = tif.series[0]  # minutes over a damaged header that declares billions of rows
            _check_tiff_header(path, series.keyframe, series.nbytes)
            return series.asarray(), series.axes

    def write(self, path: Path, array: np.ndarray, ndim: int, reference: Path | None, palette: bool) -> None:
        """See ``write_tiff``."""
        write_tiff(path, array, ndim, reference)

    def label_suffix(self, mask_path: Path) -> tuple[str, bool]:
        """``.tiff`` for ``.tiff`` masks, else ``.tif``."""
        return (".tiff" if mask_path.suffix.lower() == ".tiff" else ".tif"), False


def open_lazy(path: Path) -> Any:
    """The first series of a TIFF as an array that reads only what is sliced, in tifffile's axes (``series_axes``):
    a read-only memory map when the pixels lie uncompressed in one block, else tifffile's Zarr view, which decodes
    only the pages or tiles a slice touches. A damaged header is one clear error, as on reading."""
    try:
        with tifffile.TiffFile(path) as tif:
            _check_strips(path, tif.pages.first)
            series = tif.series[0]
            _check_strips(path, series.keyframe)
            contiguous = series.dataoffset is not None
        if contiguous:
            return tifffile.memmap(path, mode="r", series=0)
        import zarr  # here: only compressed or tiled TIFFs read patch by patch need it

        return zarr.open(tifffile.imread(path, aszarr=True, series=0, level=0), mode="r")
    except SegflowError:
        raise
    except Exception as exc:  # decoders raise many types for damaged files; all mean the same to a user
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise SegflowError(f"{path}: cannot be read as an image ({type(exc).__name__}: {reason}); the file may be corrupt or truncated") from None


def pixel_size(path: Path, ndim: int) -> tuple[float, ...] | None:
    """``(z, y, x)`` or ``(y, x)`` pixel size of the TIFF: 1 / its X and Y resolution, and ImageJ's z spacing (1 when
    absent), in the file's unit; None when it records no resolution."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if "XResolution" not in page.tags or "YResolution" not in page.tags:
            return None
        (xn, xd), (yn, yd) = page.tags["XResolution"].value, page.tags["YResolution"].value
        if not (xn and yn):
            return None
        z = float((tif.imagej_metadata or {}).get("spacing", 1.0))
    return ((z,) if ndim == 3 else ()) + (yd / yn, xd / xn)


def series_axes(path: Path) -> str:
    """tifffile's axes of the first series (e.g. ``QYX``, ``YXS``, ImageJ's ``ZCYX``), matching ``open_lazy``'s shape."""
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].axes


def biapy_axes(axes: str, shape: tuple[int, ...], ndim: int, channels: int) -> str | None:
    """tifffile's ``axes`` of an array of ``shape`` in BiaPy's letters (``TZCYX``), as ``io.images`` reads the whole
    file: samples (S) are channels; a generic page axis (Q, I) is z in 3D, or in 2D the channels when it has
    ``channels`` entries; an RGB-like ``SYX`` in 3D with another channel count is a small stack. None when the
    letters cannot say (two channel axes, several stacks): the user names the order."""
    if ndim == 3 and axes == "SYX" and shape[0] != channels:
        axes = "ZYX"
    out = ""
    for a, n in zip(axes, shape):
        if a == "S":
            a = "C"
        elif a in "QI":
            a = "Z" if ndim == 3 and "Z" not in axes + out else "C" if ndim == 2 and n == channels else "T"
        elif a not in "TZCYX":
            a = "T"
        out += a
    return out if len(set(out)) == len(out) else None


def _check_tiff_header(path: Path, page: tifffile.TiffPage, nbytes: int) -> None:
    """A page must store every strip or tile it declares, and its ``nbytes`` of pixels (of the page or of the whole
    series it starts) must fit in the file."""
    _check_strips(path, page)
    # A 1-bit (bilevel) page stores 8 pixels a byte, though it decodes to one bool byte a pixel.
    stored = nbytes if page.bitspersample != 1 else -(-nbytes // 8)
    check_declared_size(path, stored, compressed=page.compression != 1)


def _check_strips(path: Path, page: tifffile.TiffPage) -> None:
    """A page must store every strip or tile it declares."""
    declared = math.prod(getattr(page, "chunked", ()) or (1,))
    if len(page.dataoffsets) < declared:
        raise SegflowError(
            f"{path}: cannot be read as an image (the header declares {declared} strips or tiles but lists "
            f"{len(page.dataoffsets)}); the file may be corrupt or truncated"
        )


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


def write_tiff_slabs(path: str | os.PathLike, array: Any, channels: bool) -> None:
    """Write a sliceable ``array`` (Zarr, HDF5) ``(K, *spatial)`` with ``channels``, else ``(*spatial)``, as a TIFF
    one page at a time (memory: one page), atomically: ImageJ's ``(Z)CYX`` hyperstack when under 4 GiB, else
    BigTIFF. float16 is written as float32, which ImageJ reads."""
    shape = tuple(array.shape)
    dtype = np.dtype(np.float32) if np.dtype(array.dtype) == np.float16 else np.dtype(array.dtype)
    spatial = shape[1:] if channels else shape
    axes = ("ZCYX" if channels else "ZYX") if len(spatial) == 3 else ("CYX" if channels else "YX")
    if channels and len(spatial) == 3:
        order, out_shape = [(k, z) for z in range(spatial[0]) for k in range(shape[0])], (spatial[0], shape[0], *spatial[1:])
    else:
        order, out_shape = [(i,) for i in range(shape[0])] if len(shape) > 2 else [()], shape
    pages = (np.asarray(array[index], dtype=dtype) for index in order)
    small = math.prod(out_shape) * dtype.itemsize < 2**32 - 2**25 and dtype in (np.uint8, np.uint16, np.float32)
    options = {"imagej": True} if small else {"bigtiff": True}
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, pages, shape=out_shape, dtype=dtype, metadata={"axes": axes}, **options))
