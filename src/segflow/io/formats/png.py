"""PNG and JPEG: 2D images only. PNG holds label predictions (grayscale class ids, or VOC's palette);
JPEG is read, never written (lossy)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from segflow.errors import SegflowError
from segflow.io.atomic import atomic_write
from segflow.io.formats.base import FileFormat, squeeze_channel


class Png(FileFormat):
    """``.png``: a 2D image; palette PNGs read as colour indices for masks."""

    suffixes = (".png",)
    planar = True

    def read(self, path: Path, palette_indices: bool) -> tuple[np.ndarray, str | None]:
        """See ``FileFormat.read``."""
        palette = palette_indices and iio.immeta(path).get("mode") == "P"
        return np.asarray(iio.imread(path, mode="P") if palette else iio.imread(path)), None

    def cannot_hold(self, labels: bool, ndim: int | None) -> str | None:
        """See ``FileFormat.cannot_hold``: 2D labels only."""
        if ndim == 3:
            return "PNG holds one 2D image"
        return None if labels else "PNG holds integers, not floats"

    def write(self, path: Path, array: np.ndarray, ndim: int, reference: Path | None, palette: bool) -> None:
        """A 2D label image of class ids (grayscale, uint8 or uint16), or with ``palette`` VOC's colours."""
        arr = squeeze_channel(array, ndim)
        if arr.ndim != 2:
            raise SegflowError(f"{path}: labels of shape {arr.shape} are not one 2D image; write .tif instead")
        arr = _png_labels(path, arr)
        if palette and arr.dtype == np.uint8:
            return write_palette_png(path, arr)
        return atomic_write(path, lambda tmp: iio.imwrite(tmp, arr, extension=".png"))

    def label_suffix(self, mask_path: Path) -> tuple[str, bool]:
        """Palette PNG masks (VOC) give palette PNGs, others grayscale PNGs of class ids."""
        try:
            return ".png", iio.immeta(mask_path).get("mode") == "P"
        except Exception:  # the mask was read already; its metadata only picks a colour scheme
            return ".png", False


class Jpeg(Png):
    """``.jpg``/``.jpeg``: read like PNG; lossy, so never a prediction's format (labels go to grayscale PNG)."""

    suffixes = (".jpg", ".jpeg")

    def cannot_hold(self, labels: bool, ndim: int | None) -> str | None:
        """See ``FileFormat.cannot_hold``: nothing, exactly."""
        return "JPEG is lossy and would change the values"

    def label_suffix(self, mask_path: Path) -> tuple[str, bool]:
        """Grayscale PNGs of class ids."""
        return ".png", False


def _png_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    """A 2D label image as uint8 or uint16 (what PNG stores), or an error when its values do not fit."""
    if labels.dtype in (np.uint8, np.uint16):
        return labels
    top = int(labels.max()) if labels.size else 0
    if np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and top <= 65535:
        return labels.astype(np.uint8 if top <= 255 else np.uint16)
    raise SegflowError(f"{path}: labels of type {labels.dtype} (up to {top}) do not fit a PNG; write .tif instead")


def voc_colormap(n: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map: ``(n, 3)`` uint8, class 0 black, 255 (void) light grey."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    """Write a 2D uint8 label image as a palette PNG with PASCAL VOC's colours, atomically."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(voc_colormap().ravel().tolist())
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
