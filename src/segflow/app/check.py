"""The ``check`` command: validate the config and read the data it names, printing what was found."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segflow.app.run import check_split_fits_patch, check_stack_sizes, print_warnings
from segflow.config.loader import load_config
from segflow.config.schema import Config
from segflow.data.loading import n_val_images, split_train_val
from segflow.data.normalize import percentile_sample
from segflow.data.pairs import list_pairs, read_pair
from segflow.data.sources import FolderSource, Sample, Source, open_source
from segflow.errors import SegflowError


def _describe(
    label: str, cfg: Config, image_dir: str, mask_dir: str | None, what: str
) -> list[tuple[Path, tuple[int, ...]]]:
    """Read and check every image (and mask) of a folder, print what was found; return each image with its shape.
    Zarr, HDF5 and other sources than image folders are described from their metadata and a bounded sample."""

    if what != "test" and not isinstance(source := open_source(cfg, image_dir, what), FolderSource):
        return _describe_source(label, cfg, source, image_dir, mask_dir, what)
    pairs = list_pairs(image_dir, mask_dir, what)
    shapes, dtypes = set(), set()
    tally = _MaskTally(cfg)
    samples, constant = [], []
    for img_path, mask_path in pairs:
        image, mask = read_pair(cfg, img_path, mask_path, what, tally.enc)
        if image.size and image.min() == image.max():
            constant.append((img_path, image.flat[0]))
        shapes.add(image.shape)
        dtypes.add(str(image.dtype))
        if mask is not None:
            tally.add(mask)
        samples.append((img_path, image.shape))
    print(f"{label}: {len(pairs)} image{'s' if len(pairs) != 1 else ''}" + (" with masks" if mask_dir else "") + f" from {image_dir}")
    if mask_dir is not None:
        _print_pairs(pairs)
    print(f"  shapes {', '.join(str(s) for s in sorted(shapes))}; dtypes {', '.join(sorted(dtypes))}")
    if mask_dir is not None:
        tally.report()
    for path, value in constant:
        print(f"  warning: {path}: every pixel is {value}; a constant image teaches the network nothing (a failed export or conversion?)")
    return samples


def _describe_source(
    label: str, cfg: Config, source: Source, image_dir: str, mask_dir: str | None, what: str, shown: int = 3
) -> list[tuple[Path, tuple[int, ...]]]:
    """``_describe`` for a source of arrays (Zarr, HDF5, LMDB): shapes, dtypes and chunks from the metadata (the
    first ``shown`` arrays one a line); mask values checked and class fractions estimated on a bounded sample:
    evenly spaced slabs of masks, taken in a fixed shuffled order until ``PERCENTILE_SAMPLE`` values are read."""
    from segflow.data import normalize

    tally = _MaskTally(cfg)
    found = source.samples(cfg, image_dir, mask_dir, what, None)
    print(f"{label}: {len(found)} {source.name} array{'s' if len(found) != 1 else ''}" + (" with masks" if mask_dir else "") + f" from {image_dir}")
    for s in found[:shown]:
        chunks = getattr(getattr(s.image, "stored", s.image), "chunks", None)
        where = "in memory" if isinstance(s.image, np.ndarray) else "read patch by patch"
        print(f"  {getattr(s.image, 'where', s.path)}: shape {s.image.shape}, {s.image.dtype}" + (f", chunks {tuple(chunks)}" if chunks else "") + f", {where}")
    if len(found) > shown:
        shapes = sorted({s.image.shape for s in found})
        print(f"  and {len(found) - shown} more; shapes {', '.join(map(str, shapes[:5]))}{' ...' if len(shapes) > 5 else ''}; dtypes {', '.join(sorted({str(s.image.dtype) for s in found}))}")
    masks = [s for s in found if s.mask is not None]
    sampled, whole = 0, sum(s.mask.size for s in masks)
    for k in np.random.default_rng(0).permutation(len(masks)):  # spread over the arrays, the same each time
        if sampled >= normalize.PERCENTILE_SAMPLE:
            break
        values = percentile_sample(masks[k].mask)
        tally.enc.check_mask(values, Path(getattr(masks[k].mask, "where", masks[k].mask_path)))
        tally.add(values)
        sampled += values.size
    if whole:
        print(f"  masks: values checked and counted on a sample of {sampled:,} of their {whole:,} pixels ({sampled / whole:.1%})")
        tally.report()
    return [(s.path, s.image.shape) for s in found]


class _MaskTally:
    """Class pixel counts (or the value range, for regression) over the masks ``check`` reads."""

    def __init__(self, cfg: Config) -> None:
        from segflow.encodings import get_encoding

        self.cfg, self.enc = cfg, get_encoding(cfg)
        self.counts = np.zeros(self.enc.n, dtype=np.int64)
        self.total = 0
        self.lo, self.hi = np.inf, -np.inf

    def add(self, mask: np.ndarray) -> None:
        """Count the valid (not ignored) pixels of ``mask`` (any shape)."""
        ignore = self.cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
        valid = mask[mask != ignore] if ignore >= 0 else mask.ravel()
        self.total += valid.size
        if self.enc.regression:
            self.lo, self.hi = min(self.lo, float(valid.min(initial=np.inf))), max(self.hi, float(valid.max(initial=-np.inf)))
        elif (found := self.enc.mask_counts(valid)) is not None:
            self.counts += found

    def report(self) -> None:
        """Print the class fractions (and classes never seen), or the regression targets' range."""
        enc, counts, total = self.enc, self.counts, self.total
        if not total:
            return
        if enc.regression:
            print(enc.describe(self.lo, self.hi))
        elif enc.mask_counts(np.zeros(0, np.int64)) is not None:
            what_is = "bit classes (pixel fraction, classes may overlap)" if enc.bitwise else "classes (pixel fraction)"
            print(f"  {what_is}: " + ", ".join(f"{c}: {k / total:.1%}" for c, k in enumerate(counts)))
            for c in np.flatnonzero(counts == 0):
                print(f"  warning: class {c} never occurs in these masks")


