"""The ``region`` encoding: membrane masks become the classes of the regions between membranes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from segflow.encodings.base import Encoding, planes


def region_labels(mask: np.ndarray, n: int) -> np.ndarray:
    """Class 0 where the mask is non-zero (membrane); each connected region of zeros in a y-x plane
    is class 1, 2, ...; regions beyond ``n - 1`` join class ``n - 1``."""

    def plane(p: np.ndarray) -> np.ndarray:
        labelled, _ = ndimage.label(p == 0)
        return np.minimum(labelled, n - 1)

    return planes(mask, plane).astype(np.int64)


class Region(Encoding):
    """One int64 target channel of region classes (the ignored id kept as is); any mask value is allowed."""

    name = "region"
    halo = None  # a region's class is its rank among the plane's regions

    def encode(self, mask: np.ndarray) -> np.ndarray:
        out = region_labels(mask, self.n)
        if self.ignore >= 0:
            out[mask == self.ignore] = self.ignore
        return out[..., None]

    def truth(self, mask: np.ndarray) -> np.ndarray:
        return self.encode(mask)[..., 0]

    def mask_counts(self, values: np.ndarray) -> np.ndarray | None:
        return None  # the classes exist only after labelling the regions
