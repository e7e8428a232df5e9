"""Prediction from a checkpoint: load it, normalise an image, run overlapping windows, blend them.

Windows are batched through the network and blended with a Gaussian weight (MONAI's
``sliding_window_inference``), so no seam shows between them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from segflow.data import Normalizer
from segflow.errors import SegflowError
from segflow.schema import Config


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a segflow checkpoint, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise SegflowError(f"checkpoint {path} not found; train first (TRAIN.ENABLE: true) or give PATHS.CHECKPOINT_FILE")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise SegflowError(f"checkpoint {path} cannot be read ({type(exc).__name__}); the file is truncated, corrupt or not a checkpoint") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt.get("hyper_parameters", {}):
        raise SegflowError(f"checkpoint {path} is not a segflow checkpoint (no model config inside); give a file segflow wrote")
    return ckpt


def overlap_fraction(cfg: Config, patch: tuple[int, ...]) -> list[float]:
    """Window overlap per axis from DATA.TEST.OVERLAP and DATA.TEST.PADDING (border pixels to discard)."""
    t = cfg.DATA.TEST
    out = []
    for i, p in enumerate(patch):
        ov = float(t.OVERLAP[i]) if i < len(t.OVERLAP) else 0.0
        pad = float(t.PADDING[i]) if i < len(t.PADDING) else 0.0
        out.append(min(0.9, max(ov, 2 * pad / p)))
    return out


@dataclass
class Predictor:
    """A trained network with its config and normaliser, ready to predict images of any size."""

    net: torch.nn.Module
    cfg: Config
    normalizer: Normalizer
    device: torch.device

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Predictor":
        """Everything needed comes from the checkpoint: architecture, classes, patch size, normalisation."""
        from segflow.training import SegModel

        ckpt = load_checkpoint(path)
        hp = ckpt["hyper_parameters"]
        model = SegModel(hp["config"], hp.get("class_counts"), hp.get("normalizer"))
        try:
            model.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as exc:
            raise SegflowError(f"checkpoint {path}: its weights do not fit the model its config describes ({str(exc).splitlines()[0]})") from None
        norm_state = hp.get("normalizer") or {}
        normalizer = Normalizer(model.cfg.DATA.NORMALIZATION, norm_state.get("mean"), norm_state.get("std"))
        device = torch.device(device)
        net = model.net.to(device).eval()
        return cls(net=net, cfg=model.cfg, normalizer=normalizer, device=device)

    @property
    def n_classes(self) -> int:
        return self.cfg.MODEL.N_CLASSES

    @torch.inference_mode()
    def predict(self, image: np.ndarray, overlap: list[float] | None = None, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities for a raw channels-last image: ``(..., 1)`` foreground for binary, ``(..., N)`` otherwise."""
        cfg = self.cfg
        x = torch.from_numpy(np.moveaxis(self.normalizer(image), -1, 0)[None].copy()).to(self.device)
        patch = cfg.spatial_patch
        if batch_size is None:
            batch_size = cfg.TEST.BATCH_SIZE if cfg.TEST.BATCH_SIZE > 0 else 2 * cfg.TRAIN.BATCH_SIZE
        logits = sliding_window_inference(
            x,
            roi_size=patch,
            sw_batch_size=batch_size,
            predictor=self.net,
            overlap=overlap if overlap is not None else overlap_fraction(cfg, patch),
            mode="gaussian",
            padding_mode="replicate",  # works for images of any size, unlike reflect
        )
        probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        return np.moveaxis(probs[0].float().cpu().numpy(), 0, -1)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Class ids from probabilities; binary uses the 0.5 threshold, the same one the IoU uses."""
        if probs.shape[-1] == 1:
            return (probs[..., 0] > 0.5).astype(np.uint8)
        return probs.argmax(-1).astype(np.uint8 if self.n_classes <= 256 else np.uint16)
