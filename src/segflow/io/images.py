"""Read and write image files in any of ``io.formats`` (TIFF, PNG, JPG, NumPy): the checks every file passes,
and the axes.

Arrays come back in BiaPy's axis order with channels last: ``(y, x, c)`` in 2D, ``(z, y, x, c)`` in 3D.
TIFF axes are taken from the file's own metadata (tifffile's series axes) rather than guessed from
the shape; only files without such metadata (no axes, or only tifffile's generic page axes Q/I) fall
back to the expected channel count. A 2D image given with PROBLEM.NDIM 3D, or a 3D stack with 2D, is
an error that says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segflow.errors import SegflowError
from segflow.io.formats import FORMATS, SUFFIXES, format_for


def list_images(folder: str | os.PathLike, what: str, advice: str = "check the path in the config") -> list[Path]:
    """The image files of ``folder`` in sorted name order (BiaPy pairs images and masks by this order)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SegflowError(f"{what}: {folder} is a file, not a folder; {advice}")
    if not folder.is_dir():
        raise SegflowError(f"{what}: folder {folder} does not exist; {advice}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in SUFFIXES]
    if not images:
        others = ", ".join(sorted({p.suffix or p.name for p in files})[:5])
        found = f" (found only: {others})" if others else " (it is empty)"
        raise SegflowError(
            f"{what}: folder {folder} holds no images{found}; segflow reads {', '.join(SUFFIXES)}"
        )
    return images


def _read_raw(path: Path, palette_indices: bool = False) -> tuple[np.ndarray, str | None]:
    """Decode a file with its format; return the array and its axes string when the format records one.

    A palette ("P" mode) PNG gives its colour indices with ``palette_indices`` (masks, as in VOC),
    its colours otherwise (images).
    """
    if path.stat().st_size == 0:
        raise SegflowError(f"{path}: the file is empty (0 bytes); replace it with a valid image")
    fmt = format_for(path)
    if fmt is None:
        raise SegflowError(f"{path}: unsupported file type '{path.suffix.lower()}'; segflow reads {', '.join(SUFFIXES)}")
    try:
        return fmt.read(path, palette_indices)
    except SegflowError:
        raise
    except PermissionError:
        raise SegflowError(f"{path}: permission denied; make it readable (chmod a+r) by your user") from None
    except Exception as exc:  # decoders raise many types for corrupt files; all mean the same to a user
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise SegflowError(f"{path}: cannot be read as an image ({type(exc).__name__}: {reason}); the file may be corrupt or truncated") from None


class _ShapeError(SegflowError):
    """An image whose shape does not fit: ``problem`` says what it is, ``config_fix`` which keys to change."""

    def __init__(self, problem: str, config_fix: str) -> None:
        super().__init__(problem + config_fix)
        self.problem = problem


def _to_channels_last(arr: np.ndarray, axes: str | None, ndim: int, channels: int | None, path: Path) -> np.ndarray:
    """Reorder ``arr`` to ``(y, x, c)`` / ``(z, y, x, c)`` using the file's axes where known."""
    if axes is None or len(axes) != arr.ndim:
        axes = None
    if ndim == 3 and axes == "SYX" and arr.shape[0] != channels:
        # tifffile.imwrite (without photometric=) stores a (3 or 4, y, x) array as planar RGB(A); in 3D,
        # when the image is not expected to have that many channels, it is a small z-stack.
        axes = "ZYX"
    # tifffile names channel axes C or S (samples), z as Z, and a plain page stack as I or Q; a file
    # whose only axes besides y and x are I/Q records no real axis information.
    informative = axes is not None and not set(axes) <= set("YXQI")
    if informative:
        channel_axes = [i for i, a in enumerate(axes) if a in "CS"]
        if len(channel_axes) == 1 and channel_axes[0] != arr.ndim - 1:
            arr = np.moveaxis(arr, channel_axes[0], -1)
            axes = axes.replace(axes[channel_axes[0]], "") + axes[channel_axes[0]]
        spatial = [n for a, n in zip(axes, arr.shape) if a not in "CS" and (n > 1 or a in "YX")]
        if ndim == 3 and channel_axes and len(spatial) == 2:
            raise _ShapeError(
                f"{path}: image has shape {arr.shape} (axes {axes}), a 2D image with channels",
                ", but PROBLEM.NDIM is 3D; set PROBLEM.NDIM: 2D or give 3D stacks",
            )
        if ndim == 2 and (("Z" in axes and arr.shape[axes.index("Z")] > 1) or len(spatial) > 2):
            raise _ShapeError(
                f"{path}: image has shape {arr.shape} (axes {axes}), a 3D stack",
                ", but PROBLEM.NDIM is 2D; set PROBLEM.NDIM: 3D or give 2D images",
            )
    # Drop leading singleton axes (e.g. T=1) beyond what the dimensionality needs.
    while arr.ndim > ndim + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == ndim:
        arr = arr[..., None]
    elif arr.ndim == ndim + 1 and not informative and channels is not None and arr.shape[-1] != channels:
        if arr.shape[0] == channels:
            # No axis metadata: a channels-first file whose first axis matches the expected channel count.
            arr = np.moveaxis(arr, 0, -1)
        elif ndim == 2:
            raise _ShapeError(
                f"{path}: image has shape {arr.shape}: as (y, x, c) it has {arr.shape[-1]} channels",
                f", but DATA.PATCH_SIZE ends in {channels}; if it is a 3D stack of {arr.shape[0]} slices set "
                "PROBLEM.NDIM: 3D, otherwise set the last value of DATA.PATCH_SIZE to its channel count",
            )
    if arr.ndim != ndim + 1:
        want = "(z, y, x) or (z, y, x, c)" if ndim == 3 else "(y, x) or (y, x, c)"
        raise _ShapeError(
            f"{path}: image has shape {arr.shape}, not a {ndim}D image {want}",
            "; check PROBLEM.NDIM"
            + (" (this looks like a 3D stack: set PROBLEM.NDIM: 3D)" if ndim == 2 and arr.ndim == 4 else "")
            + (" (this looks like a 2D image: set PROBLEM.NDIM: 2D)" if ndim == 3 and arr.ndim <= 3 else ""),
        )
    return arr


def read_image(
    path: str | os.PathLike,
    ndim: int,
    channels: int | None = None,
    palette_indices: bool = False,
    expect: str | None = None,
) -> np.ndarray:
    """Read an image as ``(y, x, c)`` (2D) or ``(z, y, x, c)`` (3D), keeping its dtype.

    A shape that does not fit says which config keys to change; with ``expect`` (what a model without a
    config wants, e.g. "this model is 2D with 1 channel; give a (y, x) image") it says that instead.
    """
    path = Path(path)
    arr, axes = _read_raw(path, palette_indices)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SegflowError(f"{path}: pixel type {arr.dtype} is not supported; use integer or float images")
    if arr.size == 0:
        raise SegflowError(f"{path}: image has shape {arr.shape}, no pixels; replace it with a valid image")
    try:
        if ndim == 3 and (arr.ndim == 2 or format_for(path).planar):
            # PNG and JPG hold only 2D images; an RGB one must not be read as a stack of 3-pixel-wide slices.
            raise _ShapeError(
                f"{path}: image has shape {arr.shape}, a 2D image",
                ", but PROBLEM.NDIM is 3D; set PROBLEM.NDIM: 2D or give 3D stacks",
            )
        return _to_channels_last(arr, axes, ndim, channels, path)
    except _ShapeError as exc:
        if expect is None:
            raise
        raise SegflowError(f"{exc.problem}; {expect}") from None


def read_mask(path: str | os.PathLike, ndim: int, integer: bool = True) -> np.ndarray:
    """Read an integer class mask as ``(y, x)`` / ``(z, y, x)``.

    Palette PNGs give their colour indices (VOC's class ids); RGB(A) masks whose colour channels are
    all equal are read as one channel; float masks are errors, since a class id must be an integer,
    unless ``integer`` is false (regression targets), where any finite value is read as float32.
    """
    path = Path(path)
    arr = read_image(path, ndim, palette_indices=True)
    if arr.shape[-1] in (3, 4) and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = arr[..., :1]
    if arr.shape[-1] != 1:
        raise SegflowError(f"{path}: mask has {arr.shape[-1]} channels; a mask must hold one class id per pixel")
    arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.floating):
        if not integer:
            if not np.all(np.isfinite(arr)):
                raise SegflowError(f"{path}: regression target holds NaN or infinite values; fix or remove it")
            return arr.astype(np.float32)
        check_class_ids(arr, path)
        arr = arr.astype(np.int64)
    return arr


