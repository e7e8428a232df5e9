"""Data augmentation of training patches (AUGMENTOR.*), built from MONAI dictionary transforms.

A sample is ``{"image": float32 (C, [Z,] Y, X), "label": integer (1, [Z,] Y, X)}``. Geometric transforms move the
image and the label together, the label always with nearest-neighbour sampling so that it keeps its class ids;
intensity transforms touch only the image. Each enabled transform fires with probability ``DA_PROB``, independently.

As in BiaPy, in 3D every geometric transform except ZFLIP and ZOOM_IN_Z acts in the y-x plane (the same for every
slice): z is often sampled more coarsely than y and x, and patches are often thin in z.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resample,
)
from monai.transforms.utils import create_grid
from monai.utils import convert_to_numpy, convert_to_tensor
from scipy import ndimage

from segflow.config.schema import AugmentorConfig
from segflow.io.atomic import atomic_write

_KEYS = ("image", "label")
_INTERPOLATION = {"image": "bilinear", "label": "nearest"}

# torch's grid_sample knows only zeros/border/reflection. Its 'reflection' (align_corners=False) mirrors about the
# outer pixel edge, i.e. numpy's 'symmetric', and is the closest it has to 'reflect' and, with no periodic mode, to
# 'wrap'.
_PADDING = {"constant": "zeros", "reflect": "reflection", "symmetric": "reflection", "wrap": "reflection", "edge": "border"}

_GRID_STEP = 32


def _resample(data: dict, grid: torch.Tensor, resampler: Resample, padding_mode: str) -> dict:
    """Resample image and label on ``grid``; a y-x grid moves every plane of a 3D patch alike.

    Sampling a 3D patch as a stack of 2D planes is an order of magnitude faster than 3D sampling on the CPU.
    """
    n = len(grid) - 1
    for key in _KEYS:
        array = convert_to_tensor(data[key], track_meta=False)
        out = resampler(array.reshape(-1, *array.shape[-n:]), grid, mode=_INTERPOLATION[key], padding_mode=padding_mode)
        # Resample wraps its output in a MetaTensor whose affine describes the reshaped planes; drop it.
        data[key] = convert_to_tensor(out, track_meta=False).reshape(array.shape)
    return data


class _RandAffined(RandomizableTransform, MapTransform):
    """Rotation, shear, zoom and shift in the y-x plane, merged into one resampling.

    MONAI's RandAffined draws all its components under one probability; here each enabled component fires on its own
    with probability ``prob``. One resampling instead of one per component is faster and blurs the image once.
    ``matrix`` maps output (y, x, 1) to input coordinates in pixels centred on the patch.
    """

    def __init__(
        self,
        prob: float,
        rotate_range: tuple[float, float] | None,
        shear_range: tuple[float, float] | None,
        zoom_range: tuple[float, float] | None,
        zoom_z: bool,
        shift_range: tuple[float, float] | None,
        padding_mode: str,
    ) -> None:
        MapTransform.__init__(self, _KEYS)
        RandomizableTransform.__init__(self, prob)
        self.rotate_range = rotate_range
        self.shear_range = shear_range
        self.zoom_range = zoom_range
        self.zoom_z = zoom_z
        self.shift_range = shift_range
        self.padding_mode = padding_mode
        self.resampler = Resample(dtype=torch.float32)
        self.matrix = np.eye(3)
        self.z_zoom = 1.0

    def _fires(self, value_range: tuple[float, float] | None) -> bool:
        return value_range is not None and self.R.rand() < self.prob

    def randomize(self, spatial_size: Sequence[int]) -> None:
        """Draw which components apply and their parameters into ``matrix`` and ``z_zoom``."""
        shift, rotation, shear, zoom = np.eye(3), np.eye(3), np.eye(3), np.eye(3)
        self.z_zoom = 1.0
        self._do_transform = False
        if self._fires(self.shift_range):
            for axis, size in enumerate(spatial_size[-2:]):
                sign = 1 if self.R.rand() < 0.5 else -1
                shift[axis, 2] = sign * self.R.uniform(*self.shift_range) * size
            self._do_transform = True
        if self._fires(self.rotate_range):
            angle = np.deg2rad(self.R.uniform(*self.rotate_range))
            rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
            self._do_transform = True
        if self._fires(self.shear_range):
            # x moves in proportion to y: rows (lines of constant y) stay rows.
            shear[1, 0] = np.tan(np.deg2rad(self.R.uniform(*self.shear_range)))
            self._do_transform = True
        if self._fires(self.zoom_range):
            # A factor above 1 magnifies the content, so the sampling grid shrinks by its inverse.
            factor = self.R.uniform(*self.zoom_range)
            zoom[0, 0] = zoom[1, 1] = 1 / factor
            if self.zoom_z and len(spatial_size) == 3:
                self.z_zoom = factor
            self._do_transform = True
        # The shift acts on output coordinates, so it stays a fraction of the patch whatever the zoom.
        self.matrix = rotation @ shear @ zoom @ shift

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        spatial_size = tuple(d["image"].shape[1:])
        self.randomize(spatial_size)
        if not self._do_transform:
            return d
        matrix, sampled = self.matrix, spatial_size[-2:]
        if self.z_zoom != 1.0:
            matrix = np.eye(4)
            matrix[0, 0] = 1 / self.z_zoom
            matrix[1:, 1:] = self.matrix
            sampled = spatial_size
        grid = create_grid(sampled, backend="torch", dtype=torch.float32)
        grid = (torch.as_tensor(matrix, dtype=torch.float32) @ grid.reshape(len(grid), -1)).reshape(grid.shape)
        return _resample(d, grid, self.resampler, self.padding_mode)


class _RandElasticd(RandomizableTransform, MapTransform):
    """Elastic deformation as in imgaug/BiaPy (Simard et al. 2003): uniform noise in [-1, 1], Gaussian-smoothed
    with ``sigma``, times ``alpha`` pixels.

    MONAI's Rand2DElasticd moves a coarse grid of control points instead, and its Rand3DElasticd resamples even when
    it does not fire. In 3D the y-x field is shared by all slices, as in BiaPy. scipy smooths the field about four
    times faster than MONAI's GaussianFilter on the CPU.
    """

    def __init__(self, prob: float, alpha_range: tuple[float, float], sigma: float, padding_mode: str) -> None:
        MapTransform.__init__(self, _KEYS)
        RandomizableTransform.__init__(self, prob)
        self.alpha_range = alpha_range
        self.sigma = sigma
        self.padding_mode = padding_mode
        self.resampler = Resample(dtype=torch.float32)
        self.noise = np.zeros((2, 1, 1), np.float32)
        self.alpha = 0.0

    def randomize(self, plane_size: Sequence[int]) -> None:
        """Draw whether to deform, the raw noise field for a y-x plane and its strength."""
        super().randomize(None)
        if not self._do_transform:
            return
        self.noise = self.R.uniform(-1.0, 1.0, (2, *plane_size)).astype(np.float32)
        self.alpha = self.R.uniform(*self.alpha_range)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        plane_size = tuple(d["image"].shape[-2:])
        self.randomize(plane_size)
        if not self._do_transform:
            return d
        field = ndimage.gaussian_filter(self.noise, (0, self.sigma, self.sigma), truncate=3.0) * self.alpha
        grid = create_grid(plane_size, backend="torch", dtype=torch.float32)
        grid[:2] += torch.from_numpy(field)
        return _resample(d, grid, self.resampler, self.padding_mode)


class _RandSliceIntensityd(RandomizableTransform, MapTransform):
    """Brightness or contrast change with its own random value for every z-slice of a 3D image (mode '2D')."""

    def __init__(self, prob: float, value_range: tuple[float, float], multiply: bool) -> None:
        MapTransform.__init__(self, "image")
        RandomizableTransform.__init__(self, prob)
        self.value_range = value_range
        self.multiply = multiply
        self.values = np.zeros(1)

    def randomize(self, n_slices: int) -> None:
        """Draw whether to apply and one value per slice."""
        super().randomize(None)
        if self._do_transform:
            self.values = self.R.uniform(*self.value_range, size=n_slices)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image = convert_to_tensor(d["image"], dtype=torch.float32)
        self.randomize(image.shape[1])
        if not self._do_transform:
            return d
        values = torch.as_tensor(self.values, dtype=image.dtype).reshape(1, -1, 1, 1)
        d["image"] = image * (1 + values) if self.multiply else image + values
        return d


class _RandGaussianBlurd(RandomizableTransform, MapTransform):
    """Gaussian blur of the image in the y-x plane, one sigma for both axes, borders mirrored.

    MONAI's RandGaussianSmoothd pads with zeros, which darkens the patch border, and draws a sigma per axis.
    """

    def __init__(self, prob: float, sigma_range: tuple[float, float]) -> None:
        MapTransform.__init__(self, "image")
        RandomizableTransform.__init__(self, prob)
        self.sigma_range = sigma_range
        self.sigma = 0.0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to blur and the sigma."""
        super().randomize(None)
        if self._do_transform:
            self.sigma = self.R.uniform(*self.sigma_range)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        image = convert_to_numpy(d["image"], dtype=np.float32)
        sigmas = (0.0,) * (image.ndim - 2) + (self.sigma, self.sigma)
        d["image"] = ndimage.gaussian_filter(image, sigmas, mode="reflect")
        return d