def _print_pairs(pairs: list[tuple[Path, Path | None]], shown: int = 3) -> None:
    """The first few image <-> mask pairs and how many more: pairing is by sorted name, so a user can see it."""
    lines = [f"{img.name} <-> {mask.name}" for img, mask in pairs[:shown] if mask is not None]
    more = f" and {len(pairs) - shown} more" if len(pairs) > shown else ""
    print(f"  pairs: {', '.join(lines)}{more}")


def _placeholders(shapes: list[tuple[Path, tuple[int, ...]]]) -> list[Sample]:
    """Samples of the given shapes that hold no pixels (a broadcast zero), to run the real split on."""
    return [Sample(p.stem, np.broadcast_to(np.zeros((), np.uint8), shape), None, p) for p, shape in shapes]


def check(config_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate the config and read every image and mask it names, printing what was found."""
    from segflow.models.networks import check_model

    cfg, warnings = load_config(config_path, overrides)
    print_warnings(warnings)
    check_model(cfg)
    d = cfg.DATA
    print(f"Config {config_path}: valid ({cfg.PROBLEM.NDIM}, {cfg.MODEL.N_CLASSES} classes, patch {tuple(d.PATCH_SIZE)}, {cfg.MODEL.ARCHITECTURE})")
    if cfg.TRAIN.ENABLE:
        train_shapes = _describe("train", cfg, d.TRAIN.PATH, d.TRAIN.GT_PATH, "train")
        if not d.VAL.FROM_TRAIN:
            val_shapes = _describe("validation", cfg, d.VAL.PATH, d.VAL.GT_PATH, "validation")
            train, val = _placeholders(train_shapes), _placeholders(val_shapes)
        else:
            train, val = split_train_val(_placeholders(train_shapes), d.VAL.SPLIT_TRAIN, d.VAL.RANDOM, cfg.SYSTEM.SEED)
            n_val = n_val_images(len(train_shapes), d.VAL.SPLIT_TRAIN)
            if not val:
                print(f"validation: none (DATA.VAL.SPLIT_TRAIN={d.VAL.SPLIT_TRAIN:g})")
            elif n_val:
                print(f"validation: {n_val} of the training images (DATA.VAL.SPLIT_TRAIN={d.VAL.SPLIT_TRAIN})")
            else:
                shape = val[0].image.shape[:-1]
                print(f"validation: the last {d.VAL.SPLIT_TRAIN:.0%} of the single training image, {shape}")
        small = [s for _, s in train_shapes if any(a < p for a, p in zip(s[:-1], cfg.spatial_patch))]
        if small and not d.REFLECT_TO_COMPLETE_SHAPE:
            raise SegflowError(
                f"{len(small)} training image(s) (e.g. shape {small[0][:-1]}) are smaller than DATA.PATCH_SIZE {cfg.spatial_patch}; "
                "use a smaller patch or DATA.REFLECT_TO_COMPLETE_SHAPE: true"
            )
        check_split_fits_patch(cfg, train, val)
    if cfg.TEST.ENABLE and cfg.TEST.BY_CHUNKS.ENABLE:
        from segflow.evaluation.testphase_chunks import check_test_volumes

        check_test_volumes(cfg)
    elif cfg.TEST.ENABLE:
        test_shapes = _describe("test", cfg, d.TEST.PATH, d.TEST.GT_PATH if d.TEST.LOAD_GT else None, "test")
        check_stack_sizes(cfg, test_shapes)
    print("OK: config and data are ready")
    return cfg
