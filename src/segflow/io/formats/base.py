"""The interface every image file format implements, and the size checks that keep a damaged header from
allocating more memory than the file could hold."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segflow.errors import SegflowError


class FileFormat:
    """One image file format: reading, whether it can hold a prediction, writing one, matching a mask's style.

    Arrays are as the file stores them on reading (with the axes string the file records, if any); on
    writing they are channels last, ``(y, x[, c])`` or ``(z, y, x[, c])``.
    """

    suffixes: tuple[str, ...] = ()
    planar = False  # holds only 2D images (PNG, JPEG): never read as a z-stack

    def read(self, path: Path, palette_indices: bool) -> tuple[np.ndarray, str | None]:
        """The decoded array and its axes (None when the format records none); palette PNGs give their
        colour indices with ``palette_indices`` (masks), their colours otherwise."""
        raise NotImplementedError

    def cannot_hold(self, labels: bool, ndim: int | None) -> str | None:
        """Why this format cannot hold a prediction exactly (class ``labels``, or float values; ``ndim`` None:
        not known yet), or None when it can."""
        return None

    def write(self, path: Path, array: np.ndarray, ndim: int, reference: Path | None, palette: bool) -> None:
        """Write a prediction ``array`` atomically; ``reference`` is the input image it came from (metadata to
        copy), ``palette`` asks for VOC's colours (label PNGs)."""
        raise NotImplementedError

    def label_suffix(self, mask_path: Path) -> tuple[str, bool]:
        """The suffix and palette flag of label images matching a mask stored in this format."""
        return mask_path.suffix.lower(), False


def squeeze_channel(arr: np.ndarray, ndim: int) -> np.ndarray:
    """A single trailing channel dropped: ``(..., 1)`` to ``(...)``."""
    return arr[..., 0] if arr.ndim == ndim + 1 and arr.shape[-1] == 1 else arr


# A damaged header can declare terabytes of pixels; decoders would allocate (and touch) that much before
# failing. Compressed pixel data expands at most this much (zlib's limit is about 1000:1, LZW's 2700:1).
_MAX_COMPRESSION = 5000
_SMALL = 64 * 2**20  # any file may declare this much


def _human(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{nbytes} bytes"  # pragma: no cover


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_declared_size(path: Path, nbytes: int, compressed: bool, stored: int | None = None) -> None:
    """Refuse a file whose header declares more pixel data than it can hold, before anything is allocated."""
    size = path.stat().st_size if stored is None else stored
    if not compressed and nbytes > size:
        raise SegflowError(
            f"{path}: cannot be read as an image (the header declares {_human(nbytes)} of pixels but the file holds only "
            f"{_human(size)}); the file may be corrupt or truncated"
        )
    if compressed and nbytes > max(_SMALL, size * _MAX_COMPRESSION):
        raise SegflowError(
            f"{path}: cannot be read as an image (the header declares {_human(nbytes)} of pixels from {_human(size)} of "
            "compressed data); the file may be corrupt or truncated (if the image really is that empty, save it uncompressed)"
        )
    memory = physical_memory()
    if memory and nbytes > memory:
        raise SegflowError(
            f"{path}: cannot be read as an image (it needs {_human(nbytes)} of memory, more than this machine's "
            f"{_human(memory)}); crop or downsample it, or the file is corrupt"
        )
