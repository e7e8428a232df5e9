"""Image/mask pairs from folders: pairing by name, reading, and the checks every pair passes (channels,
shapes, finite values, mask values against the encoding). Images are returned in their stored dtype."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import numpy as np

from segflow.config.schema import Config
from segflow.data.normalize import Normalizer, is_wide_int, wide_range
from segflow.errors import SegflowError
from segflow.io.images import list_images, read_image, read_mask


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


def check_channels(cfg: Config, found: int, where: str, other_fix: str = "") -> None:
    """An image's channel count must be the last value of DATA.PATCH_SIZE; ``other_fix`` is another way out."""
    if found != cfg.in_channels:
        raise SegflowError(
            f"{where}: image has {found} channel(s) but DATA.PATCH_SIZE {tuple(cfg.DATA.PATCH_SIZE)} ends in {cfg.in_channels}; "
            f"set the last value of DATA.PATCH_SIZE to {found}{other_fix}"
        )


def check_finite(image: np.ndarray, path: Path) -> None:
    """A float image must hold no NaN or infinite value."""
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        raise SegflowError(f"{path}: image holds NaN or infinite values; fix or remove it")


def check_same_size(what: str, image: str, image_shape: tuple[int, ...], mask: str, mask_shape: tuple[int, ...]) -> None:
    """An image ``(*spatial)`` and its mask must have the same spatial shape; ``image``/``mask`` name them."""
    if tuple(mask_shape) != tuple(image_shape):
        raise SegflowError(
            f"{what}: image {image} has shape {tuple(image_shape)} but its mask {mask} has {tuple(mask_shape)}; "
            "an image and its mask must have the same size"
        )


def read_pair(
    cfg: Config, img_path: Path, mask_path: Path | None, what: str, rules: MaskRules | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one image (raw dtype, channels last) and its mask, checking channels and shapes, and the mask's
    values against ``rules`` (the encoding; None: unchecked, DATA.*.CHECK_DATA false)."""
    image = read_image(img_path, cfg.ndim, cfg.in_channels)
    check_channels(cfg, image.shape[-1], str(img_path))
    check_finite(image, img_path)
    norm = cfg.DATA.NORMALIZATION
    if norm.TYPE == "div" and is_wide_int(image.dtype):  # checked here too, so `check` and every read name the file
        wide_range(image, Normalizer(norm).clip_range(image), img_path)
    if mask_path is None:
        return image, None
    mask = read_mask(mask_path, cfg.ndim, integer=cfg.PROBLEM.SEMANTIC_SEG.ENCODING != "linear")
    check_same_size(what, img_path.name, image.shape[:-1], mask_path.name, mask.shape)
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
