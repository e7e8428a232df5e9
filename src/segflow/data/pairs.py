"""Image/mask pairs from folders: pairing, checks, the validation split and the training data.

Images are read in their own dtype and kept so (a quarter of float32's memory for 8-bit data): they are
normalised, and masks encoded, one patch at a time (``data.patches``), with the statistics each
``Sample`` carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from segflow.config.schema import Config
from segflow.data.normalize import Normalizer, is_wide_int, wide_range
from segflow.errors import SegflowError
from segflow.io.images import list_images, read_image, read_mask


@dataclass
class Sample:
    """One image ``(*spatial, C)`` in its raw dtype with its mask ``(*spatial)`` (or None) and where it came from."""

    name: str
    image: np.ndarray
    mask: np.ndarray | None
    path: Path
    mask_path: Path | None = None
    # Normalizer.stats of the image, measured on the whole image once: each patch is normalised with them.
    stats: dict | None = None
    # The whole mask encoded, kept only for encodings whose target depends on the whole image (region, distance).
    target: np.ndarray | None = None


class MaskRules(Protocol):
    """What reading checks a mask against: the encoding (``segflow.encodings.Encoding.check_mask``)."""

    def check_mask(self, mask: np.ndarray, path: Path) -> None:
        """Raise SegflowError naming ``path`` when a value of ``mask`` does not fit the encoding."""


def _last_number(stem: str) -> int | None:
    numbers = re.findall(r"\d+", stem)
    return int(numbers[-1]) if numbers else None


def pair_files(images: list[Path], masks: list[Path], what: str) -> list[tuple[Path, Path]]:
    """Pair image and mask files: by name (stem) when both folders hold the same names, else by sorted
    order, saying so once per folder pair; raise when counts differ or numbers in the names disagree."""
    if len(images) != len(masks):
        img_stems = {p.stem for p in images}
        mask_stems = {p.stem for p in masks}
        extra = sorted(img_stems - mask_stems) if len(images) > len(masks) else sorted(mask_stems - img_stems)
        detail = f" (without a partner, by name: {', '.join(extra[:3])})" if extra and len(extra) <= abs(len(images) - len(masks)) else ""
        raise SegflowError(
            f"{what}: {len(images)} images in {images[0].parent} but {len(masks)} masks in {masks[0].parent}{detail}; "
            "every image needs one mask, paired by sorted file name"
        )
    mask_by_stem = {p.stem: p for p in masks}
    img_stems = [p.stem for p in images]
    if len(set(img_stems)) == len(images) and len(mask_by_stem) == len(masks) and set(img_stems) == set(mask_by_stem):
        return [(img, mask_by_stem[img.stem]) for img in images]
    for img, msk in zip(images, masks):
        if img.stem == msk.stem:
            continue
        a, b = _last_number(img.stem), _last_number(msk.stem)
        if a is not None and b is not None and a != b:
            raise SegflowError(
                f"{what}: image {img.name} is paired with mask {msk.name} by sorted order, but their numbers differ; "
                "rename the files so images and masks sort in the same order"
            )
    _warn_sorted_pairing(images, masks, what)
    return list(zip(images, masks))


# Folder pairs already warned about: `run` lists the same folders when it checks and when it reads them.
_WARNED_PAIRINGS: set[tuple[Path, Path]] = set()


def _warn_sorted_pairing(images: list[Path], masks: list[Path], what: str) -> None:
    """One ``warning:`` line on stdout: the folders' names differ, so files are paired by sorted order."""
    folders = (images[0].parent, masks[0].parent)
    differ = [(img.name, msk.name) for img, msk in zip(images, masks) if img.stem != msk.stem]
    if not differ or folders in _WARNED_PAIRINGS:
        return
    _WARNED_PAIRINGS.add(folders)
    img_stems, mask_stems = {p.stem for p in images}, {p.stem for p in masks}
    lonely = {
        "images without a mask of the same name": [p.name for p in images if p.stem not in mask_stems][:3],
        "masks without an image of the same name": [p.name for p in masks if p.stem not in img_stems][:3],
    }
    unmatched = "; ".join(f"{label}: {', '.join(names)}" for label, names in lonely.items() if names)
    shown = ", ".join(f"{a} with {b}" for a, b in differ[:3]) + (", ..." if len(differ) > 3 else "")
    print(
        f"warning: {what}: the file names in {folders[0]} and {folders[1]} differ "
        f"({unmatched or 'names repeat with other suffixes'}); images and masks are paired by sorted order: {shown}"
    )


def list_pairs(image_dir: str, mask_dir: str | None, what: str) -> list[tuple[Path, Path | None]]:
    """Image files of a folder, each with its mask file (or None when there are no masks)."""
    images = list_images(image_dir, f"{what} images ({_key(what)}.PATH)")
    if mask_dir is None:
        return [(p, None) for p in images]
    return pair_files(images, list_images(mask_dir, f"{what} masks ({_key(what)}.GT_PATH)"), what)