class _Augmentation(Compose):
    """A Compose that hands back plain numpy arrays: the image as float32, the label in its input dtype."""

    def __call__(self, input_: Mapping, *args: Any, **kwargs: Any) -> dict:
        label_dtype = np.asarray(input_["label"]).dtype
        out = super().__call__(input_, *args, **kwargs)
        return {
            **out,
            "image": convert_to_numpy(out["image"], dtype=np.float32),
            "label": convert_to_numpy(out["label"]).astype(label_dtype, copy=False),
        }


def build_augmentation(aug: AugmentorConfig, ndim: int) -> Compose | None:
    """Build the training augmentation for ``ndim``-D patches from the AUGMENTOR section.

    The returned transform takes ``{"image": float32 (C, [Z,] Y, X), "label": integer (1, [Z,] Y, X)}`` and returns
    numpy arrays of the same shapes and dtypes. Returns None when augmentation is off or no transform is enabled.
    Seed it with ``set_random_state(seed=...)``; ``monai.data.DataLoader`` reseeds it in every worker.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    if not aug.ENABLE:
        return None
    p = aug.DA_PROB
    y, x = ndim - 2, ndim - 1
    transforms: list[MapTransform] = []

    if aug.ZFLIP and ndim == 3:
        transforms.append(RandFlipd(_KEYS, prob=p, spatial_axis=0))
    if aug.VFLIP:
        transforms.append(RandFlipd(_KEYS, prob=p, spatial_axis=y))
    if aug.HFLIP:
        transforms.append(RandFlipd(_KEYS, prob=p, spatial_axis=x))
    if aug.ROT90:
        transforms.append(RandRotate90d(_KEYS, prob=p, max_k=3, spatial_axes=(y, x)))
    if aug.RANDOM_ROT or aug.SHEAR or aug.ZOOM or aug.SHIFT:
        transforms.append(
            _RandAffined(
                prob=p,
                rotate_range=aug.RANDOM_ROT_RANGE if aug.RANDOM_ROT else None,
                shear_range=aug.SHEAR_RANGE if aug.SHEAR else None,
                zoom_range=aug.ZOOM_RANGE if aug.ZOOM else None,
                zoom_z=aug.ZOOM_IN_Z,
                shift_range=aug.SHIFT_RANGE if aug.SHIFT else None,
                padding_mode=_PADDING[aug.AFFINE_MODE],
            )
        )
    if aug.ELASTIC:
        transforms.append(_RandElasticd(p, aug.E_ALPHA, aug.E_SIGMA, _PADDING[aug.E_MODE]))

    if aug.G_BLUR:
        transforms.append(_RandGaussianBlurd(p, aug.G_SIGMA))
    if aug.GAMMA_CONTRAST:
        # Rescales to [0, 1] by the patch's min and max, applies the gamma and maps back, so negative (z-scored)
        # intensities are safe and the intensity range is kept.
        transforms.append(RandAdjustContrastd("image", prob=p, gamma=aug.GC_GAMMA))
    if aug.BRIGHTNESS:
        if ndim == 3 and aug.BRIGHTNESS_MODE == "2D":
            transforms.append(_RandSliceIntensityd(p, aug.BRIGHTNESS_FACTOR, multiply=False))
        else:
            transforms.append(RandShiftIntensityd("image", offsets=aug.BRIGHTNESS_FACTOR, prob=p))
    if aug.CONTRAST:
        if ndim == 3 and aug.CONTRAST_MODE == "2D":
            transforms.append(_RandSliceIntensityd(p, aug.CONTRAST_FACTOR, multiply=True))
        else:
            transforms.append(RandScaleIntensityd("image", factors=aug.CONTRAST_FACTOR, prob=p))
    if aug.GAUSSIAN_NOISE:
        transforms.append(
            RandGaussianNoised(
                "image", prob=p, mean=aug.GAUSSIAN_NOISE_MEAN, std=float(np.sqrt(aug.GAUSSIAN_NOISE_VAR)), sample_std=False
            )
        )

    return _Augmentation(transforms) if transforms else None


def _draw_grid(image: np.ndarray) -> np.ndarray:
    out = np.array(image, dtype=np.float32)
    top = out.max()
    out[..., ::_GRID_STEP, :] = top
    out[..., ::_GRID_STEP] = top
    return out


def _biapy_axes(array: np.ndarray) -> np.ndarray:
    """Channel-first to channel-last, dropping a single channel."""
    array = np.moveaxis(array, 0, -1)
    return array[..., 0] if array.shape[-1] == 1 else array


def write_aug_samples(
    transform: Callable[[dict[str, np.ndarray]], Mapping[str, Any]],
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    out_dir: Path,
    draw_grid: bool,
) -> list[Path]:
    """Augment each channel-first (image, label) pair and write it for a person to check.

    Writes ``aug_{i:03d}_x.tif`` (float32 image) and ``aug_{i:03d}_y.tif`` (label as uint8, or uint16 when its values
    do not fit) in BiaPy axis order, (y, x[, c]) or (z, y, x[, c]) with a single channel dropped. With ``draw_grid``,
    lines every 32 pixels at the image maximum are drawn on the image first so that geometric transforms show.
    Returns the written paths.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    for i, (image, label) in enumerate(pairs):
        image = _draw_grid(image) if draw_grid else np.asarray(image, dtype=np.float32)
        out = transform({"image": image, "label": np.asarray(label)})
        x = _biapy_axes(np.asarray(out["image"], dtype=np.float32))
        y = _biapy_axes(np.asarray(out["label"]))
        y = y.astype(np.uint8 if y.min() >= 0 and y.max() <= np.iinfo(np.uint8).max else np.uint16)
        for suffix, array in (("x", x), ("y", y)):
            target = out_dir / f"aug_{i:03d}_{suffix}.tif"
            atomic_write(target, functools.partial(tifffile.imwrite, data=array))
            written.append(target)
    return written
