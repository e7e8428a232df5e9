"""Training and validation patch datasets from the loaded samples."""

from __future__ import annotations

import numpy as np

from segflow.config.schema import Config
from segflow.data.augment import build_augmentation
from segflow.data.loading import TrainData, load_train_data
from segflow.data.patches import PatchDataset, fit_to_patch
from segflow.encodings import get_encoding

# Validation patches of data read patch by patch (larger than RAM): at most this many, evenly spaced over the grid.
LAZY_VAL_PATCHES = 256


def load_data(cfg: Config) -> TrainData:
    """The training and validation samples of ``cfg``, their masks checked against its encoding."""
    return load_train_data(cfg, get_encoding(cfg))


def make_datasets(cfg: Config, data: TrainData) -> tuple[PatchDataset, PatchDataset | None]:
    """Training patches (grid or random, augmented) and the fixed validation grid, each patch normalised and
    encoded as it is cut."""
    d = cfg.DATA
    patch = cfg.spatial_patch
    train, val = ([fit_to_patch(s, patch, d.REFLECT_TO_COMPLETE_SHAPE) for s in part] for part in (data.train, data.val))
    prepare = dict(normalizer=data.normalizer, encoding=get_encoding(cfg))
    transform = build_augmentation(cfg.AUGMENTOR, cfg.ndim)
    if transform is not None:
        transform.set_random_state(seed=cfg.SYSTEM.SEED)
    train_ds = PatchDataset(
        train,
        patch,
        mode="random" if d.EXTRACT_RANDOM_PATCH else "grid",
        overlap=d.TRAIN.OVERLAP,
        transform=transform,
        replicate=d.TRAIN.REPLICATE,
        prob_weights=(d.W_FOREGROUND, d.W_BACKGROUND) if d.PROBABILITY_MAP else None,
        class_balanced=d.CLASS_BALANCED_SAMPLING,
        ignore_id=cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID,
        **prepare,
    )
    train_ds.set_random_state(seed=cfg.SYSTEM.SEED)
    val_ds = PatchDataset(val, patch, mode="grid", overlap=d.VAL.OVERLAP, **prepare) if val else None
    lazy = any(not isinstance(v.image, np.ndarray) for v in val)
    if val_ds is not None and lazy and len(val_ds) > LAZY_VAL_PATCHES:
        # The grid of a held-out part of a huge volume is thousands of patches: validate on a fixed spread of them.
        grid = len(val_ds)
        val_ds.index = [val_ds.index[k] for k in np.linspace(0, grid - 1, LAZY_VAL_PATCHES).round().astype(int)]
        print(f"Validating on {LAZY_VAL_PATCHES} of the {grid} grid patches of the validation data read patch by patch "
              "(evenly spaced, the same every epoch)")
    return train_ds, val_ds
