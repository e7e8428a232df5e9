"""The ``bitmask`` and ``double_membrane`` encodings: bit i of a mask value is class i; classes may overlap."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torchmetrics

import numpy as np
import torch
from scipy import ndimage

from segflow.encodings.base import Encoding, planes


def bits(mask: np.ndarray, n: int) -> np.ndarray:
    """``(..., n)`` 0/1 channels: channel i is bit i of the mask value."""
    values = mask.astype(np.int64)
    return np.stack([(values >> i) & 1 for i in range(n)], axis=-1).astype(np.uint8)


def from_bits(channels: np.ndarray) -> np.ndarray:
    """The bitmask image of ``(..., n)`` 0/1 channels (uint8 up to 8 bits, else uint16)."""
    n = channels.shape[-1]
    out = np.zeros(channels.shape[:-1], dtype=np.uint8 if n <= 8 else np.uint16)
    for i in range(n):
        out |= (channels[..., i].astype(out.dtype) << i).astype(out.dtype)
    return out


def double_membrane(mask: np.ndarray, n: int) -> np.ndarray:
    """Bitmask channels, each dilated by one pixel (cross footprint) in every y-x plane."""
    channels = bits(mask, n)
    cross = ndimage.generate_binary_structure(2, 1)
    for i in range(n):
        channels[..., i] = planes(channels[..., i], lambda p: ndimage.binary_dilation(p, cross)).astype(np.uint8)
    return channels


class Bitmask(Encoding):
    """One float32 0/1 target channel per bit (class), NaN where ignored; a sigmoid per channel."""

    name = "bitmask"
    bitwise = True

    def out_channels(self) -> int:
        return self.n

    def channels(self, mask: np.ndarray) -> np.ndarray:
        """The 0/1 channels ``(..., n)`` learned. Ignored pixels hold no bits, so a dilation (double_membrane)
        does not spread the ignored id's bits into their neighbours."""
        if self.ignore >= 0:
            mask = np.where(mask == self.ignore, 0, mask)
        return bits(mask, self.n)

    def encode(self, mask: np.ndarray) -> np.ndarray:
        out = self.channels(mask).astype(np.float32)
        if self.ignore >= 0:
            out[mask == self.ignore] = np.nan
        return out

    def value_limit(self) -> int | None:
        return 2**self.n

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def labels(self, probs: np.ndarray) -> np.ndarray | None:
        return from_bits(probs > 0.5)

    def iou_metric(self) -> torchmetrics.Metric | None:
        import torchmetrics  # here, not at import: prediction never needs it

        return torchmetrics.classification.MultilabelJaccardIndex(num_labels=self.n, average="macro", ignore_index=-1)

    def metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (logits > 0).long(), torch.nan_to_num(y, nan=-1).long()

    def class_channels(self, labels: np.ndarray) -> np.ndarray:
        return bits(labels, self.n)

    def mask_counts(self, values: np.ndarray) -> np.ndarray | None:
        return bits(np.asarray(values).ravel(), self.n).sum(0)

    def class_counts(self, targets: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
        counts, valid = np.zeros(self.n, dtype=np.int64), 0
        for t in targets:
            valid += int((~np.isnan(t[..., 0])).sum())
            counts += np.nansum(t, axis=tuple(range(t.ndim - 1))).astype(np.int64)
        return counts, valid


class DoubleMembrane(Bitmask):
    """Bitmask channels, each dilated by one pixel in every y-x plane; scored against the dilated bitmask."""

    name = "double_membrane"
    halo = 1  # the one-pixel dilation

    def channels(self, mask: np.ndarray) -> np.ndarray:
        if self.ignore >= 0:
            mask = np.where(mask == self.ignore, 0, mask)
        return double_membrane(mask, self.n)

    def truth(self, mask: np.ndarray) -> np.ndarray:
        return from_bits(self.channels(mask))
