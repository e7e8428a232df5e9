"""Training and validation patches: fixed grids, random crops, probability-map crops, padding.

Each patch is cut from the raw image and mask, then normalised and encoded on its own (``PatchDataset.crop``):
a data source only hands out arrays, and no normalised or encoded copy of the whole data is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from monai.transforms import Randomizable

from segflow.data.normalize import Normalizer
from segflow.data.sampling import BLOCK, BlockCounts
from segflow.data.sources import Sample
from segflow.errors import SegflowError
from segflow.io.formats import write_tiff
from segflow.io.lazy import slabs


def axis_starts(size: int, patch: int, overlap: float = 0.0) -> list[int]:
    """Start positions of patches of length ``patch`` covering ``size`` with at least ``overlap`` (a fraction).

    The last patch is moved back to end at the border, so every position is covered and no patch
    needs padding (when ``size >= patch``; a smaller axis gets one patch at 0).
    """
    ov = float(overlap)
    if not 0 <= ov < 1:
        raise SegflowError(f"overlap {ov} must be in [0, 1)")
    step = max(1, int(patch * (1 - ov)))
    starts = list(range(0, max(size - patch, 0) + 1, step))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def grid_starts(shape: tuple[int, ...], patch: tuple[int, ...], overlap: tuple[float, ...] = ()) -> list[tuple[int, ...]]:
    """Start corners of patches covering ``shape`` with at least ``overlap`` (fraction per axis).

    The last patch on each axis is moved back to end at the border, so every pixel is covered and
    no patch needs padding.
    """
    axes = [axis_starts(size, p, overlap[i] if i < len(overlap) else 0.0) for i, (size, p) in enumerate(zip(shape, patch))]
    return [tuple(int(v) for v in c) for c in np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))]


def fit_to_patch(sample: Sample, patch: tuple[int, ...], reflect: bool) -> Sample:
    """Pad an image smaller than ``patch`` by reflection, or explain how to allow it."""
    spatial = sample.image.shape[:-1]
    if all(s >= p for s, p in zip(spatial, patch)):
        return sample
    if not reflect:
        axes = "zyx"[-len(spatial):]
        small = ", ".join(f"{a}: {s} < {p}" for a, s, p in zip(axes, spatial, patch) if s < p)
        raise SegflowError(
            f"{sample.path}: image of shape {spatial} is smaller than DATA.PATCH_SIZE {patch} ({small}); "
            "use a smaller DATA.PATCH_SIZE or set DATA.REFLECT_TO_COMPLETE_SHAPE: true to pad it"
        )
    image = pad_to(sample.image, patch, repeat_reflection=True)
    mask = None if sample.mask is None else pad_to(sample.mask, patch, repeat_reflection=True)
    # The statistics stay the unpadded image's: padding by reflection must not shift its normalisation.
    return replace(sample, image=image, mask=mask, target=None)


def pad_to(array: np.ndarray, shape: tuple[int, ...], repeat_reflection: bool = False) -> np.ndarray:
    """Pad the leading (spatial) axes of ``array`` at their end up to at least ``shape``; trailing axes stay.

    ``array`` is ``(*spatial, ...)`` (e.g. channels last, or a mask without channels). Every axis is
    mirrored (numpy's ``reflect``) when the image allows it, else every axis repeats its edge: training
    (``repeat_reflection``) mirrors any axis longer than 1 pixel, however often; inference mirrors only
    when each axis is longer than its padding, so the padding is one mirror image of real pixels.
    """
    spatial = array.shape[: len(shape)]
    pad = [(0, max(0, t - s)) for s, t in zip(spatial, shape)]
    reflect = min(spatial) > 1 if repeat_reflection else all(s > after for s, (_, after) in zip(spatial, pad))
    return np.pad(array, pad + [(0, 0)] * (array.ndim - len(shape)), mode="reflect" if reflect else "edge")


def block_probability(counts: BlockCounts, w_fg: float, w_bg: float) -> np.ndarray:
    """``probability_map`` summed over each block of ``BLOCK`` pixels per axis: the chance that a patch centre falls
    in the block, float32 ``(*blocks)``, from the foreground (kind 0) and background (kind 1) pixel counts per block."""
    fg, bg = counts.counts.astype(np.float64)
    n_fg, n_bg = fg.sum(), bg.sum()
    w_fg, w_bg = (w_fg if n_fg else 0.0), (w_bg if n_bg else 0.0)
    # Only a zero-weighted kind present: every pixel alike, as probability_map.
    prob = fg + bg if w_fg + w_bg <= 0 else w_fg * fg / max(n_fg, 1) + w_bg * bg / max(n_bg, 1)
    return (prob / prob.sum()).astype(np.float32)


def probability_map(mask: np.ndarray, w_fg: float, w_bg: float) -> np.ndarray:
    """BiaPy's map: foreground pixels share ``w_fg``, background pixels share ``w_bg`` (sums to 1)."""
    fg = mask > 0
    n_fg, n_bg = int(fg.sum()), int(fg.size - fg.sum())
    w_fg, w_bg = (w_fg if n_fg else 0.0), (w_bg if n_bg else 0.0)
    if w_fg + w_bg <= 0:  # only the zero-weighted kind of pixel is present: every pixel alike
        return np.full(mask.shape, 1.0 / mask.size, dtype=np.float32)
    prob = np.where(fg, w_fg / max(n_fg, 1), w_bg / max(n_bg, 1)).astype(np.float64)
    return (prob / prob.sum()).astype(np.float32)


def to_tensors(image: np.ndarray, target: np.ndarray | None) -> dict[str, np.ndarray]:
    """Channels-last image and target to the channels-first arrays the network and MONAI use.

    Integer targets (class ids) become int64, float targets (bits, regression; NaN = ignored) float32.
    """
    out = {"image": np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32)}
    if target is not None:
        dtype = np.float32 if np.issubdtype(target.dtype, np.floating) else np.int64
        out["label"] = np.ascontiguousarray(np.moveaxis(target, -1, 0), dtype=dtype)
    return out


