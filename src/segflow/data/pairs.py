"""Image/mask pairs from folders: pairing, checks, normalisation and the validation split."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segflow.config.schema import Config, NormalizationConfig
from segflow.errors import SegflowError
from segflow.io.images import list_images, read_image, read_mask


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
        """PERC_CLIP's percentiles of ``image``, or None without clipping."""
        if not self.cfg.PERC_CLIP:
            return None
        return tuple(float(v) for v in np.percentile(image, [self.cfg.PERC_LOWER, self.cfg.PERC_UPPER]))

    def _divisor(self, dtype: np.dtype) -> float:
        if is_wide_int(dtype) and self.wide_divisor is not None:
            return float(self.wide_divisor)
        return float(np.iinfo(dtype).max)

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
    lo, hi = (int(image.min()), int(image.max())) if clip is None else (int(np.floor(clip[0])), int(np.ceil(clip[1])))
    if lo < 0 or hi > WIDE_INT_LIMIT:
        raise SegflowError(
            f"{where}: {image.dtype} image with values {lo}..{hi}; DATA.NORMALIZATION.TYPE div divides integer "
            f"images wider than 16 bits as 8- or 16-bit data (0..{WIDE_INT_LIMIT}); set DATA.NORMALIZATION.TYPE to "
            "scale_range or zero_mean_unit_variance, or convert the images"
        )
    return lo, hi


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


def check_mask_values(mask: np.ndarray, path: Path, cfg: Config) -> None:
    """Every mask value must fit the encoding: a class id ``0..N_CLASSES-1``, a bitmask of
    ``N_CLASSES`` bits, or (regions and regression) anything; the ignored id (>= 0) is always allowed."""
    from segflow.encodings import get_encoding

    n = cfg.MODEL.N_CLASSES
    enc = get_encoding(cfg)
    top = enc.value_limit()
    if top is None:
        return
    values = np.unique(mask)
    ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
    bad = values[((values < 0) | (values >= top)) & ((values != ignore) | (ignore < 0))]
    if not bad.size:
        return
    shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
    if bad[0] < 0:
        todo = (
            "-1 means no ignored class; fix the mask, or give the pixels to ignore an id >= 0 (e.g. 255) "
            "and set IGNORE_CLASS_ID to it"
            if ignore < 0
            else f"is {ignore}; fix the mask, e.g. give the pixels to ignore the id {ignore}"
        )
        raise SegflowError(
            f"{path}: mask values {shown} are negative, but masks hold class ids from 0 "
            f"and PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID {todo}"
        )
    if not enc.bitwise:
        hint = " (a 0/255 mask: divide it by 255)" if set(values.tolist()) <= {0, 255} and n == 2 else ""
        raise SegflowError(
            f"{path}: mask values {shown} are outside the classes 0..{n - 1} of MODEL.N_CLASSES={n}{hint}; "
            "fix the mask or raise MODEL.N_CLASSES"
        )
    raise SegflowError(
        f"{path}: mask values {shown} need more than the {n} bits of MODEL.N_CLASSES={n} (ENCODING {enc.name}); "
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
