"""Post-processing of predicted probabilities: median filters along z, y-z, x-y or z-x (3D results,
2D images for x-y, or a folder of 2D slices treated as one stack)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from segflow.config.schema import Config

# Filter footprint per axis name, on (z, y, x); BiaPy accepts both orders of each pair.
_FOOTPRINTS = {"z": (1, 0, 0), "yz": (1, 1, 0), "xy": (0, 1, 1), "zx": (1, 0, 1)}
CANONICAL = {"zy": "yz", "yx": "xy", "xz": "zx"}  # BiaPy accepts both orders of each pair


def median_filters(cfg: Config) -> list[tuple[str, int]]:
    """The (axes, size) median filters the config asks for, in the order they are applied.

    ``Z_FILTERING`` / ``YZ_FILTERING`` are BiaPy's older keys; ``MEDIAN_FILTER`` with
    ``MEDIAN_FILTER_AXIS`` / ``MEDIAN_FILTER_SIZE`` its newer ones. Both work; each filter is applied once.
    """
    pp = cfg.TEST.POST_PROCESSING
    out: list[tuple[str, int]] = []
    if pp.Z_FILTERING:
        out.append(("z", pp.Z_FILTERING_SIZE))
    if pp.YZ_FILTERING:
        out.append(("yz", pp.YZ_FILTERING_SIZE))
    if pp.MEDIAN_FILTER:
        out += [(CANONICAL.get(axis, axis), size) for axis, size in zip(pp.MEDIAN_FILTER_AXIS, pp.MEDIAN_FILTER_SIZE)]
    return list(dict.fromkeys(out))


def filters_for(filters: list[tuple[str, int]], ndim: int) -> list[tuple[str, int]]:
    """The filters that apply to ``ndim``-D results: all in 3D, only the x-y ones in 2D."""
    return filters if ndim == 3 else [f for f in filters if "z" not in f[0]]


def apply_median_filters(probs: np.ndarray, filters: list[tuple[str, int]]) -> np.ndarray:
    """Median-filter each class channel of channels-last ``(z, y, x, K)`` or ``(y, x, K)`` probabilities."""
    out = np.array(probs, dtype=np.float32, copy=True)
    spatial = out.ndim - 1
    for axes, size in filters_for(filters, spatial):
        footprint = tuple(size if on else 1 for on in _FOOTPRINTS[axes][-spatial:]) + (1,)
        out = ndimage.median_filter(out, size=footprint, mode="reflect")
    return out


def filter_halo(filters: list[tuple[str, int]], ndim: int) -> tuple[int, ...]:
    """How far the ``filters``, applied in turn, read beyond a voxel along each spatial axis: what a chunk filtered
    alone needs around it to give the whole volume's values (``()`` when no filter applies)."""
    applied = filters_for(filters, ndim)
    if not applied:
        return ()
    return tuple(sum(size // 2 for axes, size in applied if _FOOTPRINTS[axes][-ndim:][i]) for i in range(ndim))


def chunk_filter(filters: list[tuple[str, int]], ndim: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """The ``filters`` as one picklable function of channels-last probabilities, for the chunk tasks; None if none applies."""
    applied = filters_for(filters, ndim)
    return functools.partial(apply_median_filters, filters=applied) if applied else None
