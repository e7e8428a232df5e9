"""Build the segmentation network from ``MODEL.*`` with MONAI's U-Net family.

``unet`` and ``resunet`` are MONAI's DynUNet (nnU-Net's design: two convolutions per level, strided
downsampling, any depth, anisotropic strides), without and with residual blocks. ``attention_unet`` is
MONAI's AttentionUnet, which always uses batch normalisation. ``segresnet`` is MONAI's SegResNet.
"""

from __future__ import annotations

import math

import torch
from monai.networks.nets import AttentionUnet, DynUNet, SegResNet

from segflow.config.schema import Config
from segflow.encodings import get_encoding

# MONAI's get_norm_layer builds an Identity for the name "": a network with no normalisation layers.
_NORMS = {"bn": "batch", "in": "instance", "none": ""}
_SEGRESNET_NORMS = {"bn": "batch", "in": "instance", "none": ("group", {"num_groups": 1})}  # SegResNet needs a norm layer


def strides(cfg: Config) -> list[tuple[int, ...] | int]:
    """Downsampling per level; in 3D, ``MODEL.Z_DOWN`` keeps z for anisotropic stacks."""
    levels = len(cfg.MODEL.FEATURE_MAPS) - 1
    if cfg.ndim == 2 or not cfg.MODEL.Z_DOWN:
        return [2] * levels
    return [(int(z), 2, 2) for z in cfg.MODEL.Z_DOWN]


def _axis_strides(cfg: Config) -> list[tuple[int, ...]]:
    """Each level's downsampling, one factor per spatial axis."""
    return [(s,) * cfg.ndim if isinstance(s, int) else tuple(int(v) for v in s) for s in strides(cfg)]


def divisor(cfg: Config) -> tuple[int, ...]:
    """What every input size must be a multiple of, per spatial axis."""
    return tuple(math.prod(axis) for axis in zip(*_axis_strides(cfg)))


def level_shapes(cfg: Config) -> list[tuple[int, ...]]:
    """The patch's spatial size at each level of the network, from the input down to the bottleneck."""
    shapes = [tuple(cfg.spatial_patch)]
    for step in _axis_strides(cfg):
        shapes.append(tuple(size // v for size, v in zip(shapes[-1], step)))
    return shapes


def memory_format(ndim: int) -> torch.memory_format:
    """Channels-last layout: faster convolutions with oneDNN on the CPU and tensor cores on GPUs (bench/README.md)."""
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def build_model(cfg: Config) -> torch.nn.Module:
    """The network ``MODEL.ARCHITECTURE`` names, returning logits (no final activation), in channels-last layout."""
    return _network(cfg).to(memory_format=memory_format(cfg.ndim))


def _network(cfg: Config) -> torch.nn.Module:
    m = cfg.MODEL
    # MONAI's networks take one dropout rate; the largest of BiaPy's per-level values is used.
    dropout = max(m.DROPOUT_VALUES, default=0.0)
    level_strides = strides(cfg)
    if m.ARCHITECTURE == "segresnet":
        # MONAI's SegResNet (Myronenko 2018): residual blocks, 1, 2, ..., 2, 4 of them down the levels, one up; its
        # channels double from FEATURE_MAPS[0] (the schema checks that they do), and it upsamples without weights.
        levels = len(m.FEATURE_MAPS)
        return SegResNet(
            spatial_dims=cfg.ndim,
            init_filters=m.FEATURE_MAPS[0],
            in_channels=cfg.in_channels,
            out_channels=get_encoding(cfg).out_channels(),
            dropout_prob=dropout or None,
            norm=_SEGRESNET_NORMS[m.NORMALIZATION],
            blocks_down=(1, *([2] * (levels - 2)), 4),
            blocks_up=(1,) * (levels - 1),
        )
    if m.ARCHITECTURE == "attention_unet":
        return AttentionUnet(
            spatial_dims=cfg.ndim,
            in_channels=cfg.in_channels,
            out_channels=get_encoding(cfg).out_channels(),
            channels=tuple(m.FEATURE_MAPS),
            strides=tuple(level_strides),
            kernel_size=m.KERNEL_SIZE,
            up_kernel_size=m.KERNEL_SIZE,
            dropout=dropout,
        )
    return DynUNet(
        spatial_dims=cfg.ndim,
        in_channels=cfg.in_channels,
        out_channels=get_encoding(cfg).out_channels(),
        kernel_size=[m.KERNEL_SIZE] * len(m.FEATURE_MAPS),
        strides=[1, *level_strides],
        upsample_kernel_size=level_strides,
        filters=list(m.FEATURE_MAPS),
        dropout=dropout or None,
        norm_name=_NORMS[m.NORMALIZATION],
        res_block=m.ARCHITECTURE == "resunet",
    )
