"""What every network family of ``MODEL.ARCHITECTURE`` provides: the network, its downsampling, its rules.

One family is one object (``Architecture``) in one module of this package; ``models.networks`` chooses it by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from segflow.config.schema import Config
from segflow.encodings import get_encoding
from segflow.errors import SegflowError

Steps = list[tuple[int, ...]]


@dataclass(frozen=True)
class Architecture:
    """A network family.

    ``build(cfg)`` returns the network: input ``(N, C, *spatial)`` of normalised images, output the logits
    ``(N, out_channels, *spatial)`` (no final activation). ``steps(cfg)`` is its downsampling, one tuple of
    factors per spatial axis for each level, so every input size must be a multiple of their product.
    ``check(cfg)`` raises a ``SegflowError`` for a config the family cannot build (before any data is read).
    ``fixed_size``: the network takes only inputs of exactly ``DATA.PATCH_SIZE`` (a position embedding).
    """

    build: Callable[[Config], torch.nn.Module]
    steps: Callable[[Config], Steps]
    check: Callable[[Config], None] = lambda cfg: None
    fixed_size: bool = False


def out_channels(cfg: Config) -> int:
    """The network's output channels: what the encoding decodes (1 for two classes, else N_CLASSES, ...)."""
    return get_encoding(cfg).out_channels()


def dropout(cfg: Config) -> float:
    """MONAI's networks take one dropout rate; the largest of BiaPy's per-level values is used."""
    return max(cfg.MODEL.DROPOUT_VALUES, default=0.0)


def halving_steps(cfg: Config) -> Steps:
    """Halve every axis at each level below the first; in 3D ``MODEL.Z_DOWN`` (1 or 2 per level) sets z's factor."""
    levels = len(cfg.MODEL.FEATURE_MAPS) - 1
    if cfg.ndim == 3 and cfg.MODEL.Z_DOWN:
        return [(int(z), 2, 2) for z in cfg.MODEL.Z_DOWN]
    return [(2,) * cfg.ndim] * levels


def refuse(cfg: Config, what: str) -> None:
    """One line for a MODEL.* value the architecture cannot build."""
    raise SegflowError(f"MODEL.ARCHITECTURE {cfg.MODEL.ARCHITECTURE}: {what}")
