"""Overlapping windows blended with a separable Gaussian weight, test-time augmentation views, window batch sizes."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from segflow.config.schema import Config
from segflow.data.patches import axis_starts, pad_to
from segflow.inference.sinks import ArraySink, Sink, outer_product

WindowFn = Callable[[torch.Tensor], torch.Tensor]


def overlap_fraction(cfg: Config, patch: tuple[int, ...]) -> list[float]:
    """Window overlap per axis from DATA.TEST.OVERLAP and DATA.TEST.PADDING (border pixels to discard)."""
    t = cfg.DATA.TEST
    out = []
    for i, p in enumerate(patch):
        ov = float(t.OVERLAP[i]) if i < len(t.OVERLAP) else 0.0
        pad = float(t.PADDING[i]) if i < len(t.PADDING) else 0.0
        out.append(min(0.9, max(ov, 2 * pad / p)))
    return out


def gaussian_1d(size: int, sigma_scale: float = 0.125) -> np.ndarray:
    """A window's blending weight along one axis (MONAI's and nnU-Net's sigma = size / 8), never zero."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (x / max(size * sigma_scale, 1e-6)) ** 2)
    return np.maximum(g / g.max(), 1e-3)


def tta_views(fn: WindowFn, ndim: int) -> WindowFn:
    """Average ``fn`` over the 4 rotations x 2 flips of the y-x plane (x 2 z flips in 3D)."""

    def averaged(x: torch.Tensor) -> torch.Tensor:
        total = None
        z_flips = (False, True) if ndim == 3 else (False,)
        for k, flip_x, flip_z in itertools.product(range(4), (False, True), z_flips):
            dims = ([-1] if flip_x else []) + ([-3] if flip_z else [])
            v = torch.rot90(x, k, dims=(-2, -1))
            v = torch.flip(v, dims) if dims else v
            y = fn(v)
            y = torch.flip(y, dims) if dims else y
            y = torch.rot90(y, -k, dims=(-2, -1))
            total = y if total is None else total + y
        return total / (8 * len(z_flips))

    return averaged


def stack_windows(
    image: np.ndarray,
    regions: list[tuple[slice, ...]],
    prepare: Callable[[np.ndarray], np.ndarray],
    device: torch.device | str,
) -> torch.Tensor:
    """Network input ``(B, C, *window)`` float32 on ``device`` from the ``regions`` of a channels-last ``image``.

    ``prepare`` turns each raw window ``(*window, C)`` into network input (normalisation).
    """
    windows = np.stack([prepare(np.asarray(image[r])) for r in regions])
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(windows, -1, 1), dtype=np.float32)).to(device)


def predict_windows(
    image: np.ndarray,
    fn: WindowFn,
    patch: tuple[int, ...],
    overlap: list[float] | tuple[float, ...],
    batch_size: int,
    prepare: Callable[[np.ndarray], np.ndarray] = lambda w: w,
    device: torch.device | str = "cpu",
    progress: bool = False,
    sink: Sink | None = None,
    core: tuple[slice, ...] | None = None,
) -> object:
    """Blend ``fn`` over overlapping windows of a channels-last ``image`` into ``sink``; return its result.

    The default sink (``ArraySink``) gives a ``(K, *spatial)`` float32 array. ``prepare`` turns a raw
    window ``(*patch, C)`` into network input (normalisation), so the image itself is never copied whole.
    ``fn`` maps ``(B, C, *patch)`` to per-class scores ``(B, K, *patch)``.

    ``core`` (one slice with start and stop per spatial axis; None: the whole image) restricts the output to that
    region: only the windows of the whole image's grid that touch it are predicted, and each pixel gets the same
    windows, weights and normalisation as in the whole image's prediction, so cores predicted apart and put
    together are the whole prediction, with no seam (the output is ``(K, *core)``).
    """
    sink = ArraySink() if sink is None else sink
    spatial = tuple(image.shape[:-1])
    core = core or tuple(slice(0, s) for s in spatial)
    # An image smaller than the window is padded (it is small, so the copy is too); what falls in the
    # padding is not written to the sink.
    if any(s < p for s, p in zip(spatial, patch)):
        image = pad_to(np.asarray(image), patch)
    padded = tuple(image.shape[:-1])
    starts = [axis_starts(s, p, ov) for s, p, ov in zip(padded, patch, overlap)]
    weights_1d = [gaussian_1d(p) for p in patch]
    # Sum of the weights of all windows covering each position, one axis at a time.
    norms = []
    for s, p, st, w in zip(padded, patch, starts, weights_1d):
        acc = np.zeros(s)
        for a in st:
            acc[a : a + p] += w
        norms.append(acc)
    starts = [[a for a in st if a < c.stop and a + p > c.start] for st, p, c in zip(starts, patch, core)]
    weight = torch.as_tensor(outer_product(weights_1d), dtype=torch.float32, device=device)
    corners = list(itertools.product(*starts))
    batches = range(0, len(corners), batch_size)
    for b in tqdm(batches, desc="windows", unit="batch", disable=not progress or not sys.stderr.isatty(), leave=False):
        regions = [tuple(slice(a, a + p) for a, p in zip(c, patch)) for c in corners[b : b + batch_size]]
        y = (fn(stack_windows(image, regions, prepare, device)).float() * weight).cpu().numpy()
        if b == 0:
            sink.allocate(y.shape[1], tuple(c.stop - c.start for c in core))
        for r, yw in zip(regions, y):
            inside = [(max(sl.start, c.start), min(sl.stop, c.stop)) for sl, c in zip(r, core)]
            into = tuple(slice(lo - c.start, hi - c.start) for (lo, hi), c in zip(inside, core))
            sink.add(into, yw[(slice(None), *(slice(lo - sl.start, hi - sl.start) for (lo, hi), sl in zip(inside, r)))])
    sink.finish([n[c] for n, c in zip(norms, core)])
    return sink.result()


# On the CPU a batch of windows this many pixels/voxels was the fastest (bench/README.md: larger batches
# leave the caches, smaller ones the cores idle); a GPU wants larger batches.
CPU_WINDOW_BATCH_VOXELS = 2**18


def window_batch(cfg: Config, device: torch.device) -> int:
    """Windows per forward pass: TEST.BATCH_SIZE, or when it is -1 the device's best (see above)."""
    if cfg.TEST.BATCH_SIZE > 0:
        return cfg.TEST.BATCH_SIZE
    if device.type == "cuda":
        return 2 * cfg.TRAIN.BATCH_SIZE
    return max(1, CPU_WINDOW_BATCH_VOXELS // int(np.prod(cfg.spatial_patch)))
