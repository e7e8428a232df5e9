"""What a chunked prediction writes into: one interface (``VolumeStore``) for Zarr, OME-Zarr and HDF5 outputs.

An output holds the named arrays of a ``Layout`` (``probabilities*`` ``(K, *spatial)``, ``labels*`` ``(*spatial)``),
chunked like the work, one flag per chunk in ``done`` and, with ground truth, one confusion matrix per chunk per
score. A chunk task writes its core into every array, then its flag, so a chunk killed part-way is predicted again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Layout:
    """The arrays of an output: their names, shapes, chunks and types."""

    spatial: tuple[int, ...]
    chunk: tuple[int, ...]
    channels: int  # K, the network's activated output channels
    dtype: str  # of the probabilities: float16 or float32
    arrays: tuple[str, ...]  # e.g. ("probabilities", "labels", "probabilities_post_processing", ...)
    scores: tuple[str, ...] = ()  # confusion matrices kept per chunk, e.g. ("confusion",)
    n_classes: int = 0  # rows and columns of each confusion matrix

    @property
    def grid(self) -> tuple[int, ...]:
        """Chunks along each spatial axis."""
        return tuple(-(-n // c) for n, c in zip(self.spatial, self.chunk))

    def spec(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        """``(shape, chunks, dtype)`` of the array ``name``."""
        if name.startswith("probabilities"):
            return (self.channels, *self.spatial), (self.channels, *self.chunk), self.dtype
        if name.startswith("labels"):
            return self.spatial, self.chunk, "uint8" if max(self.channels, self.n_classes) < 256 else "uint16"
        if name == "done":
            return self.grid, (1,) * len(self.grid), "uint8"
        n = self.n_classes  # a confusion matrix per chunk, each its own storage chunk: summed at the end, resumable
        return (*self.grid, n, n), (1,) * len(self.grid) + (n, n), "int64"

    def every_array(self) -> tuple[str, ...]:
        """The outputs, the scores and ``done``."""
        return (*self.arrays, *self.scores, "done")


class VolumeStore:
    """One output format. Subclasses name it, give its suffixes and how its arrays are made, opened and written."""

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    many_processes: ClassVar[bool] = True  # whether workers in other processes may write it at once

    def create(self, path: str, layout: Layout, attrs: dict) -> None:
        """Make the output at ``path`` (replacing what is there) with every array of ``layout``, zero-filled, and
        segflow's ``attrs``."""
        raise NotImplementedError

    def attrs(self, path: str) -> dict:
        """segflow's attributes of the output at ``path``; ``{}`` when it is not a segflow output or is unreadable."""
        raise NotImplementedError

    def update_attrs(self, path: str, **values: Any) -> None:
        """Add ``values`` to segflow's attributes of the output."""
        raise NotImplementedError

    def read(self, path: str, name: str) -> Any:
        """The array ``name`` of the output, sliceable (read lazily)."""
        raise NotImplementedError

    def write(self, path: str, index: tuple[int, ...], core: tuple[slice, ...], outputs: dict[str, np.ndarray],
              confusions: dict[str, np.ndarray]) -> None:  # fmt: skip
        """Write the chunk at grid ``index`` (spatial region ``core``): each output array's values there
        (``probabilities*`` ``(K, *core)``), each confusion matrix, then the chunk's ``done`` flag."""
        raise NotImplementedError

    def finish(self, path: str, layout: Layout, voxel_size: tuple[float, ...] | None) -> None:
        """After every chunk is written: what the format adds (OME-Zarr: the multiscale levels and metadata)."""
