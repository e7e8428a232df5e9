"""segflow: train and apply 2D/3D semantic segmentation models from one YAML file."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segflow.inference.predictor import Predictor

__version__ = "0.1.0"


def load_model(path: str, device: str | None = None) -> Predictor:
    """Load a checkpoint for prediction: ``segflow.load_model(path).predict(numpy_array)``.

    Imported lazily, so ``import segflow`` stays light.
    """
    from segflow.inference.predictor import load_model as _load

    return _load(path, device)
