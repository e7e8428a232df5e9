"""The training data: samples from their source, the validation split, and the normaliser fitted on the
training part."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from segflow.config.schema import Config
from segflow.data.normalize import Normalizer
from segflow.data.pairs import MaskRules
from segflow.data.sources import Sample, open_source
from segflow.errors import SegflowError
from segflow.io.lazy import first_rows


@dataclass
class TrainData:
    """Training and validation samples (raw images with their statistics) plus the fitted normaliser."""

    train: list[Sample]
    val: list[Sample]
    normalizer: Normalizer

    def normalized(self, sample: Sample) -> np.ndarray:
        """The whole image of ``sample`` as the network sees it, float32 ``(*spatial, C)``."""
        return self.normalizer.apply(sample.image, sample.stats)


def n_val_images(n_images: int, fraction: float) -> int:
    """Validation images held out of ``n_images`` (at least one, never all); 0 for a single image."""
    if fraction <= 0 or n_images < 2:
        return 0
    return min(n_images - 1, max(1, round(n_images * fraction)))


def split_train_val(samples: list[Sample], fraction: float, shuffle: bool, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the images; with one image, hold out the end of its first axis."""
    if fraction <= 0:
        return samples, []
    if len(samples) == 1:
        s = samples[0]
        n = s.image.shape[0]
        cut = n - max(1, round(n * fraction))
        if cut < 1:
            raise SegflowError(f"{s.path}: too small along its first axis ({n}) to hold out DATA.VAL.SPLIT_TRAIN={fraction}")
        head = Sample(s.name, first_rows(s.image, 0, cut), None if s.mask is None else first_rows(s.mask, 0, cut), s.path, s.mask_path)
        tail = Sample(s.name + "_val", first_rows(s.image, cut, n), None if s.mask is None else first_rows(s.mask, cut, n), s.path, s.mask_path)
        return [head], [tail]
    order = np.arange(len(samples))
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    n_val = n_val_images(len(samples), fraction)
    # Hold out the end of the (shuffled) list, as BiaPy's train_test_split does and as the single-image
    # case holds out the end of the image.
    val_idx = set(order[len(order) - n_val :].tolist())
    return [s for i, s in enumerate(samples) if i not in val_idx], [s for i, s in enumerate(samples) if i in val_idx]


def load_train_data(cfg: Config, rules: MaskRules) -> TrainData:
    """Read and check the training images (their masks against ``rules``, the encoding), split off the
    validation set, and fit the normaliser on the training part only (no validation pixels leak into it).
    Images stay raw: each sample carries its normalisation statistics, applied patch by patch."""
    d = cfg.DATA
    checked = rules if d.TRAIN.CHECK_DATA else None
    raw = open_source(cfg, d.TRAIN.PATH, "train").samples(cfg, d.TRAIN.PATH, d.TRAIN.GT_PATH, "train", checked)
    if d.VAL.FROM_TRAIN:
        train, val = split_train_val(raw, d.VAL.SPLIT_TRAIN, d.VAL.RANDOM, cfg.SYSTEM.SEED)
    else:
        train = raw
        val = open_source(cfg, d.VAL.PATH, "validation").samples(cfg, d.VAL.PATH, d.VAL.GT_PATH, "validation", checked)
    normalizer = Normalizer(d.NORMALIZATION)
    normalizer.fit([s.image for s in train])
    train, val = ([replace(s, stats=normalizer.stats(s.image, str(s.path))) for s in part] for part in (train, val))
    return TrainData(train=train, val=val, normalizer=normalizer)
