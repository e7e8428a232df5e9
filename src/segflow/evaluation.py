"""Segmentation metrics from confusion matrices: IoU per class, foreground IoU, mean IoU, Dice, accuracy.

A class absent from both the prediction and the mask of an image has no defined IoU there; it is
left out of that image's mean (NaN), never counted as 0 or 1, so empty images do not distort means.
Pooled figures sum the confusion matrices of all images first.
"""

from __future__ import annotations

import numpy as np


def confusion(pred: np.ndarray, gt: np.ndarray, n_classes: int, ignore_id: int = -1) -> np.ndarray:
    """``n_classes x n_classes`` pixel counts, rows = mask class, columns = predicted class.

    Counted in chunks, so a large volume needs no full-size int64 copies.
    """
    gt, pred = np.asarray(gt).reshape(-1), np.asarray(pred).reshape(-1)
    out = np.zeros(n_classes * n_classes, dtype=np.int64)
    step = 1 << 24
    for i in range(0, gt.size, step):
        g = gt[i : i + step].astype(np.int64)
        p = pred[i : i + step].astype(np.int64)
        keep = (g >= 0) & (g < n_classes) & (g != ignore_id)
        out += np.bincount(g[keep] * n_classes + p[keep], minlength=n_classes * n_classes)
    return out.reshape(n_classes, n_classes)


def scores(conf: np.ndarray) -> dict[str, float | list[float]]:
    """IoU per class, foreground IoU (class 1 for binary, mean of classes 1.. otherwise), mean IoU, Dice, accuracy."""
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    fg = iou[1:]
    return {
        "iou_per_class": iou.tolist(),
        "foreground_iou": float(np.nanmean(fg)) if np.any(~np.isnan(fg)) else float("nan"),
        "mean_iou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
        "dice_per_class": dice.tolist(),
        "foreground_dice": float(np.nanmean(dice[1:])) if np.any(~np.isnan(dice[1:])) else float("nan"),
        "accuracy": float(tp.sum() / conf.sum()) if conf.sum() else float("nan"),
    }
