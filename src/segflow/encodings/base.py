"""The one interface every label encoding implements, with the defaults most share.

Arrays are channels last: a mask is ``(Y, X)`` or ``(Z, Y, X)``; a target or network output adds a trailing
channel axis ``(..., C)``. Network tensors are channels first: ``(B, C, ...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torchmetrics

import numpy as np
import torch

from segflow.config.schema import Config
from segflow.errors import SegflowError


def planes(mask: np.ndarray, fn) -> np.ndarray:
    """Apply a 2D function to every y-x plane (the Crick labellers work per z-slice)."""
    if mask.ndim == 2:
        return fn(mask)
    return np.stack([fn(plane) for plane in mask])


class Encoding:
    """How a mask becomes a training target, and network outputs become labels again.

    Subclasses set ``name`` and override what differs. Flags read by the loss, the Scorer and the test phase:
    ``bitwise`` (one independent 0/1 channel per class, sigmoid each), ``regression`` (values, not classes).
    """

    name = ""
    bitwise = False
    regression = False
    # How far (pixels, every spatial axis) a target value looks into the mask: 0 for pixelwise encodings, so
    # a patch's target is encoded from the patch's mask alone; None when it depends on the whole image
    # (connected regions, distances), so the whole mask is encoded once.
    halo: int | None = 0

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.n = cfg.MODEL.N_CLASSES
        self.ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID

    @property
    def binary(self) -> bool:
        """One sigmoid channel for two classes (binary cross-entropy)."""
        return self.n == 2 and not self.bitwise and not self.regression

    def out_channels(self) -> int:
        """Network outputs: one per class, one for a binary problem."""
        return 1 if self.n == 2 else self.n

    def encode(self, mask: np.ndarray) -> np.ndarray:
        """Training target ``(..., T)`` of a raw mask ``(...)``: one int64 channel of class ids by default."""
        return mask.astype(np.int64)[..., None]

    def value_limit(self) -> int | None:
        """Mask values must lie in ``0..limit-1`` (the ignored id aside); None: any value is allowed."""
        return None

    def check_mask(self, mask: np.ndarray, path: Path) -> None:
        """Every value of a raw mask ``(...)`` must fit the encoding: a class id ``0..N_CLASSES-1``, a bitmask of
        ``N_CLASSES`` bits, or (regions and regression) anything; the ignored id (>= 0) is always allowed.
        Raises SegflowError naming ``path``, what is wrong and what to do."""
        top = self.value_limit()
        if top is None:
            return
        values = values_present(mask)
        bad = values[((values < 0) | (values >= top)) & ((values != self.ignore) | (self.ignore < 0))]
        if bad.size:
            raise SegflowError(f"{path}: {self._bad_values_message(values, bad)}")

    def _bad_values_message(self, values: np.ndarray, bad: np.ndarray) -> str:
        n, ignore = self.n, self.ignore
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        if bad[0] < 0:
            todo = (
                "-1 means no ignored class; fix the mask, or give the pixels to ignore an id >= 0 (e.g. 255) "
                "and set IGNORE_CLASS_ID to it"
                if ignore < 0
                else f"is {ignore}; fix the mask, e.g. give the pixels to ignore the id {ignore}"
            )
            return (
                f"mask values {shown} are negative, but masks hold class ids from 0 "
                f"and PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID {todo}"
            )
        if not self.bitwise:
            hint = " (a 0/255 mask: divide it by 255)" if set(values.tolist()) <= {0, 255} and n == 2 else ""
            return (
                f"mask values {shown} are outside the classes 0..{n - 1} of MODEL.N_CLASSES={n}{hint}; "
                "fix the mask or raise MODEL.N_CLASSES"
            )
        return (
            f"mask values {shown} need more than the {n} bits of MODEL.N_CLASSES={n} (ENCODING {self.name}); "
            "raise MODEL.N_CLASSES to the number of bit classes"
        )

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(B, C, ...)`` to probabilities: sigmoid for one channel, else softmax over C."""
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    def labels(self, probs: np.ndarray) -> np.ndarray | None:
        """Label image ``(...)`` of activated outputs ``(..., C)``; the 0.5 threshold is the IoU's too."""
        if probs.shape[-1] == 1:
            return (probs[..., 0] > 0.5).astype(np.uint8)
        return probs.argmax(-1).astype(np.uint8 if self.n <= 256 else np.uint16)

    def truth(self, mask: np.ndarray) -> np.ndarray:
        """What ``labels`` are scored against: the learned target as a label image ``(...)``."""
        return mask

    def score_classes(self) -> int:
        """Classes of the Scorer's confusion matrix (0: no label scores)."""
        return self.n

    def iou_metric(self) -> torchmetrics.Metric | None:
        """The training IoU: macro over classes, or binary for two; the ignored id left out."""
        import torchmetrics  # here, not at import: prediction never needs it

        kwargs: dict[str, Any] = {"ignore_index": self.ignore} if self.ignore >= 0 else {}
        if self.n == 2:
            return torchmetrics.JaccardIndex(task="binary", **kwargs)
        return torchmetrics.JaccardIndex(task="multiclass", num_classes=self.n, average="macro", **kwargs)

    def metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prediction and target of ``iou_metric`` from raw outputs ``(B, C, ...)`` and targets ``(B, T, ...)``."""
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        return pred, y[:, 0].long()

    def class_channels(self, labels: np.ndarray) -> np.ndarray:
        """One 0/1 channel per class ``(..., N_CLASSES)`` of a label image, for the test phase's TIFFs."""
        return np.stack([labels == c for c in range(self.n)], axis=-1).astype(np.uint8)

    def mask_counts(self, values: np.ndarray) -> np.ndarray | None:
        """Pixels of each class among raw (valid) mask values, as ``segflow check`` shows; None: not classes."""
        return _bincount(values, self.n)

    def class_counts(self, targets: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
        """Training pixels of each class of encoded targets ``(..., T)``, and of all valid pixels."""
        counts, valid = np.zeros(self.n, dtype=np.int64), 0
        for t in targets:
            values = t[..., 0]
            counts += _bincount(values, self.n)
            valid += int(((values >= 0) & (values < self.n)).sum())
        return counts, valid

    def describe(self, lo: float, hi: float) -> str | None:
        """``segflow check``'s line on the masks' values (regression), given their range."""
        return None


def values_present(mask: np.ndarray) -> np.ndarray:
    """The distinct values of ``mask``, sorted: counted in linear time for 8- and 16-bit masks (a large volume is
    checked slab by slab, and sorting each slab would dominate), ``np.unique`` otherwise."""
    if mask.dtype in (np.uint8, np.uint16):
        flat, seen = mask.ravel(), np.zeros(2 ** (8 * mask.dtype.itemsize), dtype=bool)
        for k in range(0, flat.size, 2**22):  # bincount counts in int64: 8 bytes a value at once, so a piece at a time
            counts = np.bincount(flat[k : k + 2**22])
            seen[: counts.size] |= counts > 0
        return np.flatnonzero(seen).astype(mask.dtype)
    return np.unique(mask)


def _bincount(values: np.ndarray, n: int) -> np.ndarray:
    """Pixels of each class ``0..n-1``; other values are not counted."""
    values = np.asarray(values).ravel()
    values = values[(values >= 0) & (values < n)]
    return np.bincount(values.astype(np.int64), minlength=n)