def check_class_ids(mask: np.ndarray, path: str | os.PathLike) -> None:
    """A float mask (or a slab of one) must hold whole, finite class ids."""
    if np.issubdtype(mask.dtype, np.floating) and not (np.all(np.isfinite(mask)) and np.array_equal(mask, np.round(mask))):
        raise SegflowError(f"{path}: mask holds non-integer values ({mask.dtype}); masks must hold integer class ids 0..N_CLASSES-1")


def check_output_suffix(path: str | os.PathLike, labels: bool, ndim: int | None = None, option: str = "OUTPUT") -> None:
    """Refuse an output name whose format cannot hold the prediction exactly (``ndim`` None: not known yet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = format_for(path)
    if fmt is not None:
        why = fmt.cannot_hold(labels, ndim)
    else:
        why = f"segflow does not write '{suffix}' files" if suffix else "the name has no suffix to choose a format by"
    if why is None:
        return
    what = "class labels" if labels else "float probabilities or values"
    allowed = [s for f in FORMATS if f.cannot_hold(labels, ndim) is None for s in f.suffixes]
    raise SegflowError(f"{option} {path}: cannot hold {what}: {why}; name it with {', '.join(allowed)}")


def label_style(mask_path: str | os.PathLike | None) -> tuple[str, bool]:
    """The suffix and palette flag that label images should have to match a user's mask file.

    Palette PNG masks (VOC) give palette PNGs, other PNG (and JPEG) masks grayscale PNGs of class ids,
    NumPy masks ``.npy``, anything else (TIFF, no masks) TIFF, the format BiaPy's docs show.
    """
    fmt = None if mask_path is None else format_for(Path(mask_path))
    return (".tif", False) if fmt is None else fmt.label_suffix(Path(mask_path))


def write_output(
    path: str | os.PathLike,
    array: np.ndarray,
    ndim: int,
    reference: str | os.PathLike | None = None,
    palette: bool = False,
) -> None:
    """Write a prediction (channels last) in the format its suffix names, atomically.

    ``.tif``/``.tiff``: an ImageJ TIFF (see ``io.formats.tiff.write_tiff``); ``.npy``: the array, a single
    channel dropped; ``.png``: a 2D label image of class ids (grayscale, uint8 or uint16), or with ``palette``
    a palette PNG with VOC's colours. Call ``check_output_suffix`` first: other suffixes are refused here too.
    """
    path = Path(path)
    arr = np.asarray(array)
    check_output_suffix(path, not np.issubdtype(arr.dtype, np.floating), ndim)
    format_for(path).write(path, arr, ndim, None if reference is None else Path(reference), palette)
