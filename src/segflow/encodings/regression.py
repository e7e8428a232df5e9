"""The regression encodings: ``linear`` (mask values as they are) and ``distance`` (distance transform)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torchmetrics

import numpy as np
import torch
from scipy import ndimage

from segflow.encodings.base import Encoding


def distance_transform(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each foreground pixel (mask > 0) to the nearest background pixel."""
    return ndimage.distance_transform_edt(mask > 0).astype(np.float32)


class Linear(Encoding):
    """One float32 target channel of the mask values, NaN where ignored; no label image, no IoU."""

    name = "linear"
    regression = True

    def out_channels(self) -> int:
        return 1

    def values(self, mask: np.ndarray) -> np.ndarray:
        """The values ``(...)`` to regress."""
        return mask.astype(np.float32)

    def encode(self, mask: np.ndarray) -> np.ndarray:
        out = self.values(mask)[..., None]
        if self.ignore >= 0:
            out[mask == self.ignore] = np.nan
        return out

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.relu(logits) if self.cfg.PROBLEM.SEMANTIC_SEG.OUTPUT_ACTIVATION == "relu" else logits

    def labels(self, probs: np.ndarray) -> np.ndarray | None:
        return None

    def score_classes(self) -> int:
        return 0

    def iou_metric(self) -> torchmetrics.Metric | None:
        return None

    def mask_counts(self, values: np.ndarray) -> np.ndarray | None:
        return None

    def class_counts(self, targets: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
        return np.zeros(0, dtype=np.int64), sum(int((~np.isnan(t[..., 0])).sum()) for t in targets)

    def describe(self, lo: float, hi: float) -> str | None:
        return f"  target values ({self.name}): {lo:g} .. {hi:g}"


class Distance(Linear):
    """Distance of each foreground pixel to the background; a distance above 0.5 pixel is foreground."""

    name = "distance"
    halo = None  # the nearest background pixel may be anywhere in the image

    def values(self, mask: np.ndarray) -> np.ndarray:
        return distance_transform(mask)

    def labels(self, probs: np.ndarray) -> np.ndarray | None:
        return (probs[..., 0] > 0.5).astype(np.uint8)

    def truth(self, mask: np.ndarray) -> np.ndarray:
        out = (mask > 0).astype(np.int64)
        if self.ignore >= 0:
            out[mask == self.ignore] = self.ignore
        return out

    def score_classes(self) -> int:
        return 2

    def iou_metric(self) -> torchmetrics.Metric | None:
        import torchmetrics  # here, not at import: prediction never needs it

        return torchmetrics.JaccardIndex(task="binary", ignore_index=-1)

    def metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.activate(logits)[:, 0] > 0.5
        return pred.long(), torch.where(torch.isnan(y[:, 0]), -1, (y[:, 0] > 0.5).long())

    def describe(self, lo: float, hi: float) -> str | None:
        return "  foreground for the distance transform: mask > 0"
