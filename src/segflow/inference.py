"""Prediction from a checkpoint: load it, then predict images of any size three ways.

- ``merge``: overlapping windows, batched through the network and blended with a Gaussian weight so no
  seam shows. The Gaussian weight is a product of 1D weights and the windows lie on a product grid, so the
  sum of weights at each pixel is a product of three 1D sums: the blend needs no full-size weight map.
  Memory is the output itself plus one batch of windows (the input is read window by window and may be a
  memory-mapped file).
- ``full``: the whole image in one pass, reflect-padded to a multiple of what the network needs.
- per patch (``patch_scores``): non-overlapping patches predicted alone, for BiaPy's per-patch IoU.

Test-time augmentation averages the 8 flips/rotations of the y-x plane (16 with z flips in 3D); it is
applied to each batch of windows, which keeps memory bounded too.
"""

from __future__ import annotations

import itertools
import sys
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segflow.data import Normalizer
from segflow.errors import SegflowError
from segflow.encodings import REGRESSION, encoding
from segflow.encodings import labels as decode_labels
from segflow.evaluation import Scorer
from segflow.models import divisor
from segflow.patches import axis_starts, grid_starts
from segflow.schema import Config

WindowFn = Callable[[torch.Tensor], torch.Tensor]


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


# What a checkpoint's network is built from: a config must agree on these to use its weights.
MODEL_KEYS = ("PROBLEM.NDIM", "PROBLEM.SEMANTIC_SEG.ENCODING", "MODEL.ARCHITECTURE", "MODEL.FEATURE_MAPS", "MODEL.N_CLASSES", "MODEL.Z_DOWN", "MODEL.KERNEL_SIZE", "MODEL.NORMALIZATION")


def _get(cfg: Config, key: str) -> object:
    value: object = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_model_matches(path: str | os.PathLike, ckpt: dict, cfg: Config) -> None:
    """Raise when ``cfg`` describes another network than the one checkpoint ``path`` holds."""
    saved = Config.model_validate(ckpt["hyper_parameters"]["config"])
    diffs = [(k, _get(saved, k), _get(cfg, k)) for k in MODEL_KEYS if _get(saved, k) != _get(cfg, k)]
    if saved.in_channels != cfg.in_channels:
        diffs.append(("DATA.PATCH_SIZE channels", saved.in_channels, cfg.in_channels))
    if diffs:
        shown = "; ".join(f"{k}={a} in the checkpoint, {b} in the config" for k, a, b in diffs)
        raise SegflowError(
            f"checkpoint {path}: its weights do not fit MODEL.* of this config ({shown}); "
            "set them as when the checkpoint was trained, or train a new model"
        )


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


def _outer(vectors: list[np.ndarray]) -> np.ndarray:
    out = vectors[0]
    for v in vectors[1:]:
        out = np.multiply.outer(out, v)
    return out


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


