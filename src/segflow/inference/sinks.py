"""Where blended window predictions go: a sink sums weighted windows, then divides by the summed weights.

``predict_windows`` only talks to a ``Sink``, so the output may live in memory (``ArraySink``) or, later,
on disk (a Zarr array) without the window loop changing.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Sink(Protocol):
    """A ``(K, *spatial)`` output that weighted windows are summed into, then normalised."""

    def allocate(self, channels: int, spatial: tuple[int, ...]) -> None:
        """Make the zeroed ``(channels, *spatial)`` output; called once, before the first ``add``."""

    def add(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        """Add one weighted window ``values`` ``(channels, *window)`` to the output at the spatial ``region``."""

    def finish(self, norms: list[np.ndarray]) -> None:
        """Divide the output by the summed weights: the outer product of ``norms`` (one 1D array per axis)."""

    def result(self) -> object:
        """The finished output (what ``predict_windows`` returns)."""


class ArraySink:
    """The output as an in-memory float32 numpy array; normalised slab by slab (no full-size temporary)."""

    def __init__(self) -> None:
        self.out: np.ndarray | None = None

    def allocate(self, channels: int, spatial: tuple[int, ...]) -> None:
        """See ``Sink.allocate``."""
        self.out = np.zeros((channels, *spatial), dtype=np.float32)

    def add(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        """See ``Sink.add``."""
        self.out[(slice(None), *region)] += values

    def finish(self, norms: list[np.ndarray]) -> None:
        """See ``Sink.finish``: one slab of the first spatial axis at a time."""
        rest = outer_product(norms[1:]).astype(np.float32) if len(norms) > 1 else np.float32(1)
        for i, n0 in enumerate(norms[0]):
            self.out[:, i] /= np.float32(n0) * rest

    def result(self) -> np.ndarray:
        """The ``(K, *spatial)`` float32 array."""
        return self.out


def outer_product(vectors: list[np.ndarray]) -> np.ndarray:
    """Outer product of 1D arrays: shape ``(len(v0), len(v1), ...)``."""
    out = vectors[0]
    for v in vectors[1:]:
        out = np.multiply.outer(out, v)
    return out
