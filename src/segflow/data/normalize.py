"""Normalisation: raw pixel values to network input, with what a checkpoint must store to repeat it.

Images are channels last, ``(*spatial, C)``. Statistics are measured once per image (``Normalizer.stats``)
and applied to any window of it (``Normalizer.apply``), so training patches and prediction windows are
normalised one at a time and a data source only has to hand out raw arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segflow.config.schema import NormalizationConfig
from segflow.errors import SegflowError
from segflow.io.lazy import slabs, value_range

# PERC_CLIP's percentiles are taken over at most this many values: exact for images up to 16.7 M values
# (a 64x512x512 stack), and for larger ones (memory maps, chunked arrays) a bounded read and sort.
PERCENTILE_SAMPLE = 2**24


def percentile_sample(image: np.ndarray, limit: int | None = None) -> np.ndarray:
    """At most ``limit`` (default ``PERCENTILE_SAMPLE``) values of ``image`` (any shape) to take percentiles of:
    all of them when there are no more, else evenly spaced slabs of the first axis (a memory map or a chunked
    array reads only those), thinned to every k-th value when the slabs still hold more."""
    limit = PERCENTILE_SAMPLE if limit is None else limit
    if image.size <= limit:
        return np.asarray(image)
    n = image.shape[0]
    per_row = max(1, math.prod(image.shape[1:]))
    rows = np.unique(np.linspace(0, n - 1, max(1, min(n, limit // per_row))).round().astype(int))
    values = np.concatenate([np.asarray(image[int(i)]).ravel() for i in rows])
    return values[:: -(-values.size // limit)]


# Integer images wider than 16 bits are usually 8- or 16-bit data saved wide (int32, int64, uint32):
# dividing them by their type's range (9.2e18 for int64) would feed the network near-zero input.
WIDE_INT_LIMIT = 65535


def is_wide_int(dtype: np.dtype) -> bool:
    """Integer pixel types wider than 16 bits."""
    return np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize > 2


@dataclass
class Normalizer:
    """Maps raw pixel values to network input; everything it needs is stored in the checkpoint."""

    cfg: NormalizationConfig
    mean: float | None = None
    std: float | None = None
    # TYPE 'div': divisor of integer images wider than 16 bits (255 or 65535, fitted on the training
    # images); None = their type's range, as checkpoints written before it was fitted divide.
    wide_divisor: float | None = None

    @classmethod
    def from_state(cls, cfg: NormalizationConfig, state: dict | None) -> Normalizer:
        """The normaliser a checkpoint stored with ``state()`` (older checkpoints lack some keys)."""
        state = state or {}
        return cls(cfg, state.get("mean"), state.get("std"), state.get("wide_divisor"))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalise one channels-last image to float32."""
        return self.apply(image, self.stats(image))

    def stats(self, image: np.ndarray, where: str = "image") -> dict:
        """The per-image values the normalisation needs, measured without a whole-image float copy,
        so that windows of a large (or memory-mapped) image can be normalised one at a time.
        ``where`` names the image in errors."""
        out: dict = {"dtype": image.dtype}
        clip = self.clip_range(image)
        if clip is not None:
            out["clip"] = clip
        if self.cfg.TYPE == "div" and self.wide_divisor is not None and is_wide_int(image.dtype):
            wide_range(image, clip, where)
        if self.cfg.TYPE == "scale_range":
            lo, hi = (float(v) for v in value_range(image))
            if "clip" in out:  # clipping is monotone: the clipped extremes are the clipped raw extremes
                lo, hi = (float(np.clip(v, *out["clip"])) for v in (lo, hi))
            out["range"] = (lo, hi)
        elif self.cfg.TYPE == "zero_mean_unit_variance":
            n, total, squares = self._moments(image, out.get("clip"))
            mean = total / n
            out["mean_std"] = (mean, max(squares / n - mean * mean, 0.0) ** 0.5)
        return out

    def apply(self, image: np.ndarray, stats: dict) -> np.ndarray:
        """Normalise ``image`` (or a window of it) with ``stats`` measured on the whole image."""
        x = image.astype(np.float32, copy=True)
        if "clip" in stats:
            np.clip(x, *stats["clip"], out=x)
        kind = self.cfg.TYPE
        if kind == "div":
            # Divide by the range of the stored type, never by the data's max: a dim uint16 image
            # must not be stretched differently from a bright one.
            if np.issubdtype(stats["dtype"], np.integer):
                x /= self._divisor(stats["dtype"])
        elif kind == "scale_range":
            lo, hi = stats["range"]
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        elif kind == "zero_mean_unit_variance":
            mean, std = stats["mean_std"]
            x = (x - mean) / (std if std > 1e-8 else 1.0)
        else:  # custom
            x = (x - float(self.mean)) / float(self.std)
        return x

    def clip_range(self, image: np.ndarray) -> tuple[float, float] | None:
        """PERC_CLIP's percentiles of ``image`` (of a bounded sample of it, see ``percentile_sample``), or None."""
        if not self.cfg.PERC_CLIP:
            return None
        return tuple(float(v) for v in np.percentile(percentile_sample(image), [self.cfg.PERC_LOWER, self.cfg.PERC_UPPER]))

    def _divisor(self, dtype: np.dtype) -> float:
        if is_wide_int(dtype) and self.wide_divisor is not None:
            return float(self.wide_divisor)
        return float(np.iinfo(dtype).max)

    @staticmethod
    def _moments(image: np.ndarray, clip: tuple[float, float] | None) -> tuple[float, float, float]:
        """Pixel count, sum and sum of squares, in float64, one slab of the first axis at a time."""
        n = total = squares = 0.0
        rows = slabs(image)
        for i in rows:
            slab = np.asarray(image[i : i + rows.step], dtype=np.float64)
            if clip is not None:
                np.clip(slab, *clip, out=slab)
            n += slab.size
            total += float(slab.sum())
            squares += float(np.square(slab).sum())
        return n, total, squares

    def fit(self, raw_images: list[np.ndarray]) -> None:
        """Measure on the (clipped) training images what the checkpoint must store: for TYPE 'custom'
        with -1 values the mean and std, for 'div' the divisor of integer images wider than 16 bits."""
        if self.cfg.TYPE == "div":
            self.wide_divisor = self._fit_wide_divisor(raw_images)
        if self.cfg.TYPE != "custom":
            return
        self.mean = self.cfg.CUSTOM_MEAN if self.cfg.CUSTOM_MEAN != -1 else None
        self.std = self.cfg.CUSTOM_STD if self.cfg.CUSTOM_STD != -1 else None
        if self.mean is None or self.std is None:
            # Measure the images as they are normalised: clipped first when PERC_CLIP is on.
            moments = [self._moments(im, self.clip_range(im)) for im in raw_images]
            n, total, squares = (sum(m[i] for m in moments) for i in range(3))
            mean = total / n
            self.mean = mean if self.mean is None else self.mean
            self.std = (max(squares / n - mean * mean, 0.0) ** 0.5 or 1.0) if self.std is None else self.std

    def _fit_wide_divisor(self, raw_images: list[np.ndarray]) -> float:
        """255 when the wide integer training images all fit 0..255 (8-bit data), else 65535 (16-bit data).
        Without wide training images, wide images met at prediction are taken as the training data's
        kind: 255 when every integer training image is 8-bit, else 65535."""
        wide = [im for im in raw_images if is_wide_int(im.dtype)]
        if not wide:
            narrow = [im.dtype.itemsize for im in raw_images if np.issubdtype(im.dtype, np.integer)]
            return 255.0 if narrow and max(narrow) == 1 else float(WIDE_INT_LIMIT)
        ranges = [wide_range(im, self.clip_range(im), "training image") for im in wide]
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        divisor, bits = (255, 8) if hi <= 255 else (WIDE_INT_LIMIT, 16)
        dtypes = ", ".join(sorted({str(im.dtype) for im in wide}))
        print(
            f"DATA.NORMALIZATION.TYPE div: the {dtypes} training images hold values {lo}..{hi}, "
            f"{bits}-bit data: dividing such images by {divisor} (as uint{bits})"
        )
        return float(divisor)

    def state(self) -> dict:
        """What the checkpoint stores besides the config."""
        out = {"mean": self.mean, "std": self.std}
        if self.wide_divisor is not None:
            out["wide_divisor"] = self.wide_divisor
        return out


def wide_range(image: np.ndarray, clip: tuple[float, float] | None, where: str | Path) -> tuple[int, int]:
    """The value range (within ``clip``, PERC_CLIP's percentiles) of an integer image wider than 16 bits,
    which TYPE 'div' divides as 8- or 16-bit data; values outside 0..65535 are an error naming ``where``."""
    lo, hi = tuple(int(v) for v in value_range(image)) if clip is None else (int(np.floor(clip[0])), int(np.ceil(clip[1])))
    if lo < 0 or hi > WIDE_INT_LIMIT:
        raise SegflowError(
            f"{where}: {image.dtype} image with values {lo}..{hi}; DATA.NORMALIZATION.TYPE div divides integer "
            f"images wider than 16 bits as 8- or 16-bit data (0..{WIDE_INT_LIMIT}); set DATA.NORMALIZATION.TYPE to "
            "scale_range or zero_mean_unit_variance, or convert the images"
        )
    return lo, hi
