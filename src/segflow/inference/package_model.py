"""Prediction with a BioImage Model Zoo package that another tool made (spec 0.5), through bioimageio.core: the
package's own preprocessing, weights (torchscript, pytorch_state_dict or onnx) and postprocessing.

segflow knows such a model only by its description: one input tensor with a channel axis and y, x (and z) space axes,
one output tensor of class channels. Each image is predicted whole, reflect-padded to a size the package takes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from segflow.config.bmz import is_package, read_package
from segflow.config.schema import Config
from segflow.errors import SegflowError
from segflow.inference.predictor import Predictor
from segflow.inference.takes_images import TakesImages

# The weight formats bioimageio.core runs with the packages segflow installs (torch, onnxruntime; no TensorFlow).
RUNNABLE = ("torchscript", "pytorch_state_dict", "onnx")


def _ids(tensor, kind: str) -> list[str]:
    """The ids of ``tensor``'s axes of type ``kind`` ('batch', 'channel', 'space'), in its order."""
    return [str(a.id) for a in tensor.axes if a.type == kind]


def _channels(tensor) -> int:
    return next(a.size for a in tensor.axes if a.type == "channel")


class PackageModel(TakesImages):
    """A package another tool made, as ``segflow predict`` runs it: ``predict`` gives its output channels last."""

    def __init__(self, path: str | os.PathLike, rdf: dict, device: str | torch.device = "cpu") -> None:
        """``rdf``: the package's description as read (its weight formats are checked before bioimageio loads it)."""
        from bioimageio.core import create_prediction_pipeline, load_model_description
        from pydantic import ValidationError

        self.path = Path(path)
        present = list(rdf.get("weights") or {})
        formats = [f for f in RUNNABLE if f in present]
        if not formats:
            raise SegflowError(f"{self.path}: its weights are {', '.join(present) or 'missing'}, which segflow cannot run; it runs "
                               f"{', '.join(RUNNABLE)} (export the model again in one of them)")  # fmt: skip
        try:
            self.descr = load_model_description(self.path, perform_io_checks=False)
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[:3]
            raise SegflowError(f"{self.path}: not a valid BioImage Model Zoo package ({' '.join(first)[:200]}); check it with bioimageio validate") from None
        self.cfg = self._config()
        self.pipeline = create_prediction_pipeline(self.descr, devices=[str(torch.device(device))], weight_format=formats[0])

    def _config(self) -> Config:
        """What segflow needs to read images for this package and decode its outputs, from its description."""
        if len(self.descr.inputs) != 1 or len(self.descr.outputs) != 1:
            raise SegflowError(f"{self.path}: the package has {len(self.descr.inputs)} inputs and {len(self.descr.outputs)} outputs; "
                               "segflow predicts with packages of one input image and one output")  # fmt: skip
        source, target = self.descr.inputs[0], self.descr.outputs[0]
        space = _ids(source, "space")
        if space not in (["y", "x"], ["z", "y", "x"]) or not _ids(source, "channel") or not _ids(target, "channel"):
            raise SegflowError(f"{self.path}: its input axes {[str(a.id) for a in source.axes]} are not an image's (a channel axis and "
                               "(z,) y, x); segflow predicts with semantic segmentation packages of such images")  # fmt: skip
        channels, classes = _channels(source), _channels(target)
        ndim = len(space)
        from segflow.config.loader import build_config

        tree = {"PROBLEM": {"NDIM": f"{ndim}D"}, "DATA": {"PATCH_SIZE": str((*[64] * ndim, channels))}, "MODEL": {"N_CLASSES": max(2, classes)}}
        return build_config(tree)[0]

    def _valid_size(self, axis: str, size: int) -> int:
        """The smallest size of input ``axis`` that the package takes and that holds ``size`` pixels."""
        from bioimageio.spec.model.v0_5 import ParameterizedSize

        declared = next(a.size for a in self.descr.inputs[0].axes if str(a.id) == axis)
        if isinstance(declared, ParameterizedSize):
            return declared.min + max(0, -(-(size - declared.min) // declared.step)) * declared.step
        if isinstance(declared, int) and declared >= size:
            return declared
        raise SegflowError(f"{self.path}: its input axis {axis} takes {declared} pixels, not {size}; give an image that fits it")

    def predict(self, image: np.ndarray, tta: bool = False, source: str | os.PathLike | None = None, **_: object) -> np.ndarray:
        """The package's output for one raw image ``(*spatial[, C])``: ``(*spatial, K)`` float32, K its output channels.

        The image is reflect-padded at its end to a size the package takes, then cropped back. Windows, overlap and
        batch size are segflow's own: the package predicts each image whole."""
        from bioimageio.core import Tensor, predict

        if tta:
            raise SegflowError("--tta: test-time augmentation is segflow's own; predict without it with a package another tool made")
        image = self.as_image(image, source)
        spatial = image.shape[:-1]
        source_descr, target_descr = self.descr.inputs[0], self.descr.outputs[0]
        space = _ids(source_descr, "space")
        pads = [(0, self._valid_size(a, s) - s) for a, s in zip(space, spatial)]
        array = np.moveaxis(np.pad(np.asarray(image, np.float32), [*pads, (0, 0)], mode="reflect"), -1, 0)  # (C, *spatial)
        dims, batch = (*_ids(source_descr, "channel"), *space), _ids(source_descr, "batch")
        if batch:
            array, dims = array[None], (batch[0], *dims)
        tensor = Tensor.from_numpy(array, dims=dims)
        out = predict(model=self.pipeline, inputs={source_descr.id: tensor.transpose(tuple(str(a.id) for a in source_descr.axes))})
        result = out.members[target_descr.id]
        order = (*_ids(target_descr, "batch"), *_ids(target_descr, "channel"), *_ids(target_descr, "space"))
        values = result.transpose(order).data.to_numpy()
        values = values[0] if _ids(target_descr, "batch") else values
        return np.moveaxis(values, 0, -1)[tuple(slice(0, s) for s in spatial)].astype(np.float32)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Class ids ``(*spatial)`` from the package's outputs ``(*spatial, K)``, taken as class probabilities: the
        channel of the highest value, or for one channel where it is above 0.5."""
        if probs.shape[-1] == 1:
            return (probs[..., 0] > 0.5).astype(np.uint8)
        return np.argmax(probs, axis=-1).astype(np.uint8 if probs.shape[-1] <= 256 else np.uint16)


def open_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor | PackageModel:
    """What ``segflow predict`` runs: a checkpoint or package segflow wrote (a ``Predictor``), or a spec 0.5 package
    another tool made (a ``PackageModel``)."""
    path = Path(path)
    if is_package(path):
        rdf = read_package(path)[0]
        if str(rdf.get("format_version", "")).startswith("0.5.") and not (rdf.get("config") or {}).get("segflow"):
            return PackageModel(path, rdf, device)
    return Predictor.from_checkpoint(path, device)
