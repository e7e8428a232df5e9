"""The suite's workload: BiaPy's template sizes, the training config, synthetic data, and train() with callbacks.

Data is made on first use in the work folder (so a section run alone makes only what it needs, and
``--keep`` reuses it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Context

FEATURE_MAPS = [16, 32, 64, 128, 256]
BATCH = {2: 6, 3: 4}  # BiaPy's 2D and 3D templates
PATCH = {2: (256, 256), 3: (64, 64, 64)}
# Synthetic training images: how many, and their shape (also the tile of the prediction mosaics).
TRAIN_IMAGES = {
    "full": {2: (6, (512, 512)), 3: (2, (64, 128, 128))},
    "quick": {2: (3, (512, 512)), 3: (1, (64, 128, 128))},
}


def train_tree(ndim: int, data: Path, precision: str = "auto", workers: int = -1, epochs: int = 4) -> dict:
    """The training benchmark's config: BiaPy's template (U-Net 16-256, ADAMW + one-cycle, flips and free
    rotations, z flips in 3D), validation off so that an epoch is training alone. ``precision`` 'auto' and
    ``workers`` -1 are segflow's defaults."""
    aug = {"ENABLE": True, "RANDOM_ROT": True, "VFLIP": True, "HFLIP": True, "AUG_SAMPLES": False}
    if ndim == 3:
        aug["ZFLIP"] = True
    return {
        "SYSTEM": {"NUM_WORKERS": workers, "SEED": 0},
        "PROBLEM": {"NDIM": f"{ndim}D"},
        "DATA": {
            "PATCH_SIZE": str((*PATCH[ndim], 1)),
            "NORMALIZATION": {"TYPE": "div"},
            "TRAIN": {"PATH": str(data / "train" / "x"), "GT_PATH": str(data / "train" / "y")},
            "VAL": {"SPLIT_TRAIN": 0.0},
        },
        "AUGMENTOR": aug,
        "MODEL": {"ARCHITECTURE": "unet", "FEATURE_MAPS": FEATURE_MAPS, "N_CLASSES": 2},
        "LOSS": {"TYPE": "CE"},
        "TRAIN": {
            "ENABLE": True,
            "OPTIMIZER": "ADAMW",
            "LR": 1e-3,
            "BATCH_SIZE": BATCH[ndim],
            "EPOCHS": epochs,
            "PRECISION": precision,
            "LR_SCHEDULER": {"NAME": "onecycle"},
        },
    }


def train_data(ctx: Context, ndim: int) -> Path:
    """The synthetic training set of this size (``train/{x,y}``, ``test/{x,y}``), made on first use."""
    from segflow.data.synthetic import make_dataset

    root = ctx.work / f"data{ndim}d"
    if not (root / "test").is_dir():
        n, shape = TRAIN_IMAGES[ctx.mode][ndim]
        make_dataset(root, ndim=ndim, n_train=n, n_test=2, shape=shape, seed=ndim)
    return root


def mosaic(ctx: Context, name: str, ndim: int, shape: tuple[int, ...], seed: int) -> tuple[str, str]:
    """A uint8 image of ``shape`` and its mask (``.npy``), tiled with training-sized synthetic images so that
    objects have the training scale; made on first use. Returns the two paths."""
    from segflow.data.synthetic import synthetic_pair

    image_path, mask_path = ctx.work / f"{name}{ndim}d.npy", ctx.work / f"{name}{ndim}d_mask.npy"
    if not mask_path.is_file():
        tile = TRAIN_IMAGES[ctx.mode][ndim][1]
        rng = np.random.default_rng([seed, ndim])
        image, mask = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
        for corner in np.ndindex(*[-(-s // t) for s, t in zip(shape, tile)]):
            region = tuple(slice(c * t, min((c + 1) * t, s)) for c, t, s in zip(corner, tile, shape))
            x, y = synthetic_pair(tile, rng)
            crop = tuple(slice(0, r.stop - r.start) for r in region)
            image[region], mask[region] = x[crop], y[crop]
        np.save(image_path, image)
        np.save(mask_path, mask)
    return str(image_path), str(mask_path)


def checkpoint_path(ctx: Context, ndim: int) -> Path:
    """Where the training section saves the plain loop's trained weights (a segflow checkpoint)."""
    return ctx.work / f"model{ndim}d.ckpt"


def model_checkpoint(ctx: Context, ndim: int) -> str:
    """The checkpoint the prediction sections use: the plain loop's weights saved by the training section, or,
    when that did not run (a section run alone) or failed, the untrained network (timing only)."""
    import torch

    from segflow.config.loader import build_config
    from segflow.training.module import SegModel

    path = checkpoint_path(ctx, ndim)
    if not path.is_file():
        cfg = build_config(train_tree(ndim, ctx.work / f"data{ndim}d"))[0]
        torch.manual_seed(0)
        model = SegModel(cfg.model_dump(mode="json"))
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return str(path)


def run_train(a: dict, callbacks: Sequence[Any]) -> Path:
    """``segflow.training.train`` as ``segflow run`` calls it, on the config of ``a`` (ndim, data, epochs,
    precision, workers), with the bench's Lightning ``callbacks``; returns the last checkpoint's path."""
    import segflow.training.trainer as training
    from segflow.config.loader import build_config
    from segflow.io.paths import RunPaths
    from segflow.report.charts import Charts

    cfg = build_config(
        train_tree(a["ndim"], Path(a["data"]), a.get("precision", "auto"), a.get("workers", -1), a["epochs"])
    )[0]
    paths = RunPaths(Path(a["dir"]), "bench", "1")
    training.train(cfg, paths, gpu="cpu", callbacks=[Charts(paths), *callbacks])
    return paths.checkpoint("last")


def on_train_start(fn: Callable[[Any, Any], bool | None]):
    """A Lightning callback that calls ``fn(trainer, model)`` when training starts (the loader is then
    ``trainer.train_dataloader``); when ``fn`` returns True, training stops before its first epoch."""
    import lightning

    class Probe(lightning.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            if fn(trainer, pl_module):
                trainer.should_stop = True

    return Probe()


def evaluate(predict: Callable[[np.ndarray], np.ndarray], data: Path) -> float:
    """Mean foreground IoU over the synthetic test images of ``data``; ``predict``: image -> probabilities."""
    import tifffile

    from bench.harness import iou

    scores = [
        iou(predict(tifffile.imread(f)) > 0.5, tifffile.imread(data / "test" / "y" / f.name))
        for f in sorted((data / "test" / "x").iterdir())
    ]
    return float(np.mean(scores))