class TargetEncoding(Protocol):
    """What patches need of an encoding (``segflow.encodings.Encoding``)."""

    halo: int | None  # mask pixels around a patch its target depends on; None: the whole mask

    def encode(self, mask: np.ndarray) -> np.ndarray:
        """Training target ``(..., T)`` of a raw mask ``(...)``."""


class PatchDataset(torch.utils.data.Dataset, Randomizable):
    """Patches of training or validation samples.

    ``mode='grid'`` yields a fixed grid of patches (BiaPy's default, and always for validation);
    ``mode='random'`` yields one random patch per image (times ``replicate``) each epoch, with its
    centre drawn from the probability map when ``prob_weights`` is given, or, with
    ``class_balanced``, on a pixel of a class drawn uniformly among the mask values present (NIST's
    balancing: rare classes are seen as often as common ones).

    Each patch is normalised with ``normalizer`` and its sample's ``stats``, and its mask encoded with
    ``encoding`` (from the patch and ``encoding.halo`` pixels around it); without them the raw image
    patch and the mask as one channel are handed out.
    """

    def __init__(
        self,
        samples: list[Sample],
        patch: tuple[int, ...],
        mode: str = "grid",
        overlap: tuple[float, ...] = (),
        transform: Callable[[dict], dict] | None = None,
        replicate: int = 1,
        prob_weights: tuple[float, float] | None = None,
        class_balanced: bool = False,
        ignore_id: int = -1,
        normalizer: Normalizer | None = None,
        encoding: TargetEncoding | None = None,
    ) -> None:
        self.normalizer, self.encoding = normalizer, encoding
        _check_lazy_masks(samples, encoding)
        if encoding is not None and encoding.halo is None:  # targets that need the whole mask: encoded once
            samples = [s if s.mask is None or s.target is not None else replace(s, target=encoding.encode(s.mask)) for s in samples]
        self.samples = samples
        self.patch = patch
        self.mode = mode
        self.transform = transform
        self.prob_weights = prob_weights
        if mode == "grid":
            self.index = [(i, start) for i, s in enumerate(samples) for start in grid_starts(s.image.shape[:-1], patch, overlap)]
        else:
            self.index = [(i, None) for _ in range(max(1, replicate)) for i in range(len(samples))]
        # Pixel counts per block of each mask: foreground (kind 0) and background (1), or each class.
        self._maps = [BlockCounts(s.mask, foreground_or_background, 2) for s in samples] if prob_weights is not None else []
        self._classes = [BlockCounts(s.mask, partial(class_ids, ignore_id=ignore_id), None) for s in samples] if class_balanced else []
        self._by_class: dict[int, list[int]] = {}  # class -> the samples holding it
        for i, counts in enumerate(self._classes):
            for value in counts.kind_ids:
                self._by_class.setdefault(value, []).append(i)
        self.set_random_state(0)

    def __len__(self) -> int:
        return len(self.index)

    def randomize(self, data: object = None) -> None:  # Randomizable's interface; draws happen in random_start
        """Unused: draws happen per item in ``random_start``."""

    def _centred(self, i: int, centre: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shape = self.samples[i].image.shape[:-1]
        start = tuple(int(min(max(c - p // 2, 0), s - p)) for c, p, s in zip(centre, self.patch, shape))
        return start, centre

    def random_start(self, i: int) -> tuple[int, tuple[int, ...], tuple[int, ...] | None]:
        """Draw a patch for sample ``i``: return the sample it comes from (another one when classes are
        balanced), its start, and the centre pixel when a map or a class chose it."""
        if self._by_class:
            classes = sorted(self._by_class)
            value = classes[self.R.randint(0, len(classes))]
            holders = self._by_class[value]
            i = holders[self.R.randint(0, len(holders))]
            return (i, *self._centred(i, self._classes[i].draw(value, self.R)))
        shape = self.samples[i].image.shape[:-1]
        if self.prob_weights is None:
            return i, tuple(int(self.R.randint(0, s - p + 1)) for s, p in zip(shape, self.patch)), None
        w_fg, w_bg = self.prob_weights
        counts = self._maps[i]
        n_fg, n_bg = counts.total(0), counts.total(1)
        w_fg, w_bg = (w_fg if n_fg else 0.0), (w_bg if n_bg else 0.0)
        if w_fg + w_bg <= 0:  # only the zero-weighted kind of pixel is present: draw from it
            w_fg, w_bg = float(n_fg > 0), float(n_fg == 0)
        kind = 0 if self.R.random_sample() * (w_fg + w_bg) < w_fg else 1
        return (i, *self._centred(i, counts.draw(kind, self.R)))

    def crop(self, i: int, start: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """The patch of sample ``i`` starting at ``start``, normalised ``(*patch, C)``, and its target ``(*patch, T)``."""
        region = tuple(slice(a, a + p) for a, p in zip(start, self.patch))
        return self.image(i, region), self.target(i, region)

    def image(self, i: int, region: tuple[slice, ...]) -> np.ndarray:
        """``region`` of sample ``i``'s image as the network sees it (normalised with the whole image's stats)."""
        s = self.samples[i]
        return s.image[region] if self.normalizer is None else self.normalizer.apply(s.image[region], s.stats)

    def target(self, i: int, region: tuple[slice, ...]) -> np.ndarray | None:
        """The target ``(*region, T)`` of sample ``i``: its mask in ``region`` and ``halo`` pixels around, encoded,
        the halo cut off again (scipy's filters see the image border alike either way)."""
        s = self.samples[i]
        if s.target is not None:
            return s.target[region]
        if s.mask is None:
            return None
        if self.encoding is None:
            return s.mask[region][..., None]
        h = self.encoding.halo
        outer = tuple(slice(max(r.start - h, 0), min(r.stop + h, n)) for r, n in zip(region, s.mask.shape))
        inner = tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, outer))
        return self.encoding.encode(s.mask[outer])[inner]

    def targets(self) -> Iterator[np.ndarray]:
        """Every sample's target ``(rows, *spatial[1:], T)``, a slab of the first axis at a time (class pixel counts:
        a lazy mask is never read whole). A lazy mask is read in whole chunks (each decoded once; with the
        encoding's halo rows around) and encoded in thinner slabs of that, so a target slab stays ~2**24 values."""
        for i, s in enumerate(self.samples):
            if s.mask is None:
                continue
            n = s.mask.shape[0]
            if isinstance(s.mask, np.ndarray) or s.target is not None or self.encoding is None:
                rows = slabs(s.mask)
                for r in rows:
                    yield self.target(i, (slice(r, min(r + rows.step, n)), *(slice(0, m) for m in s.mask.shape[1:])))
                continue
            h, block = self.encoding.halo, slabs(s.mask, aligned=True)
            for r in block:
                stop = min(r + block.step, n)
                lo, hi = max(r - h, 0), min(stop + h, n)
                raw = np.asarray(s.mask[lo:hi])
                piece = slabs(raw)
                for p in range(r, stop, piece.step):
                    q = min(p + piece.step, stop)
                    a, b = max(p - h, lo), min(q + h, hi)
                    yield self.encoding.encode(raw[a - lo : b - lo])[p - a : q - a]

    def __getitem__(self, k: int) -> dict[str, np.ndarray]:
        i, start = self.index[k]
        if start is None:
            i, start, _ = self.random_start(i)
        item = to_tensors(*self.crop(i, start))
        return self.transform(item) if self.transform is not None else item


def _check_lazy_masks(samples: list[Sample], encoding: TargetEncoding | None) -> None:
    """Masks read lazily (``IN_MEMORY: false``) cannot give an encoding that needs every pixel at once."""
    lazy = next((s for s in samples if s.mask is not None and not isinstance(s.mask, np.ndarray)), None)
    if lazy is not None and encoding is not None and encoding.halo is None:
        raise SegflowError(
            f"{lazy.mask_path}: PROBLEM.SEMANTIC_SEG.ENCODING {getattr(encoding, 'name', '')} needs every mask pixel at once, "
            "which segflow does not do for masks read one patch at a time; set DATA.TRAIN.IN_MEMORY (and DATA.VAL.IN_MEMORY): true"
        )


def foreground_or_background(values: np.ndarray) -> np.ndarray:
    """Kind 0 for foreground (mask > 0), 1 for background: BiaPy's probability map."""
    return (values <= 0).astype(np.int8)  # int8: a slab of a large mask stays a byte a pixel


def class_ids(values: np.ndarray, ignore_id: int) -> np.ndarray:
    """The class ids of mask values, -1 (no kind) for the ignored id: NIST's class-balanced sampling."""
    ids = values.astype(np.int64)
    return np.where(ids == ignore_id, -1, ids) if ignore_id >= 0 else ids


def _to_rgb(plane: np.ndarray) -> np.ndarray:
    lo, hi = float(plane.min()), float(plane.max())
    grey = ((plane - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(plane)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def write_prob_maps(dataset: PatchDataset, prob_dir: Path, aug_dir: Path, n_marks: int = 3) -> None:
    """Save each training image's probability map, and ``mark_x``/``mark_y`` check images.

    The check images show a drawn patch as a blue square with its centre in red, on the image and
    on the mask (the centre z-slice in 3D), so a person can see that centres fall on foreground.
    """
    import imageio.v3 as iio

    from segflow.io.atomic import atomic_write

    w_fg, w_bg = dataset.prob_weights
    for s, counts in zip(dataset.samples, dataset._maps):
        if isinstance(s.mask, np.ndarray):
            write_tiff(prob_dir / f"prob_map_{s.name}.tif", probability_map(s.mask, w_fg, w_bg), ndim=s.mask.ndim)
        else:  # a per-pixel map would be the size of the mask, which is read patch by patch: one value per block
            write_tiff(prob_dir / f"prob_map_{s.name}_block{BLOCK}.tif", block_probability(counts, w_fg, w_bg), ndim=s.mask.ndim)
    # Drawing the check patches must not shift the training draws: restore the generator after.
    saved = dataset.R.get_state()
    draws = [dataset.random_start(k)[1:] for k in range(min(n_marks, len(dataset.samples)))]
    dataset.R.set_state(saved)
    for k, (start, centre) in enumerate(draws):
        s = dataset.samples[k]
        z = centre[0] if s.mask.ndim == 3 else None
        at = (z,) if z is not None else ()
        planes = {"x": dataset.image(k, at)[..., 0], "y": s.mask[at].astype(np.float32)}
        for key, plane in planes.items():
            rgb = _to_rgb(plane)
            (y0, x0), (py, px) = start[-2:], dataset.patch[-2:]
            y1, x1 = y0 + py - 1, x0 + px - 1
            blue = np.array([0, 0, 255], np.uint8)
            rgb[y0, x0 : x1 + 1] = rgb[y1, x0 : x1 + 1] = blue
            rgb[y0 : y1 + 1, x0] = rgb[y0 : y1 + 1, x1] = blue
            cy, cx = centre[-2:]
            rgb[max(cy - 2, 0) : cy + 3, max(cx - 2, 0) : cx + 3] = np.array([255, 0, 0], np.uint8)
            atomic_write(aug_dir / f"mark_{key}_{s.name}.png", lambda tmp, im=rgb: iio.imwrite(tmp, im))