def predict_windows(
    image: np.ndarray,
    fn: WindowFn,
    patch: tuple[int, ...],
    overlap: list[float] | tuple[float, ...],
    batch_size: int,
    prepare: Callable[[np.ndarray], np.ndarray] = lambda w: w,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Blend ``fn`` over overlapping windows of a channels-last ``image``; return ``(K, *spatial)`` float32.

    ``prepare`` turns a raw window ``(*patch, C)`` into network input (normalisation), so the image
    itself is never copied whole. ``fn`` maps ``(B, C, *patch)`` to per-class scores ``(B, K, *patch)``.
    """
    spatial = tuple(image.shape[:-1])
    # An image smaller than the window is padded (it is small, so the copy is too).
    if any(s < p for s, p in zip(spatial, patch)):
        pad = [(0, max(0, p - s)) for s, p in zip(spatial, patch)]
        mode = "reflect" if all(s > max(pw) for s, (_, *pw) in zip(spatial, pad)) else "edge"
        padded = np.pad(np.asarray(image), pad + [(0, 0)], mode=mode)
        out = predict_windows(padded, fn, patch, overlap, batch_size, prepare, device, progress)
        return out[(slice(None), *(slice(0, s) for s in spatial))]
    starts = [axis_starts(s, p, ov) for s, p, ov in zip(spatial, patch, overlap)]
    weights_1d = [gaussian_1d(p) for p in patch]
    # Sum of the weights of all windows covering each position, one axis at a time.
    norms = []
    for s, p, st, w in zip(spatial, patch, starts, weights_1d):
        acc = np.zeros(s)
        for a in st:
            acc[a : a + p] += w
        norms.append(acc)
    weight = torch.as_tensor(_outer(weights_1d), dtype=torch.float32, device=device)
    corners = list(itertools.product(*starts))
    out: np.ndarray | None = None
    batches = range(0, len(corners), batch_size)
    for b in tqdm(batches, desc="windows", unit="batch", disable=not progress or not sys.stderr.isatty(), leave=False):
        chunk = corners[b : b + batch_size]
        regions = [tuple(slice(a, a + p) for a, p in zip(c, patch)) for c in chunk]
        windows = np.stack([prepare(np.asarray(image[r])) for r in regions])
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(windows, -1, 1), dtype=np.float32)).to(device)
        y = (fn(x).float() * weight).cpu().numpy()
        if out is None:
            out = np.zeros((y.shape[1], *spatial), dtype=np.float32)
        for r, yw in zip(regions, y):
            out[(slice(None), *r)] += yw
    # Normalise slab by slab along the first axis, so no full-size temporary is made.
    rest = _outer(norms[1:]).astype(np.float32) if len(norms) > 1 else np.float32(1)
    for i, n0 in enumerate(norms[0]):
        out[:, i] /= np.float32(n0) * rest
    return out


def activate(logits: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Network outputs to probabilities (sigmoid per channel, or softmax) or regression values."""
    if encoding(cfg) in REGRESSION:
        return torch.relu(logits) if cfg.PROBLEM.SEMANTIC_SEG.OUTPUT_ACTIVATION == "relu" else logits
    return torch.sigmoid(logits) if logits.shape[1] == 1 or encoding(cfg) in ("bitmask", "double_membrane") else torch.softmax(logits, dim=1)


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch API: absent = no
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(setting: str, device_type: str) -> torch.dtype | None:
    """The autocast type for TRAIN.PRECISION on a device; None = full fp32.

    'auto' is bf16 on CPUs with native bfloat16: there it trains and predicts about twice as fast as
    fp32 with the same test IoU (bench/README.md); fp32 on other CPUs.
    """
    if setting == "bf16":
        return torch.bfloat16
    if setting == "32":
        return None
    if device_type != "cuda":
        return torch.bfloat16 if setting == "auto" and cpu_bf16_native() else None
    return torch.bfloat16 if setting == "auto" and torch.cuda.is_bf16_supported() else torch.float16


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


@dataclass
class Predictor:
    """A trained network with its config and normaliser, ready to predict images of any size."""

    net: torch.nn.Module
    cfg: Config
    normalizer: Normalizer
    device: torch.device
    # Predict in the precision the model was trained in (TRAIN.PRECISION), where the device has it.
    autocast: torch.dtype | None = None

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
        normalizer = Normalizer.from_state(model.cfg.DATA.NORMALIZATION, hp.get("normalizer"))
        device = torch.device(device)
        net = model.net.to(device).eval()  # channels-last, as build_model makes it
        return cls(net=net, cfg=model.cfg, normalizer=normalizer, device=device, autocast=autocast_dtype(model.cfg.TRAIN.PRECISION, device.type))

    @property
    def n_classes(self) -> int:
        return self.cfg.MODEL.N_CLASSES

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            logits = self.net(x).float()
        return activate(logits, self.cfg)

    def window_fn(self, tta: bool = False) -> WindowFn:
        """Windows in, class probabilities out; averaged over flips and rotations with ``tta``."""
        return tta_views(self._probabilities, self.cfg.ndim) if tta else self._probabilities

    def expects(self) -> str:
        """What this model takes, e.g. "this model is 2D with 1 channel; give a (y, x) image"."""
        c = self.cfg.in_channels
        axes = ("(z, y, x" if self.cfg.ndim == 3 else "(y, x") + (f", {c})" if c > 1 else ")")
        kind = "stack" if self.cfg.ndim == 3 else "image"
        return f"this model is {self.cfg.PROBLEM.NDIM} with {c} channel{'s' if c > 1 else ''}; give a {axes} {kind}"

    def as_image(self, image: np.ndarray, source: str | os.PathLike | None = None) -> np.ndarray:
        """Check a raw image and give it channels last: ``(y, x)`` / ``(z, y, x)`` gain a channel axis.

        Refused, naming ``source`` (the file) when given: a shape or channel count the model does not take,
        an empty image (an axis of size 0), a non-numeric type, NaN or infinite values.
        """
        where = f"{source}: image" if source is not None else "image"
        if not hasattr(image, "ndim"):
            image = np.asarray(image)
        dtype = np.dtype(image.dtype)
        if not (np.issubdtype(dtype, np.bool_) or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise SegflowError(f"{where} has pixel type {dtype}, not supported; give integer or float pixels")
        if image.ndim == self.cfg.ndim:
            image = image[..., None]
        if image.ndim != self.cfg.ndim + 1 or image.shape[-1] != self.cfg.in_channels:
            raise SegflowError(f"{where} of shape {tuple(image.shape)} does not fit: {self.expects()}")
        if 0 in image.shape:
            raise SegflowError(
                f"{where} of shape {tuple(image.shape)} has no pixels (an axis of size 0); give a non-empty image"
            )
        if np.issubdtype(dtype, np.floating) and not _all_finite(image):
            raise SegflowError(
                f"{where} holds NaN or infinite values; replace them (e.g. with np.nan_to_num) before predicting"
            )
        return image

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
    ) -> np.ndarray:
        """Class probabilities for a raw image, channels last: ``(..., 1)`` foreground for binary, ``(..., N)`` otherwise.

        ``source`` (the image's file) is named in the errors about the image.
        """
        image = self.as_image(image, source)
        if overlap is not None and (len(overlap) != self.cfg.ndim or not all(0 <= ov < 1 for ov in overlap)):
            raise SegflowError(
                f"overlap {list(overlap)}: give {self.cfg.ndim} fractions in [0, 1), one per spatial axis"
            )
        if batch_size is not None and batch_size <= 0:
            raise SegflowError(f"batch_size {batch_size}: must be positive")
        stats = self.normalizer.stats(image, "image" if source is None else str(source))
        fn = self.window_fn(tta)
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
            )
        return np.moveaxis(out, 0, -1)

    def _full(self, image: np.ndarray, stats: dict, fn: WindowFn) -> np.ndarray:
        """The whole image in one pass, reflect-padded up to a multiple of the network's divisor."""
        spatial = image.shape[:-1]
        div = divisor(self.cfg)
        pad = [(0, -s % d) for s, d in zip(spatial, div)]
        x = self.normalizer.apply(np.asarray(image), stats)
        x = np.pad(x, pad + [(0, 0)], mode="reflect" if all(s > p for s, (_, p) in zip(spatial, pad)) else "edge")
        t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)[None], dtype=np.float32)).to(self.device)
        y = fn(t)[0].float().cpu().numpy()
        return y[(slice(None), *(slice(0, s) for s in spatial))]

    def labels(self, probs: np.ndarray) -> np.ndarray | None:
        """Label image from channels-last outputs, decoded as the model's encoding says (None for 'linear')."""
        return decode_labels(probs, self.cfg)

    def predict_labels(self, image: np.ndarray, **kwargs: object) -> np.ndarray:
        """Class ids for a raw image (see ``predict`` for the options)."""
        return self.labels(self.predict(image, **kwargs))

    @torch.inference_mode()
    def patch_scores(self, image: np.ndarray, mask: np.ndarray, batch_size: int = 8, tta: bool = False) -> list[dict]:
        """BiaPy's per-patch evaluation: non-overlapping patches predicted alone, scores per patch."""
        image = self.as_image(image)
        stats = self.normalizer.stats(image)
        patch = self.cfg.spatial_patch
        if any(s < p for s, p in zip(image.shape[:-1], patch)):
            return []
        fn = self.window_fn(tta)
        corners = grid_starts(image.shape[:-1], patch)
        scorer = Scorer(self.cfg)
        for b in range(0, len(corners), batch_size):
            regions = [tuple(slice(a, a + p) for a, p in zip(c, patch)) for c in corners[b : b + batch_size]]
            windows = np.stack([self.normalizer.apply(np.asarray(image[r]), stats) for r in regions])
            x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(windows, -1, 1), dtype=np.float32)).to(self.device)
            probs = np.moveaxis(fn(x).float().cpu().numpy(), 1, -1)
            for r, p in zip(regions, probs):
                scorer.add("patch", p, self.labels(p), mask[r])
        return scorer.rows


def _all_finite(image: np.ndarray) -> bool:
    """``np.isfinite(image).all()`` a slab of the first axis at a time: no image-sized temporary (memory maps)."""
    step = max(1, 2**24 // max(1, int(np.prod(image.shape[1:]))))
    return all(bool(np.isfinite(image[i : i + step]).all()) for i in range(0, image.shape[0], step))


def load_model(path: str | os.PathLike, device: str | None = None) -> Predictor:
    """Load a checkpoint for prediction from Python: ``segflow.load_model(path).predict(array)``.

    ``device`` defaults to the first CUDA GPU when there is one, else the CPU.
    """
    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    return Predictor.from_checkpoint(path, device)
