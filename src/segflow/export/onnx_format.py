"""ONNX: the legacy TorchScript-based exporter of torch.onnx (no onnxscript needed), opset ``OPSET``, batch and
spatial sizes dynamic; checked with onnxruntime's CPU provider."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from segflow.export.base import Activated, Sample, as_json
from segflow.io.atomic import atomic_write

OPSET = 17  # onnxruntime 1.16 and later run it; InstanceNorm, Resize and ConvTranspose are all in it


class OnnxExporter:
    name, suffix = "onnx", ".onnx"

    def write(self, module: Activated, example: torch.Tensor, out: Path, meta: dict, sample: Sample | None = None) -> None:
        """``out``: one .onnx file; ``meta`` as the model's metadata property ``segflow`` (JSON)."""
        import onnx

        spatial = {2 + i: name for i, name in enumerate(meta["input_axes"][2:])}
        dynamic = {0: "batch", **spatial}

        def writer(tmp: Path) -> None:
            with warnings.catch_warnings():  # instance norm uses its input's statistics in eval mode too: as exported
                warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the channel count is fixed
                torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=OPSET, input_names=["input"],
                                  output_names=["output"], dynamic_axes={"input": dynamic, "output": dynamic})  # fmt: skip
            model = onnx.load(str(tmp))
            onnx.helper.set_model_props(model, {"segflow": as_json(meta)})
            onnx.save(model, str(tmp))

        atomic_write(out, writer)

    def run(self, path: Path, sample: Sample) -> np.ndarray:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": sample.x})[0]
