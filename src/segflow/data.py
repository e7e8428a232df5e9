"""Image/mask pairs from folders: pairing, checks, normalisation and the validation split."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segflow.errors import SegflowError
from segflow.images import list_images, read_image, read_mask
from segflow.schema import Config, NormalizationConfig


@dataclass
class Sample:
    """One image (channels last, normalised float32) with its mask (or None) and where it came from."""

    name: str
    image: np.ndarray
    mask: np.ndarray | None
    path: Path
    mask_path: Path | None = None
    # The mask encoded as training targets (channels last), set when patches are made.
    target: np.ndarray | None = None


@dataclass
class Normalizer:
    """Maps raw pixel values to network input; everything it needs is stored in the checkpoint."""

    cfg: NormalizationConfig
    mean: float | None = None
    std: float | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalise one channels-last image to float32."""
        return self.apply(image, self.stats(image))

    def stats(self, image: np.ndarray) -> dict:
        """The per-image values the normalisation needs, measured without a whole-image float copy,
        so that windows of a large (or memory-mapped) image can be normalised one at a time."""
        out: dict = {"dtype": image.dtype}
        if self.cfg.PERC_CLIP:
            out["clip"] = tuple(float(v) for v in np.percentile(image, [self.cfg.PERC_LOWER, self.cfg.PERC_UPPER]))
        if self.cfg.TYPE == "scale_range":
            lo, hi = float(image.min()), float(image.max())
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
                x /= float(np.iinfo(stats["dtype"]).max)
        elif kind == "scale_range":
            lo, hi = stats["range"]
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        elif kind == "zero_mean_unit_variance":
            mean, std = stats["mean_std"]
            x = (x - mean) / (std if std > 1e-8 else 1.0)
        else:  # custom
            x = (x - float(self.mean)) / float(self.std)
        return x

    @staticmethod
    def _moments(image: np.ndarray, clip: tuple[float, float] | None) -> tuple[float, float, float]:
        """Pixel count, sum and sum of squares, in float64, one slab of the first axis at a time."""
        n = total = squares = 0.0
        step = max(1, int(2**24 // max(1, image[0].size)))
        for i in range(0, image.shape[0], step):
            slab = np.asarray(image[i : i + step], dtype=np.float64)
            if clip is not None:
                np.clip(slab, *clip, out=slab)
            n += slab.size
            total += float(slab.sum())
            squares += float(np.square(slab).sum())
        return n, total, squares

    def fit(self, raw_images: list[np.ndarray]) -> None:
        """For TYPE 'custom' with -1 values: measure mean and std on the (clipped) training images."""
        if self.cfg.TYPE != "custom":
            return
        self.mean = self.cfg.CUSTOM_MEAN if self.cfg.CUSTOM_MEAN != -1 else None
        self.std = self.cfg.CUSTOM_STD if self.cfg.CUSTOM_STD != -1 else None
        if self.mean is None or self.std is None:
            # Measure the images as they are normalised: clipped first when PERC_CLIP is on.
            moments = [self._moments(im, self.stats(im).get("clip")) for im in raw_images]
            n, total, squares = (sum(m[i] for m in moments) for i in range(3))
            mean = total / n
            self.mean = mean if self.mean is None else self.mean
            self.std = (max(squares / n - mean * mean, 0.0) ** 0.5 or 1.0) if self.std is None else self.std

    def state(self) -> dict:
        """What the checkpoint stores besides the config."""
        return {"mean": self.mean, "std": self.std}


def _last_number(stem: str) -> int | None:
    numbers = re.findall(r"\d+", stem)
    return int(numbers[-1]) if numbers else None


def pair_files(images: list[Path], masks: list[Path], what: str) -> list[tuple[Path, Path]]:
    """Pair sorted image and mask lists; raise when counts differ or names clearly disagree."""
    if len(images) != len(masks):
        img_stems = {p.stem for p in images}
        mask_stems = {p.stem for p in masks}
        extra = sorted(img_stems - mask_stems) if len(images) > len(masks) else sorted(mask_stems - img_stems)
        detail = f" (without a partner, by name: {', '.join(extra[:3])})" if extra and len(extra) <= abs(len(images) - len(masks)) else ""
        raise SegflowError(
            f"{what}: {len(images)} images in {images[0].parent} but {len(masks)} masks in {masks[0].parent}{detail}; "
            "every image needs one mask, paired by sorted file name"
        )
    for img, msk in zip(images, masks):
        if img.stem == msk.stem:
            continue
        a, b = _last_number(img.stem), _last_number(msk.stem)
        if a is not None and b is not None and a != b:
            raise SegflowError(
                f"{what}: image {img.name} is paired with mask {msk.name} by sorted order, but their numbers differ; "
                "rename the files so images and masks sort in the same order"
            )
    return list(zip(images, masks))


def check_mask_values(mask: np.ndarray, path: Path, cfg: Config) -> None:
    """Every mask value must fit the encoding: a class id ``0..N_CLASSES-1``, a bitmask of
    ``N_CLASSES`` bits, or (regions and regression) anything; the ignored id is always allowed."""
    from segflow.encodings import BITMASK, encoding

    n = cfg.MODEL.N_CLASSES
    kind = encoding(cfg)
    if kind not in ("categorical", *BITMASK):
        return
    top = n if kind == "categorical" else 2**n
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= top)) & (values != cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        if kind == "categorical":
            hint = " (a 0/255 mask: divide it by 255)" if set(values.tolist()) <= {0, 255} and n == 2 else ""
            raise SegflowError(
                f"{path}: mask values {shown} are outside the classes 0..{n - 1} of MODEL.N_CLASSES={n}{hint}; "
                "fix the mask or raise MODEL.N_CLASSES"
            )
        raise SegflowError(
            f"{path}: mask values {shown} need more than the {n} bits of MODEL.N_CLASSES={n} (ENCODING {kind}); "
            "raise MODEL.N_CLASSES to the number of bit classes"
        )


def list_pairs(image_dir: str, mask_dir: str | None, what: str) -> list[tuple[Path, Path | None]]:
    """Image files of a folder, each with its mask file (or None when there are no masks)."""
    images = list_images(image_dir, f"{what} images ({_key(what)}.PATH)")
    if mask_dir is None:
        return [(p, None) for p in images]
    return pair_files(images, list_images(mask_dir, f"{what} masks ({_key(what)}.GT_PATH)"), what)


def read_pair(cfg: Config, img_path: Path, mask_path: Path | None, what: str, check_masks: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one image (raw dtype, channels last) and its mask, checking channels, shapes and classes."""
    channels = cfg.in_channels
    image = read_image(img_path, cfg.ndim, channels)
    if image.shape[-1] != channels:
        raise SegflowError(
            f"{img_path}: image has {image.shape[-1]} channel(s) but DATA.PATCH_SIZE {tuple(cfg.DATA.PATCH_SIZE)} ends in {channels}; "
            f"set the last value of DATA.PATCH_SIZE to {image.shape[-1]}"
        )
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        raise SegflowError(f"{img_path}: image holds NaN or infinite values; fix or remove it")
    if mask_path is None:
        return image, None
    mask = read_mask(mask_path, cfg.ndim, integer=cfg.PROBLEM.SEMANTIC_SEG.ENCODING != "linear")
    if mask.shape != image.shape[:-1]:
        raise SegflowError(
            f"{what}: image {img_path.name} has shape {image.shape[:-1]} but its mask {mask_path.name} has {mask.shape}; "
            "an image and its mask must have the same size"
        )
    if check_masks:
        check_mask_values(mask, mask_path, cfg)
    return image, mask


def read_pairs(
    cfg: Config, image_dir: str, mask_dir: str | None, what: str, check_masks: bool = True
) -> list[tuple[Path, np.ndarray, Path | None, np.ndarray | None]]:
    """Read every image (raw dtype) and its mask from two folders, checking that they pair."""
    out = []
    for img_path, mask_path in list_pairs(image_dir, mask_dir, what):
        image, mask = read_pair(cfg, img_path, mask_path, what, check_masks)
        out.append((img_path, image, mask_path, mask))
    return out


def _key(what: str) -> str:
    return {"train": "DATA.TRAIN", "validation": "DATA.VAL", "test": "DATA.TEST"}[what]


@dataclass
class TrainData:
    """Training and validation samples plus the fitted normaliser."""

    train: list[Sample]
    val: list[Sample]
    normalizer: Normalizer


def n_val_images(n_images: int, fraction: float) -> int:
    """Validation images held out of ``n_images`` (at least one, never all); 0 for a single image."""
    if fraction <= 0 or n_images < 2:
        return 0
    return min(n_images - 1, max(1, int(round(n_images * fraction))))


def split_train_val(samples: list[Sample], fraction: float, shuffle: bool, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the images; with one image, hold out the end of its first axis."""
    if fraction <= 0:
        return samples, []
    if len(samples) == 1:
        s = samples[0]
        n = s.image.shape[0]
        cut = n - max(1, int(round(n * fraction)))
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


def load_train_data(cfg: Config) -> TrainData:
    """Read and check the training images, split off the validation set, and normalise both with
    statistics measured on the training part only (no validation pixels leak into them)."""
    d = cfg.DATA
    raw = [Sample(p.stem, img, msk, p, mp) for p, img, mp, msk in read_pairs(cfg, d.TRAIN.PATH, d.TRAIN.GT_PATH, "train", d.TRAIN.CHECK_DATA)]
    if d.VAL.FROM_TRAIN:
        train, val = split_train_val(raw, d.VAL.SPLIT_TRAIN, d.VAL.RANDOM, cfg.SYSTEM.SEED)
    else:
        train = raw
        val = [Sample(p.stem, img, msk, p, mp) for p, img, mp, msk in read_pairs(cfg, d.VAL.PATH, d.VAL.GT_PATH, "validation", d.TRAIN.CHECK_DATA)]
    normalizer = Normalizer(d.NORMALIZATION)
    normalizer.fit([s.image for s in train])
    train, val = ([replace(s, image=normalizer(s.image)) for s in part] for part in (train, val))
    return TrainData(train=train, val=val, normalizer=normalizer)
