"""``segresnet``: MONAI's SegResNet (Myronenko 2018): residual blocks, 1, 2, ..., 2, 4 of them down the levels and
one up; channels doubling from FEATURE_MAPS[0]; upsampling without weights."""

from __future__ import annotations

import torch
from monai.networks.nets import SegResNet

from segflow.config.schema import Config
from segflow.models.architecture import Architecture, dropout, halving_steps, out_channels, refuse

_NORMS = {"bn": "batch", "in": "instance", "none": ("group", {"num_groups": 1})}  # SegResNet needs a norm layer


def _check(cfg: Config) -> None:
    m = cfg.MODEL
    doubling = [m.FEATURE_MAPS[0] * 2**i for i in range(len(m.FEATURE_MAPS))]
    if doubling != m.FEATURE_MAPS:
        refuse(cfg, f"MODEL.FEATURE_MAPS {m.FEATURE_MAPS}: segresnet doubles its channels at each level; give {doubling}")
    if m.Z_DOWN or m.KERNEL_SIZE != 3:
        refuse(cfg, "segresnet halves every axis at every level with 3x3 convolutions; leave MODEL.Z_DOWN empty and MODEL.KERNEL_SIZE 3, or use unet")


def _build(cfg: Config) -> torch.nn.Module:
    m = cfg.MODEL
    levels = len(m.FEATURE_MAPS)
    return SegResNet(
        spatial_dims=cfg.ndim,
        init_filters=m.FEATURE_MAPS[0],
        in_channels=cfg.in_channels,
        out_channels=out_channels(cfg),
        dropout_prob=dropout(cfg) or None,
        norm=_NORMS[m.NORMALIZATION],
        blocks_down=(1, *([2] * (levels - 2)), 4),
        blocks_up=(1,) * (levels - 1),
    )


SEGRESNET = Architecture(build=_build, steps=halving_steps, check=_check)
