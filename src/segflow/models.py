"""Build the segmentation network from ``MODEL.*`` with MONAI's U-Net family.

``unet`` and ``resunet`` are MONAI's DynUNet (nnU-Net's design: two convolutions per level, strided
downsampling, any depth, anisotropic strides), without and with residual blocks.
"""

from __future__ import annotations

import torch
from monai.networks.nets import AttentionUnet, DynUNet

from segflow.encodings import out_channels
from segflow.schema import Config

_NORMS = {"bn": "batch", "in": "instance", "none": None}


def strides(cfg: Config) -> list[tuple[int, ...] | int]:
    """Downsampling per level; in 3D, ``MODEL.Z_DOWN`` keeps z for anisotropic stacks."""
    levels = len(cfg.MODEL.FEATURE_MAPS) - 1
    if cfg.ndim == 2 or not cfg.MODEL.Z_DOWN:
        return [2] * levels
    return [(int(z), 2, 2) for z in cfg.MODEL.Z_DOWN]


def divisor(cfg: Config) -> tuple[int, ...]:
    """What every input size must be a multiple of, per spatial axis."""
    total = [1] * cfg.ndim
    for s in strides(cfg):
        per_axis = (s,) * cfg.ndim if isinstance(s, int) else s
        total = [t * int(v) for t, v in zip(total, per_axis)]
    return tuple(total)


def build_model(cfg: Config) -> torch.nn.Module:
    """The network ``MODEL.ARCHITECTURE`` names, returning logits (no final activation)."""
    m = cfg.MODEL
    # MONAI's networks take one dropout rate; the largest of BiaPy's per-level values is used.
    dropout = max(m.DROPOUT_VALUES, default=0.0)
    level_strides = strides(cfg)
    if m.ARCHITECTURE == "attention_unet":
        return AttentionUnet(
            spatial_dims=cfg.ndim,
            in_channels=cfg.in_channels,
            out_channels=out_channels(cfg),
            channels=tuple(m.FEATURE_MAPS),
            strides=tuple(level_strides),
            kernel_size=m.KERNEL_SIZE,
            up_kernel_size=m.KERNEL_SIZE,
            dropout=dropout,
        )
    return DynUNet(
        spatial_dims=cfg.ndim,
        in_channels=cfg.in_channels,
        out_channels=out_channels(cfg),
        kernel_size=[m.KERNEL_SIZE] * len(m.FEATURE_MAPS),
        strides=[1, *level_strides],
        upsample_kernel_size=level_strides,
        filters=list(m.FEATURE_MAPS),
        dropout=dropout or None,
        norm_name=_NORMS[m.NORMALIZATION] or ("group", {"num_groups": 1, "affine": False}),
        res_block=m.ARCHITECTURE == "resunet",
    )
