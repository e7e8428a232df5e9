"""Label encodings (``PROBLEM.SEMANTIC_SEG.ENCODING``): how a mask becomes training targets and how
network outputs become label images again.

Targets are channels-last arrays cut into patches like the images:
- ``categorical`` and ``region``: one int64 channel of class ids (the ignored id kept as is);
- ``bitmask`` and ``double_membrane``: one float32 0/1 channel per bit (class), NaN where ignored;
- ``linear`` and ``distance``: one float32 channel of values to regress, NaN where ignored.
The encoding is part of the config, which every checkpoint carries, so prediction decodes the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from segflow.config.schema import Config

BITMASK = ("bitmask", "double_membrane")
REGRESSION = ("linear", "distance")


def encoding(cfg: Config) -> str:
    """The config's encoding name."""
    return cfg.PROBLEM.SEMANTIC_SEG.ENCODING


def is_regression(cfg: Config) -> bool:
    return encoding(cfg) in REGRESSION


def is_bitmask(cfg: Config) -> bool:
    return encoding(cfg) in BITMASK


def out_channels(cfg: Config) -> int:
    """Network outputs: one per bit for bitmasks, one for regression and binary problems, else one per class."""
    if is_bitmask(cfg):
        return cfg.MODEL.N_CLASSES
    if is_regression(cfg) or cfg.MODEL.N_CLASSES == 2:
        return 1
    return cfg.MODEL.N_CLASSES


def _planes(mask: np.ndarray, fn) -> np.ndarray:
    """Apply a 2D function to every y-x plane (the Crick labellers work per z-slice)."""
    if mask.ndim == 2:
        return fn(mask)
    return np.stack([fn(plane) for plane in mask])


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
        channels[..., i] = _planes(channels[..., i], lambda p: ndimage.binary_dilation(p, cross)).astype(np.uint8)
    return channels


def region_labels(mask: np.ndarray, n: int) -> np.ndarray:
    """Class 0 where the mask is non-zero (membrane); each connected region of zeros in a y-x plane
    is class 1, 2, ...; regions beyond ``n - 1`` join class ``n - 1``."""

    def plane(p: np.ndarray) -> np.ndarray:
        labelled, _ = ndimage.label(p == 0)
        return np.minimum(labelled, n - 1)

    return _planes(mask, plane).astype(np.int64)


def distance_transform(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each foreground pixel (mask > 0) to the nearest background pixel."""
    return ndimage.distance_transform_edt(mask > 0).astype(np.float32)


def bitmask_channels(mask: np.ndarray, cfg: Config) -> np.ndarray:
    """The 0/1 channels a bitmask encoding learns: the mask's bits, dilated for 'double_membrane'.
    Ignored pixels hold no bits, so a dilation does not spread the ignored id's bits into their neighbours."""
    n = cfg.MODEL.N_CLASSES
    ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
    if ignore >= 0:
        mask = np.where(mask == ignore, 0, mask)
    return bits(mask, n) if encoding(cfg) == "bitmask" else double_membrane(mask, n)


def encode(mask: np.ndarray, cfg: Config) -> np.ndarray:
    """Training target of a raw mask, channels last (see the module docstring)."""
    kind = encoding(cfg)
    n = cfg.MODEL.N_CLASSES
    ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
    if kind == "categorical":
        return mask.astype(np.int64)[..., None]
    if kind == "region":
        out = region_labels(mask, n)
        if ignore >= 0:
            out[mask == ignore] = ignore
        return out[..., None]
    if kind in BITMASK:
        out = bitmask_channels(mask, cfg).astype(np.float32)
    elif kind == "linear":
        out = mask.astype(np.float32)[..., None]
    else:
        out = distance_transform(mask)[..., None]
    if ignore >= 0:
        out[mask == ignore] = np.nan
    return out


def class_counts(targets: list[np.ndarray], cfg: Config) -> tuple[np.ndarray, int]:
    """Training pixels of each class (each bit for bitmasks; none for regression) and of all valid pixels."""
    n = cfg.MODEL.N_CLASSES
    counts = np.zeros(0 if is_regression(cfg) else n, dtype=np.int64)
    valid = 0
    for t in targets:
        if np.issubdtype(t.dtype, np.floating):
            keep = ~np.isnan(t[..., 0])
            valid += int(keep.sum())
            if is_bitmask(cfg):
                counts += np.nansum(t, axis=tuple(range(t.ndim - 1))).astype(np.int64)
        else:
            values = t[..., 0].ravel()
            values = values[(values >= 0) & (values < n)]
            counts += np.bincount(values.astype(np.int64), minlength=n)
            valid += values.size
    return counts, valid


def labels(probs: np.ndarray, cfg: Config) -> np.ndarray | None:
    """Label image from channels-last network outputs (after activation); None for 'linear'.

    Binary and bitmask channels use the 0.5 threshold, the same one the IoU uses; a distance
    prediction above 0.5 pixel is foreground.
    """
    kind = encoding(cfg)
    if kind == "linear":
        return None
    if kind in BITMASK:
        return from_bits(probs > 0.5)
    if probs.shape[-1] == 1:
        return (probs[..., 0] > 0.5).astype(np.uint8)
    return probs.argmax(-1).astype(np.uint8 if cfg.MODEL.N_CLASSES <= 256 else np.uint16)


def truth(mask: np.ndarray, cfg: Config) -> np.ndarray:
    """What ``labels`` are compared with: the target the network learns, as a label image. Class ids, the
    region classes, the bitmask (dilated for 'double_membrane'), or mask > 0 for 'distance'."""
    kind = encoding(cfg)
    if kind == "region":
        return encode(mask, cfg)[..., 0]
    if kind == "double_membrane":
        return from_bits(bitmask_channels(mask, cfg))
    if kind == "distance":
        out = (mask > 0).astype(np.int64)
        ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
        if ignore >= 0:
            out[mask == ignore] = ignore
        return out
    return mask


def voc_colormap(n: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map: ``(n, 3)`` uint8, class 0 black, 255 (void) light grey."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def activate(logits: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Network outputs to probabilities (sigmoid per channel, or softmax) or regression values."""
    if encoding(cfg) in REGRESSION:
        return torch.relu(logits) if cfg.PROBLEM.SEMANTIC_SEG.OUTPUT_ACTIVATION == "relu" else logits
    return torch.sigmoid(logits) if logits.shape[1] == 1 or encoding(cfg) in ("bitmask", "double_membrane") else torch.softmax(logits, dim=1)
