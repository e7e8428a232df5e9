"""Training losses from ``LOSS.*`` for every label encoding, leaving ignored pixels out.

- categorical / region: softmax cross-entropy and Dice (binary: one sigmoid channel, BCE), ignored
  pixels (IGNORE_CLASS_ID) excluded from both;
- bitmask encodings: per-class BCE and sigmoid Dice, NaN targets (ignored) excluded;
- regression: MSE or log(1 + MSE) on the activated output, NaN targets excluded.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from segflow.config.schema import Config
from segflow.encodings import get_encoding


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over the classes present) from training pixel counts."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)


class SegmentationLoss(nn.Module):
    """Loss on raw network outputs ``(B, C, ...)`` against encoded targets ``(B, T, ...)``."""

    def __init__(self, cfg: Config, class_counts: np.ndarray | None = None, n_valid: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoding = get_encoding(cfg)
        self.regression, self.bitmask, self.binary = self.encoding.regression, self.encoding.bitwise, self.encoding.binary
        self.ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
        self.w_ce, self.w_dice = {"CE": (1.0, 0.0), "DICE": (0.0, 1.0), "W_CE_DICE": tuple(cfg.LOSS.WEIGHTS), "MSE": (0, 0), "LOGMSE": (0, 0)}[cfg.LOSS.TYPE]
        self.dice = DiceLoss(reduction="mean")
        weight = pos_weight = None
        if cfg.LOSS.CLASS_REBALANCE and class_counts is not None and len(class_counts):
            counts = np.asarray(class_counts, dtype=np.float64)
            if self.bitmask:  # per class: negatives over positives, as BCE's pos_weight expects
                pos_weight = torch.as_tensor(np.where(counts > 0, (float(n_valid or 0) - counts) / np.maximum(counts, 1), 1.0), dtype=torch.float32)
            elif self.binary:
                w = class_weights(counts)
                pos_weight = (w[1] / w[0]).reshape(1) if w[0] > 0 and w[1] > 0 else None
            else:
                weight = class_weights(counts)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss; ignored pixels contribute nothing."""
        logits = logits.float()
        if self.regression:
            pred = self.encoding.activate(logits)
            valid = ~torch.isnan(target)
            mse = ((pred - torch.nan_to_num(target)) ** 2)[valid].mean() if valid.any() else logits.sum() * 0
            return torch.log1p(mse) if self.cfg.LOSS.TYPE == "LOGMSE" else mse
        if self.bitmask:
            valid = ~torch.isnan(target)
            onehot = torch.nan_to_num(target)
            probs = torch.sigmoid(logits)
            ce = self._masked_bce(logits, onehot, valid, self.pos_weight.view(1, -1, *[1] * (logits.dim() - 2)) if self.pos_weight is not None else None)
        else:
            labels = target[:, 0].long()
            valid = (labels != self.ignore) if self.ignore >= 0 else torch.ones_like(labels, dtype=torch.bool)
            if self.binary:
                onehot = (labels == 1).float()[:, None]
                probs = torch.sigmoid(logits)
                ce = self._masked_bce(logits, onehot, valid[:, None], self.pos_weight)
                valid = valid[:, None]
            else:
                n = logits.shape[1]
                onehot = F.one_hot(torch.where(valid, labels, 0).clamp(0, n - 1), n).movedim(-1, 1).float()
                probs = torch.softmax(logits, dim=1)
                ce = F.cross_entropy(logits, torch.where(valid, labels, -100), weight=self.weight, ignore_index=-100) if valid.any() else logits.sum() * 0
                valid = valid[:, None]
        loss = logits.new_zeros(())
        if self.w_ce:
            loss = loss + self.w_ce * ce
        if self.w_dice:
            keep = valid.float()
            loss = loss + self.w_dice * self.dice(probs * keep, onehot * keep)
        return loss

    @staticmethod
    def _masked_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
        return per_pixel[valid.expand_as(per_pixel)].mean() if valid.any() else logits.sum() * 0
