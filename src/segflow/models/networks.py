"""The network ``MODEL.ARCHITECTURE`` names, and what follows from its downsampling: the size every input must be a
multiple of, and the patch's size at each level. Each family is an ``Architecture`` in its own module."""

from __future__ import annotations

import math

import torch

from segflow.config.schema import Config
from segflow.errors import SegflowError
from segflow.models.architecture import Architecture, Steps
from segflow.models.monai_unets import ATTENTION_UNET, UNET
from segflow.models.segresnet import SEGRESNET

ARCHITECTURES: dict[str, Architecture] = {
    "unet": UNET,
    "resunet": UNET,
    "attention_unet": ATTENTION_UNET,
    "segresnet": SEGRESNET,
}


def architecture(cfg: Config) -> Architecture:
    """The family of ``MODEL.ARCHITECTURE`` (the schema admits only the names of ``ARCHITECTURES``)."""
    return ARCHITECTURES[cfg.MODEL.ARCHITECTURE]


def strides(cfg: Config) -> Steps:
    """Downsampling per level, one factor per spatial axis."""
    return architecture(cfg).steps(cfg)


def divisor(cfg: Config) -> tuple[int, ...]:
    """What every input size must be a multiple of, per spatial axis."""
    return tuple(math.prod(axis) for axis in zip(*strides(cfg)))


def level_shapes(cfg: Config) -> list[tuple[int, ...]]:
    """The patch's spatial size at each level of the network, from the input down to the bottleneck."""
    shapes = [tuple(cfg.spatial_patch)]
    for step in strides(cfg):
        shapes.append(tuple(size // v for size, v in zip(shapes[-1], step)))
    return shapes


def check_model(cfg: Config) -> None:
    """The architecture's own rules, and a patch size its downsampling divides evenly: one line each."""
    architecture(cfg).check(cfg)
    div = divisor(cfg)
    bad = [(p, d) for p, d in zip(cfg.spatial_patch, div) if p % d]
    if bad:
        fixed = tuple(max(d, round(p / d) * d) for p, d in zip(cfg.spatial_patch, div))
        raise SegflowError(
            f"DATA.PATCH_SIZE {tuple(cfg.DATA.PATCH_SIZE)}: each spatial size must be a multiple of {div} for "
            f"{cfg.MODEL.ARCHITECTURE} with {len(cfg.MODEL.FEATURE_MAPS)} MODEL.FEATURE_MAPS levels; use e.g. "
            f"{fixed + (cfg.in_channels,)} or fewer levels"
        )
    if architecture(cfg).fixed_size and cfg.TEST.FULL_IMG:
        raise SegflowError(f"TEST.FULL_IMG: {cfg.MODEL.ARCHITECTURE} takes only inputs of DATA.PATCH_SIZE; set TEST.FULL_IMG false (windows of the patch size)")


def memory_format(ndim: int) -> torch.memory_format:
    """Channels-last layout: faster convolutions with oneDNN on the CPU and tensor cores on GPUs (bench/README.md)."""
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def build_model(cfg: Config) -> torch.nn.Module:
    """The network ``MODEL.ARCHITECTURE`` names, returning logits (no final activation), in channels-last layout."""
    return architecture(cfg).build(cfg).to(memory_format=memory_format(cfg.ndim))
