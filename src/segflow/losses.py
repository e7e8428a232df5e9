"""Training losses from ``LOSS.*``: cross-entropy, Dice, or a weighted sum, with class rebalancing."""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceLoss
from torch import nn

from segflow.schema import Config


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over the classes present) from training pixel counts."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)


class SegmentationLoss(nn.Module):
    """Loss on logits ``(B, C, ...)`` against integer labels ``(B, 1, ...)``.

    Binary problems (one output channel) use BCE-with-logits and sigmoid Dice; multi-class ones
    softmax cross-entropy and softmax Dice.
    """

    def __init__(self, cfg: Config, class_counts: np.ndarray | None = None) -> None:
        super().__init__()
        self.binary = cfg.MODEL.N_CLASSES == 2
        kind = cfg.LOSS.TYPE
        self.w_ce, self.w_dice = {"CE": (1.0, 0.0), "DICE": (0.0, 1.0), "W_CE_DICE": tuple(cfg.LOSS.WEIGHTS)}[kind]
        weights = class_weights(class_counts) if cfg.LOSS.CLASS_REBALANCE and class_counts is not None else None
        if self.binary:
            pos_weight = None if weights is None or weights[1] == 0 else (weights[1] / weights[0]).reshape(1)
            self.ce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
            self.dice = DiceLoss(sigmoid=True)
        else:
            self.ce = nn.CrossEntropyLoss(weight=weights)
            self.dice = DiceLoss(softmax=True, to_onehot_y=True)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the cross-entropy and Dice terms."""
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.w_ce:
            target = labels.float() if self.binary else labels[:, 0].long()
            loss = loss + self.w_ce * self.ce(logits, target)
        if self.w_dice:
            loss = loss + self.w_dice * self.dice(logits, labels.float() if self.binary else labels)
        return loss