def read_pair(
    cfg: Config, img_path: Path, mask_path: Path | None, what: str, rules: MaskRules | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one image (raw dtype, channels last) and its mask, checking channels and shapes, and the mask's
    values against ``rules`` (the encoding; None: unchecked, DATA.*.CHECK_DATA false)."""
    channels = cfg.in_channels
    image = read_image(img_path, cfg.ndim, channels)
    if image.shape[-1] != channels:
        raise SegflowError(
            f"{img_path}: image has {image.shape[-1]} channel(s) but DATA.PATCH_SIZE {tuple(cfg.DATA.PATCH_SIZE)} ends in {channels}; "
            f"set the last value of DATA.PATCH_SIZE to {image.shape[-1]}"
        )
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        raise SegflowError(f"{img_path}: image holds NaN or infinite values; fix or remove it")
    norm = cfg.DATA.NORMALIZATION
    if norm.TYPE == "div" and is_wide_int(image.dtype):  # checked here too, so `check` and every read name the file
        wide_range(image, Normalizer(norm).clip_range(image), img_path)
    if mask_path is None:
        return image, None
    mask = read_mask(mask_path, cfg.ndim, integer=cfg.PROBLEM.SEMANTIC_SEG.ENCODING != "linear")
    if mask.shape != image.shape[:-1]:
        raise SegflowError(
            f"{what}: image {img_path.name} has shape {image.shape[:-1]} but its mask {mask_path.name} has {mask.shape}; "
            "an image and its mask must have the same size"
        )
    if rules is not None:
        rules.check_mask(mask, mask_path)
    return image, mask


def read_pairs(
    cfg: Config, image_dir: str, mask_dir: str | None, what: str, rules: MaskRules | None
) -> list[tuple[Path, np.ndarray, Path | None, np.ndarray | None]]:
    """Read every image (raw dtype) and its mask from two folders, checking that they pair."""
    out = []
    for img_path, mask_path in list_pairs(image_dir, mask_dir, what):
        image, mask = read_pair(cfg, img_path, mask_path, what, rules)
        out.append((img_path, image, mask_path, mask))
    return out


def _key(what: str) -> str:
    return {"train": "DATA.TRAIN", "validation": "DATA.VAL", "test": "DATA.TEST"}[what]


@dataclass
class TrainData:
    """Training and validation samples (raw images with their statistics) plus the fitted normaliser."""

    train: list[Sample]
    val: list[Sample]
    normalizer: Normalizer

    def normalized(self, sample: Sample) -> np.ndarray:
        """The whole image of ``sample`` as the network sees it, float32 ``(*spatial, C)``."""
        return self.normalizer.apply(sample.image, sample.stats)


def n_val_images(n_images: int, fraction: float) -> int:
    """Validation images held out of ``n_images`` (at least one, never all); 0 for a single image."""
    if fraction <= 0 or n_images < 2:
        return 0
    return min(n_images - 1, max(1, round(n_images * fraction)))


def split_train_val(samples: list[Sample], fraction: float, shuffle: bool, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the images; with one image, hold out the end of its first axis."""
    if fraction <= 0:
        return samples, []
    if len(samples) == 1:
        s = samples[0]
        n = s.image.shape[0]
        cut = n - max(1, round(n * fraction))
        if cut < 1:
            raise SegflowError(f"{s.path}: too small along its first axis ({n}) to hold out DATA.VAL.SPLIT_TRAIN={fraction}")
        head = Sample(s.name, s.image[:cut], None if s.mask is None else s.mask[:cut], s.path, s.mask_path)
        tail = Sample(s.name + "_val", s.image[cut:], None if s.mask is None else s.mask[cut:], s.path, s.mask_path)
        return [head], [tail]
    order = np.arange(len(samples))
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    n_val = n_val_images(len(samples), fraction)
    # Hold out the end of the (shuffled) list, as BiaPy's train_test_split does and as the single-image
    # case holds out the end of the image.
    val_idx = set(order[len(order) - n_val :].tolist())
    return [s for i, s in enumerate(samples) if i not in val_idx], [s for i, s in enumerate(samples) if i in val_idx]


def load_train_data(cfg: Config, rules: MaskRules) -> TrainData:
    """Read and check the training images (their masks against ``rules``, the encoding), split off the
    validation set, and fit the normaliser on the training part only (no validation pixels leak into it).
    Images stay raw: each sample carries its normalisation statistics, applied patch by patch."""
    d = cfg.DATA
    rules_or_none = rules if d.TRAIN.CHECK_DATA else None
    raw = [Sample(p.stem, img, msk, p, mp) for p, img, mp, msk in read_pairs(cfg, d.TRAIN.PATH, d.TRAIN.GT_PATH, "train", rules_or_none)]
    if d.VAL.FROM_TRAIN:
        train, val = split_train_val(raw, d.VAL.SPLIT_TRAIN, d.VAL.RANDOM, cfg.SYSTEM.SEED)
    else:
        train = raw
        val = [Sample(p.stem, img, msk, p, mp) for p, img, mp, msk in read_pairs(cfg, d.VAL.PATH, d.VAL.GT_PATH, "validation", rules_or_none)]
    normalizer = Normalizer(d.NORMALIZATION)
    normalizer.fit([s.image for s in train])
    train, val = ([replace(s, stats=normalizer.stats(s.image, str(s.path))) for s in part] for part in (train, val))
    return TrainData(train=train, val=val, normalizer=normalizer)
