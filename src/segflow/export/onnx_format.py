"""ONNX: the legacy TorchScript-based exporter of torch.onnx (no onnxscript needed), opset ``OPSET``, batch and
spatial sizes dynamic; checked with onnxruntime's CPU provider."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

from segflow.errors import SegflowError
from segflow.export.base import Activated, Sample, as_json
from segflow.io.atomic import atomic_write

OPSET = 17  # onnxruntime 1.16 and later run it; InstanceNorm, Resize and ConvTranspose are all in it
# What --opset may ask for: torch's TorchScript-based exporter writes opsets up to 20 (torch.onnx's
# ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET); below 11, Resize cannot take output sizes.
OPSETS = range(11, 21)


class OnnxExporter:
    name, suffix = "onnx", ".onnx"

    def __init__(self, opset: int = OPSET) -> None:
        if opset not in OPSETS:
            raise SegflowError(f"--opset {opset}: torch {torch.__version__.split('+')[0]} writes ONNX opsets {OPSETS.start} to "
                               f"{OPSETS.stop - 1} for segflow's networks; give one of them (onnxruntime 1.16 and later run 17, the default)")  # fmt: skip
        self.opset = opset

    def write(self, module: Activated, example: torch.Tensor, out: Path, meta: dict, sample: Sample | None = None) -> None:
        """``out``: one .onnx file; ``meta`` as the model's metadata property ``segflow`` (JSON)."""
        import onnx

        spatial = {2 + i: name for i, name in enumerate(meta["input_axes"][2:])}
        dynamic = {0: "batch", **spatial}

        def writer(tmp: Path) -> None:
            with warnings.catch_warnings():  # instance norm uses its input's statistics in eval mode too: as exported
                warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the channel count is fixed
                torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=self.opset, input_names=["input"],
                                  output_names=["output"], dynamic_axes={"input": dynamic, "output": dynamic})  # fmt: skip
            model = onnx.load(str(tmp))
            onnx.helper.set_model_props(model, {"segflow": as_json(meta)})
            onnx.save(model, str(tmp))

        atomic_write(out, writer)

    def run(self, path: Path, sample: Sample) -> np.ndarray:
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except onnxruntime.capi.onnxruntime_pybind11_state.Fail as exc:
            if "opset" not in str(exc).lower():
                raise
            # e.g. "... Current official support for domain ai.onnx is till opset 28."
            limit = re.search(r"till opset (\d+)", str(exc))
            runs = f"it runs opsets up to {limit.group(1)}" if limit else str(exc).splitlines()[-1][-160:]
            raise SegflowError(f"{path}: ONNX opset {_opset(path)}, which onnxruntime {onnxruntime.__version__} does not run ({runs}); "
                               f"export with a lower --opset (default {OPSET})") from None  # fmt: skip
        return session.run(None, {"input": sample.x})[0]


def _opset(path: Path) -> int:
    """The default domain's opset a written .onnx file is stamped with."""
    import onnx

    return next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))
