"""What the Zarr and HDF5 sources share: container files (or one container) as ``DATA.*.PATH``, one array per file
paired by name with its mask file, or image and mask inside each file (``INPUT_ZARR_MULTIPLE_DATA``), read
lazily in the configured axis order, or whole into memory with ``IN_MEMORY``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segflow.config.schema import Config, TrainDataConfig, ValDataConfig
from segflow.data.pairs import MaskRules, check_channels, check_same_size, pair_files
from segflow.data.sources.base import Sample
from segflow.errors import SegflowError
from segflow.io.formats.base import physical_memory
from segflow.io.images import check_class_ids
from segflow.io.lazy import LazyArray, slabs

BIAPY_AXES = "TZCYX"  # the schema's default: arrays with fewer axes are read as (Z)YX or (Z)YXC


class ContainerSource:
    """Arrays inside container files; subclasses say which files (``suffixes``) and how an array is opened."""

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def open_array(path: Path, inner: str | None) -> Any:
        """The stored array at ``inner`` inside the container ``path`` (None: its one array), opened read-only."""
        raise NotImplementedError

    @classmethod
    def accepts(cls, cfg: Config, image_path: str, what: str) -> bool:
        """A container itself, or a folder holding containers."""
        path = Path(image_path)
        return cls._is_container(path) or (path.is_dir() and any(cls._is_container(p) for p in path.iterdir()))

    @classmethod
    def _is_container(cls, path: Path) -> bool:
        return path.suffix.lower() in cls.suffixes

    @classmethod
    def containers(cls, path: Path) -> list[Path]:
        """``path`` when it is a container, else the containers in the folder, sorted by name."""
        return [path] if cls._is_container(path) else sorted(p for p in path.iterdir() if cls._is_container(p))

    def samples(self, cfg: Config, image_path: str, mask_path: str | None, what: str, rules: MaskRules | None) -> list[Sample]:
        """See ``Source.samples``."""
        part = cfg.DATA.TRAIN if what == "train" else cfg.DATA.VAL
        images = self.containers(Path(image_path))
        if part.INPUT_ZARR_MULTIPLE_DATA:
            raw, gt = part.INPUT_ZARR_MULTIPLE_DATA_RAW_PATH or None, part.INPUT_ZARR_MULTIPLE_DATA_GT_PATH or None
            pairs = [(c, raw, c if mask_path is not None else None, gt) for c in images]
        elif mask_path is None:
            pairs = [(c, None, None, None) for c in images]
        elif self._is_container(Path(image_path)) and self._is_container(Path(mask_path)):
            pairs = [(Path(image_path), None, Path(mask_path), None)]  # one volume and its mask: paired by the config
        else:
            masks = self.containers(Path(mask_path))
            if not masks:
                raise SegflowError(f"{what}: {mask_path} holds no {'/'.join(self.suffixes)} masks for the {self.name} images of {image_path}")
            pairs = [(i, None, m, None) for i, m in pair_files(images, masks, what)]
        return [self._sample(cfg, part, what, rules, *pair) for pair in pairs]

    def _sample(
        self, cfg: Config, part: TrainDataConfig | ValDataConfig, what: str, rules: MaskRules | None,
        img: Path, img_inner: str | None, msk: Path | None, msk_inner: str | None,
    ) -> Sample:
        prefix = "DATA.TRAIN" if what == "train" else "DATA.VAL"
        image = self.lazy_array(cfg, img, img_inner, part.INPUT_IMG_AXES_ORDER, f"{prefix}.INPUT_IMG_AXES_ORDER", True)
        check_channels(cfg, image.shape[-1], image.where, f", or {prefix}.INPUT_IMG_AXES_ORDER")
        mask = None
        if msk is not None:
            mask = self.lazy_array(cfg, msk, msk_inner, part.INPUT_MASK_AXES_ORDER, f"{prefix}.INPUT_MASK_AXES_ORDER", False)
            check_same_size(what, image.where, image.shape[:-1], mask.where, mask.shape)
            if rules is not None:
                integer = cfg.PROBLEM.SEMANTIC_SEG.ENCODING != "linear"
                rows = slabs(mask, aligned=True)
                for i in rows:  # a slab at a time: the mask may not fit in memory
                    _check_mask_slab(np.asarray(mask[i : i + rows.step]), Path(mask.where), rules, integer)
        if part.IN_MEMORY:
            image, mask = (None if a is None else _in_memory(a, f"{prefix}.IN_MEMORY") for a in (image, mask))
        return Sample(img.stem, image, mask, img, msk)

    @classmethod
    def default_axes(cls, path: Path, shape: tuple[int, ...], ndim: int, channels: int, key: str) -> str:
        """The stored axes of an array of ``shape`` when ``key`` is left at BiaPy's default: ``(Z)YX``, or
        ``(Z)YXC`` with one more axis (``channels`` is the expected channel count: 1 for a mask)."""
        spatial = "ZYX"[-ndim:]
        if len(shape) in (ndim, ndim + 1):
            return spatial if len(shape) == ndim else spatial + "C"
        return BIAPY_AXES

    @classmethod
    def voxel_size(cls, path: Path, inner: str | None, ndim: int) -> tuple[float, ...] | None:
        """The voxel size the container records for the array at ``inner``, ``(z, y, x)`` or ``(y, x)`` (in its own
        unit, micrometres by convention), or None; what a container without it says."""
        return None

    def lazy_array(self, cfg: Config, path: Path, inner: str | None, axes: str, key: str, channels: bool) -> LazyArray:
        """The array at ``inner`` of the container ``path`` (None: its one array) read lazily as ``(*spatial, C)`` (a
        mask ``(*spatial)`` without ``channels``), its stored ``axes`` (BiaPy's default: found) set by ``key``."""
        opener = functools.partial(type(self).open_array, path, inner)
        stored = opener()
        if axes.upper() == BIAPY_AXES:
            axes = self.default_axes(path, tuple(stored.shape), cfg.ndim, cfg.in_channels if channels else 1, key)
        where = f"{path}/{inner}" if inner else str(path)
        return LazyArray(opener, axes, cfg.ndim, where, key, channels=channels, stored=stored)


def _check_mask_slab(slab: np.ndarray, path: Path, rules: MaskRules, integer: bool) -> None:
    """One slab of a mask read lazily: class ids (whole numbers, for every encoding but ``linear``) that fit ``rules``."""
    if integer:
        check_class_ids(slab, path)
    rules.check_mask(slab, path)


def _in_memory(array: LazyArray, key: str) -> np.ndarray:
    """The whole array read into memory, or an error when it cannot fit."""
    nbytes = array.size * array.dtype.itemsize
    memory = physical_memory()
    if memory and nbytes > memory // 2:
        raise SegflowError(
            f"{array.where}: {nbytes / 2**30:.1f} GiB does not fit in memory ({memory / 2**30:.1f} GiB on this machine); "
            f"set {key}: false to read it one patch at a time"
        )
    return np.asarray(array)
