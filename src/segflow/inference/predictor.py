"""Prediction from a checkpoint: load it, then predict images of any size three ways.

- ``merge``: overlapping windows, batched through the network and blended with a Gaussian weight so no
  seam shows. The Gaussian weight is a product of 1D weights and the windows lie on a product grid, so the
  sum of weights at each pixel is a product of three 1D sums: the blend needs no full-size weight map.
  Memory is the output itself plus one batch of windows (the input is read window by window and may be a
  memory-mapped file).
- ``full``: the whole image in one pass, reflect-padded to a multiple of what the network needs.
- per patch (``predict_patches``): non-overlapping patches predicted alone, for BiaPy's per-patch IoU.

Test-time augmentation averages the 8 flips/rotations of the y-x plane (16 with z flips in 3D); it is
applied to each batch of windows, which keeps memory bounded too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from segflow.checkpoint import load_network
from segflow.config.schema import Config
from segflow.data.normalize import Normalizer
from segflow.data.patches import grid_starts, pad_to
from segflow.encodings import get_encoding
from segflow.errors import SegflowError
from segflow.inference.takes_images import TakesImages
from segflow.inference.windows import (
    WindowFn,
    overlap_fraction,
    predict_windows,
    stack_windows,
    tta_views,
    window_batch,
)
from segflow.models.networks import divisor
from segflow.runtime import autocast_dtype, resolve_devices, torch_device


@dataclass
class Predictor(TakesImages):
    """A trained network with its config and normaliser, ready to predict images of any size."""

    net: torch.nn.Module
    cfg: Config
    normalizer: Normalizer
    device: torch.device
    # Predict in the precision the model was trained in (TRAIN.PRECISION), where the device has it.
    autocast: torch.dtype | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor:
        """Everything needed comes from the checkpoint: architecture, classes, patch size, normalisation."""
        net, cfg, hp = load_network(path)
        normalizer = Normalizer.from_state(cfg.DATA.NORMALIZATION, hp.get("normalizer"))
        device = torch.device(device)
        net = net.to(device)  # channels-last, as build_model makes it
        return cls(net=net, cfg=cfg, normalizer=normalizer, device=device, autocast=autocast_dtype(cfg.TRAIN.PRECISION, device.type))

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            logits = self.net(x).float()
        return get_encoding(self.cfg).activate(logits)

    def window_fn(self, tta: bool = False) -> WindowFn:
        """Windows in, class probabilities out; averaged over flips and rotations with ``tta``."""
        return tta_views(self._probabilities, self.cfg.ndim) if tta else self._probabilities

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray,
        overlap: list[float] | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        full_image: bool = False,
        progress: bool = False,
        source: str | os.PathLike | None = None,
        core: tuple[slice, ...] | None = None,
        stats: dict | None = None,
    ) -> np.ndarray:
        """Class probabilities for a raw image, channels last: ``(..., 1)`` foreground for binary, ``(..., N)`` otherwise.

        ``source`` (the image's file) is named in the errors about the image. ``core`` (a region of the image, one
        slice per spatial axis) predicts only that region, with the values the whole image's prediction has there
        (``windows.predict_windows``); ``stats`` are the image's normalisation statistics (``Normalizer.stats``),
        measured once for all the cores of a volume.
        """
        image = self.as_image(image, source, finite=core is None)
        if overlap is not None and (len(overlap) != self.cfg.ndim or not all(0 <= ov < 1 for ov in overlap)):
            raise SegflowError(
                f"overlap {list(overlap)}: give {self.cfg.ndim} fractions in [0, 1), one per spatial axis"
            )
        if batch_size is not None and batch_size <= 0:
            raise SegflowError(f"batch_size {batch_size}: must be positive")
        stats = stats if stats is not None else self.normalizer.stats(image, "image" if source is None else str(source))
        fn = self.window_fn(tta)
        if full_image and core is not None:
            raise SegflowError("a whole-image pass (TEST.FULL_IMG) predicts no part of an image alone; predict with windows")
        if full_image:
            out = self._full(image, stats, fn)
        else:
            patch = self.cfg.spatial_patch
            if batch_size is None:
                batch_size = window_batch(self.cfg, self.device)
            out = predict_windows(
                image,
                fn,
                patch,
                overlap if overlap is not None else overlap_fraction(self.cfg, patch),
                batch_size,
                prepare=lambda w: self.normalizer.apply(w, stats),
                device=self.device,
                progress=progress,
                core=core,
            )
        return np.moveaxis(out, 0, -1)

    def _full(self, image: np.ndarray, stats: dict, fn: WindowFn) -> np.ndarray:
        """The whole image in one pass, reflect-padded up to a multiple of the network's divisor."""
        spatial = image.shape[:-1]
        x = self.normalizer.apply(np.asarray(image), stats)
        x = pad_to(x, tuple(s + -s % d for s, d in zip(spatial, divisor(self.cfg))))
        whole = tuple(slice(None) for _ in spatial)
        y = fn(stack_windows(x, [whole], lambda w: w, self.device))[0].float().cpu().numpy()
        return y[(slice(None), *(slice(0, s) for s in spatial))]

    def predict_labels(self, image: np.ndarray, **kwargs: object) -> np.ndarray:
        """Class ids for a raw image (see ``predict`` for the options)."""
        return self.labels(self.predict(image, **kwargs))

    @torch.inference_mode()
    def predict_patches(
        self, image: np.ndarray, batch_size: int = 8, tta: bool = False
    ) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
        """BiaPy's per-patch prediction: the non-overlapping grid of ``DATA.PATCH_SIZE`` patches, each predicted
        alone; yields each patch's region and its activated outputs ``(*patch, C)`` (none for a smaller image)."""
        image = self.as_image(image)
        stats = self.normalizer.stats(image)
        patch = self.cfg.spatial_patch
        if any(s < p for s, p in zip(image.shape[:-1], patch)):
            return
        fn = self.window_fn(tta)
        corners = grid_starts(image.shape[:-1], patch)
        for b in range(0, len(corners), batch_size):
            regions = [tuple(slice(a, a + p) for a, p in zip(c, patch)) for c in corners[b : b + batch_size]]
            x = stack_windows(image, regions, lambda w: self.normalizer.apply(w, stats), self.device)
            yield from zip(regions, np.moveaxis(fn(x).float().cpu().numpy(), 1, -1))


def load_model(path: str | os.PathLike, device: str | None = None) -> Predictor:
    """Load a checkpoint for prediction from Python: ``segflow.load_model(path).predict(array)``.

    ``device`` defaults to the first CUDA GPU when there is one, else the CPU.
    """
    device = device or torch_device(*resolve_devices(None, "auto"))
    return Predictor.from_checkpoint(path, device)
