"""Post-processing of predicted probabilities: median filters along z, y-z, x-y or z-x (3D results,
or a folder of 2D slices treated as one stack)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from segflow.schema import Config

# Filter footprint per axis name, on (z, y, x).
_FOOTPRINTS = {"z": (1, 0, 0), "yz": (1, 1, 0), "xy": (0, 1, 1), "zx": (1, 0, 1)}


def median_filters(cfg: Config) -> list[tuple[str, int]]:
    """The (axes, size) median filters the config asks for, in the order they are applied.

    ``Z_FILTERING`` / ``YZ_FILTERING`` are BiaPy's older keys; ``MEDIAN_FILTER`` with
    ``MEDIAN_FILTER_AXIS`` its newer ones. Both work; each filter is applied once.
    """
    pp = cfg.TEST.POST_PROCESSING
    out: list[tuple[str, int]] = []
    if pp.Z_FILTERING:
        out.append(("z", pp.Z_FILTERING_SIZE))
    if pp.YZ_FILTERING:
        out.append(("yz", pp.YZ_FILTERING_SIZE))
    if pp.MEDIAN_FILTER:
        out += [(axis, pp.MEDIAN_FILTER_SIZE) for axis in pp.MEDIAN_FILTER_AXIS]
    return list(dict.fromkeys(out))


def apply_median_filters(probs: np.ndarray, filters: list[tuple[str, int]]) -> np.ndarray:
    """Median-filter each class channel of channels-last ``(z, y, x, K)`` probabilities."""
    out = np.array(probs, dtype=np.float32, copy=True)
    for axes, size in filters:
        footprint = tuple(size if on else 1 for on in _FOOTPRINTS[axes]) + (1,)
        out = ndimage.median_filter(out, size=footprint, mode="reflect")
    return out
