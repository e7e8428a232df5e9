"""MONAI's U-Nets: ``unet`` and ``resunet`` (DynUNet, nnU-Net's design: two convolutions per level, strided
downsampling, any depth, anisotropic strides; without and with residual blocks) and ``attention_unet``
(AttentionUnet, always with batch normalisation)."""

from __future__ import annotations

import torch
from monai.networks.nets import AttentionUnet, DynUNet

from segflow.config.schema import Config
from segflow.models.architecture import Architecture, dropout, halving_steps, out_channels

# MONAI's get_norm_layer builds an Identity for the name "": a network with no normalisation layers.
_NORMS = {"bn": "batch", "in": "instance", "none": ""}


def _strides(cfg: Config) -> list[tuple[int, ...]]:
    return [tuple(s) for s in halving_steps(cfg)]


def _dynunet(cfg: Config) -> torch.nn.Module:
    m = cfg.MODEL
    level_strides = _strides(cfg)
    return DynUNet(
        spatial_dims=cfg.ndim,
        in_channels=cfg.in_channels,
        out_channels=out_channels(cfg),
        kernel_size=[m.KERNEL_SIZE] * len(m.FEATURE_MAPS),
        strides=[1, *level_strides],
        upsample_kernel_size=level_strides,
        filters=list(m.FEATURE_MAPS),
        dropout=dropout(cfg) or None,
        norm_name=_NORMS[m.NORMALIZATION],
        res_block=m.ARCHITECTURE == "resunet",
    )


def _attention_unet(cfg: Config) -> torch.nn.Module:
    m = cfg.MODEL
    return AttentionUnet(
        spatial_dims=cfg.ndim,
        in_channels=cfg.in_channels,
        out_channels=out_channels(cfg),
        channels=tuple(m.FEATURE_MAPS),
        strides=tuple(_strides(cfg)),
        kernel_size=m.KERNEL_SIZE,
        up_kernel_size=m.KERNEL_SIZE,
        dropout=dropout(cfg),
    )


UNET = Architecture(build=_dynunet, steps=halving_steps)
ATTENTION_UNET = Architecture(build=_attention_unet, steps=halving_steps)
