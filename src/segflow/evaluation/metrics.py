"""Segmentation metrics from confusion matrices: IoU per class, foreground IoU, mean IoU, Dice, accuracy;
squared and absolute errors for regression encodings.

A class absent from both the prediction and the mask of an image has no defined IoU there; it is
left out of that image's mean (NaN), never counted as 0 or 1, so empty images do not distort means.
Pooled figures sum the confusion matrices of all images first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from segflow.config.schema import Config
from segflow.encodings import bits, get_encoding


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


def chunk_score(cfg: Config) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(labels, mask) -> confusion matrix`` of one chunk, as ``Scorer.add`` counts an image (the mask's class ids
    through the encoding's ``truth``, ignored pixels left out): picklable, sent to the chunk tasks."""
    enc = get_encoding(cfg)
    return functools.partial(_chunk_confusion, truth=enc.truth, n_classes=enc.score_classes(), ignore_id=cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID)


def _chunk_confusion(labels: np.ndarray, mask: np.ndarray, truth: Callable, n_classes: int, ignore_id: int) -> np.ndarray:
    return confusion(labels, truth(mask), n_classes, ignore_id)


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


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _merge_channels(per_channel: list[dict]) -> dict:
    """Bitmask scores: each channel is a binary class; its foreground IoU is that class's IoU."""
    iou = [s["foreground_iou"] for s in per_channel]
    dice = [s["foreground_dice"] for s in per_channel]
    return {
        "iou_per_class": iou,
        "foreground_iou": _nanmean(iou),
        "mean_iou": _nanmean(iou),
        "dice_per_class": dice,
        "foreground_dice": _nanmean(dice),
        "accuracy": _nanmean([s["accuracy"] for s in per_channel]),
    }


SUMMARY_KEYS = ("foreground_iou", "mean_iou", "foreground_dice", "accuracy", "mse", "mae")
_NAN_SCORES = {k: float("nan") for k in SUMMARY_KEYS} | {"iou_per_class": [], "dice_per_class": []}


class Scorer:
    """Scores of one prediction mode for any label encoding: one row per image and pooled over all pixels.

    ``categorical``/``region``: confusion matrices of class ids. Bitmasks: one binary confusion matrix
    per bit (classes may overlap). Regression: squared and absolute errors, plus, for ``distance``,
    the IoU of the predicted foreground (distance > 0.5) against mask > 0. Ignored pixels (the
    config's IGNORE_CLASS_ID) count nowhere.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.enc = get_encoding(cfg)
        self.n = cfg.MODEL.N_CLASSES
        self.ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
        self.rows: list[dict] = []
        self.conf = np.zeros((self.n, 2, 2) if self.enc.bitwise else (self.enc.score_classes(),) * 2, dtype=np.int64)
        self.errors = np.zeros(3)  # sum of squared errors, of absolute errors, pixel count

    def _valid(self, mask: np.ndarray) -> np.ndarray:
        return mask != self.ignore if self.ignore >= 0 else np.ones(mask.shape, dtype=bool)

    def add(self, name: str, outputs: np.ndarray, labels: np.ndarray | None, mask: np.ndarray) -> dict:
        """Score one image: ``outputs`` are the channels-last network outputs, ``labels`` their label image."""
        row = dict(_NAN_SCORES)
        if self.enc.bitwise:
            valid = self._valid(mask)
            pred_bits, true_bits = bits(labels, self.n), bits(self.enc.truth(mask), self.n)
            confs = [confusion(pred_bits[..., i][valid], true_bits[..., i][valid], 2) for i in range(self.n)]
            self.conf += np.stack(confs)
            row.update(_merge_channels([scores(c) for c in confs]))
        elif self.enc.score_classes():
            conf = confusion(labels, self.enc.truth(mask), self.enc.score_classes(), self.ignore)
            self.conf += conf
            row.update(scores(conf))
        if self.enc.regression:
            target = self.enc.encode(mask)[..., 0]
            keep = ~np.isnan(target)
            diff = outputs[..., 0][keep].astype(np.float64) - target[keep]
            self.errors += (float(np.square(diff).sum()), float(np.abs(diff).sum()), diff.size)
            row.update(mse=float(np.square(diff).mean()) if diff.size else float("nan"), mae=float(np.abs(diff).mean()) if diff.size else float("nan"))
        row["image"] = name
        self.rows.append(row)
        return row

    def add_confusion(self, name: str, conf: np.ndarray) -> dict:
        """Score one image from its confusion matrix (summed over its chunks, ``chunk_score``)."""
        row = {**_NAN_SCORES, **scores(conf), "image": name}
        self.conf += conf
        self.rows.append(row)
        return row

    def pooled(self) -> dict:
        """Scores over all pixels of all images."""
        out = dict(_NAN_SCORES)
        if self.enc.bitwise:
            out.update(_merge_channels([scores(c) for c in self.conf]))
        elif self.enc.score_classes():
            out.update(scores(self.conf))
        if self.enc.regression and self.errors[2]:
            out.update(mse=self.errors[0] / self.errors[2], mae=self.errors[1] / self.errors[2])
        return out

    def summary(self) -> dict:
        """Mean over images, pooled scores, and the per-image rows."""
        mean = {k: _nanmean([r[k] for r in self.rows]) for k in SUMMARY_KEYS}
        return {"per_image_mean": mean, "pooled": self.pooled(), "per_image": self.rows}
