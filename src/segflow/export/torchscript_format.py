"""TorchScript: the module traced on the example input (the networks hold no shape-dependent Python), saved with
the metadata as the extra file ``segflow.json``; ``torch.jit.load`` runs it without segflow."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from segflow.export.base import Activated, Sample, as_json
from segflow.io.atomic import atomic_write


class TorchScriptExporter:
    name, suffix = "torchscript", ".pt"

    def write(self, module: Activated, example: torch.Tensor, out: Path, meta: dict, sample: Sample | None = None) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the activation's fixed channel count
            traced = torch.jit.trace(module, example, check_trace=False)
        atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files={"segflow.json": as_json(meta)}))

    def run(self, path: Path, sample: Sample) -> np.ndarray:
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(torch.from_numpy(sample.x)).numpy()
