"""Image file formats, one object each, chosen by suffix with ``format_for``: how a format reads, whether it can
hold a prediction, how it writes one. A new file format is one module here and one entry in ``FORMATS``."""

from __future__ import annotations

from pathlib import Path

from segflow.io.formats.base import FileFormat
from segflow.io.formats.npy import Npy
from segflow.io.formats.png import Jpeg, Png, voc_colormap
from segflow.io.formats.tiff import Tiff, write_tiff

FORMATS: list[FileFormat] = [Tiff(), Png(), Jpeg(), Npy()]
SUFFIXES = tuple(s for f in FORMATS for s in f.suffixes)

__all__ = ["FORMATS", "SUFFIXES", "FileFormat", "format_for", "voc_colormap", "write_tiff"]


def format_for(path: Path) -> FileFormat | None:
    """The format of ``path``, by its suffix (any case); None when segflow has none for it."""
    suffix = path.suffix.lower()
    return next((f for f in FORMATS if suffix in f.suffixes), None)
