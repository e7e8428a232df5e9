"""Where training and validation samples come from: one ``Source`` object per kind of storage, chosen by
``open_source`` from the configured path.

A source hands out ``Sample``s whose ``image`` ``(*spatial, C)`` and ``mask`` ``(*spatial)`` are arrays in their
stored dtype: numpy arrays in memory, or, for a lazy source, arrays that read what is sliced
(``io.lazy.LazyArray`` over a Zarr or HDF5 dataset, or a TIFF file, with ``IN_MEMORY: false``). Patches are cut from them, then normalised and encoded one
at a time (``data.patches``), so a new kind of storage is one module here and one entry in ``SOURCES``.
"""

from __future__ import annotations

from segflow.config.schema import Config
from segflow.data.sources.base import Sample, Source
from segflow.data.sources.folder import FolderSource
from segflow.data.sources.hdf5_files import Hdf5Source
from segflow.data.sources.lmdb_records import LmdbSource
from segflow.data.sources.tiff_files import TiffSource
from segflow.data.sources.zarr_files import ZarrSource

# Asked in order; the first that accepts a path reads it (the folder source accepts any).
SOURCES: list[type[Source]] = [LmdbSource, ZarrSource, Hdf5Source, TiffSource, FolderSource]

__all__ = ["SOURCES", "FolderSource", "Hdf5Source", "LmdbSource", "Sample", "Source", "TiffSource", "ZarrSource", "open_source"]


def open_source(cfg: Config, image_path: str, what: str) -> Source:
    """The source that reads ``image_path`` (a ``DATA.*.PATH`` of the part ``what``: 'train', 'validation')."""
    return next(cls for cls in SOURCES if cls.accepts(cfg, image_path, what))()
