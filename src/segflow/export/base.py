"""What every export holds: the network with its activation, its example input, and the metadata that says how
to feed it (axes, channels, classes, the normalisation, the size multiple)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from segflow import __version__
from segflow.config.schema import Config
from segflow.data.normalize import Normalizer
from segflow.encodings import get_encoding
from segflow.models.networks import divisor


class Activated(torch.nn.Module):
    """``net`` followed by the encoding's activation: normalised input ``(N, C, *spatial)`` to ``(N, K, *spatial)``."""

    def __init__(self, net: torch.nn.Module, cfg: Config) -> None:
        super().__init__()
        self.net, self.encoding = net, get_encoding(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding.activate(self.net(x).float())


def activated(net: torch.nn.Module, cfg: Config) -> Activated:
    """The module every format exports: a copy of ``net`` in fp32 and the default memory layout, in eval mode (the
    channels-last layout and autocast of segflow's own predictor are its speed, not part of the model)."""
    plain = copy.deepcopy(net).float().to(memory_format=torch.contiguous_format).eval()
    return Activated(plain, cfg).eval()


def example_input(cfg: Config, scale: int = 1) -> torch.Tensor:
    """A normal-noise input of ``scale`` times the training patch: ``(1, C, *patch)``, float32, seeded."""
    shape = (1, cfg.in_channels, *(scale * p for p in cfg.spatial_patch))
    return torch.from_numpy(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))


def metadata(cfg: Config, normalizer: Normalizer) -> dict:
    """What a user of the exported file needs to feed it, as one JSON-able dict."""
    axes = "bczyx" if cfg.ndim == 3 else "bcyx"
    return {
        "segflow_version": __version__,
        "architecture": cfg.MODEL.ARCHITECTURE,
        "input_axes": axes,
        "input_channels": cfg.in_channels,
        "output_axes": axes,
        "output_channels": get_encoding(cfg).out_channels(),
        "output": "activated outputs (class probabilities; sigmoid for one channel, softmax over channels otherwise)",
        "encoding": cfg.PROBLEM.SEMANTIC_SEG.ENCODING,
        "normalization": {**cfg.DATA.NORMALIZATION.model_dump(mode="json"), **normalizer.state()},
        "spatial_multiple_of": list(divisor(cfg)),
        "training_patch": list(cfg.spatial_patch),
        "config": cfg.model_dump(mode="json"),  # the whole training config: a package's architecture is built from it
        "normalizer": normalizer.state(),
        "bmz": cfg.MODEL.BMZ.EXPORT.model_dump(mode="json"),  # what a BioImage Model Zoo package says of itself
    }


def describe_normalization(meta: dict) -> str:
    """The input the export expects, in words, e.g. ``normalised as 'div' (uint8 / 255, uint16 / 65535)``."""
    n = meta["normalization"]
    words = {
        "div": "divided by its type's range (uint8 / 255, uint16 / 65535; floats as they are)",
        "scale_range": "scaled per image to [0, 1] from its min and max",
        "zero_mean_unit_variance": "per image to zero mean and unit variance",
        "custom": f"(x - {n.get('mean')}) / {n.get('std')}",
    }[n["TYPE"]]
    clip = f", after clipping each image to its {n['PERC_LOWER']:g}-{n['PERC_UPPER']:g} percentiles" if n.get("PERC_CLIP") else ""
    return f"{words}{clip}"


def as_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)


@dataclass(frozen=True)
class Sample:
    """An image to check an export on: ``raw`` as read ``(1, C, *spatial)`` in its own type, and ``x``, the same
    normalised as in training, float32 (what the exported module takes)."""

    raw: np.ndarray
    x: np.ndarray


def network(config: dict) -> Activated:
    """The exported module, untrained, from a config dict: what a BioImage Model Zoo package's pytorch_state_dict
    weights are loaded into (the package's architecture: ``segflow.export.base:network``)."""
    from segflow.models.networks import build_model

    cfg = Config.model_validate(config)
    return Activated(build_model(cfg).float().to(memory_format=torch.contiguous_format), cfg).eval()


class Exporter(Protocol):
    """One export format: ``write`` the module to ``out`` with its metadata (``sample``: a real image, the test input
    of formats that carry one); ``run`` the written file on ``sample`` with the format's own runtime (on ``raw``
    where it normalises, else on ``x``), to check it against PyTorch on ``x``."""

    name: str
    suffix: str

    def write(self, module: Activated, example: torch.Tensor, out: Path, meta: dict, sample: Sample | None) -> None: ...

    def run(self, path: Path, sample: Sample) -> np.ndarray: ...
