"""What every model that ``segflow predict`` runs shares: the images it takes, checked against its config, and the
labels its outputs decode to."""

from __future__ import annotations

import os

import numpy as np

from segflow.config.schema import Config
from segflow.encodings import get_encoding
from segflow.errors import SegflowError
from segflow.io.lazy import slabs


class TakesImages:
    """A model described by ``self.cfg``: its dimensionality (PROBLEM.NDIM), channels (DATA.PATCH_SIZE's last value)
    and encoding (how its outputs decode to labels)."""

    cfg: Config

    def expects(self) -> str:
        """What this model takes, e.g. "this model is 2D with 1 channel; give a (y, x) image"."""
        c = self.cfg.in_channels
        axes = ("(z, y, x" if self.cfg.ndim == 3 else "(y, x") + (f", {c})" if c > 1 else ")")
        kind = "stack" if self.cfg.ndim == 3 else "image"
        return f"this model is {self.cfg.PROBLEM.NDIM} with {c} channel{'s' if c > 1 else ''}; give a {axes} {kind}"

    def as_image(self, image: np.ndarray, source: str | os.PathLike | None = None, finite: bool = True) -> np.ndarray:
        """Check a raw image and give it channels last: ``(y, x)`` / ``(z, y, x)`` gain a channel axis.

        Refused, naming ``source`` (the file) when given: a shape or channel count the model does not take,
        an empty image (an axis of size 0), a non-numeric type, and with ``finite`` NaN or infinite values (a scan
        of the whole image: off for one chunk of a volume larger than RAM).
        """
        where = f"{source}: image" if source is not None else "image"
        if not hasattr(image, "ndim"):
            image = np.asarray(image)
        dtype = np.dtype(image.dtype)
        if not (np.issubdtype(dtype, np.bool_) or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise SegflowError(f"{where} has pixel type {dtype}, not supported; give integer or float pixels")
        if image.ndim == self.cfg.ndim:
            image = image[..., None]
        if image.ndim != self.cfg.ndim + 1 or image.shape[-1] != self.cfg.in_channels:
            raise SegflowError(f"{where} of shape {tuple(image.shape)} does not fit: {self.expects()}")
        if 0 in image.shape:
            raise SegflowError(
                f"{where} of shape {tuple(image.shape)} has no pixels (an axis of size 0); give a non-empty image"
            )
        if finite and np.issubdtype(dtype, np.floating) and not _all_finite(image):
            raise SegflowError(
                f"{where} holds NaN or infinite values; replace them (e.g. with np.nan_to_num) before predicting"
            )
        return image

    def labels(self, probs: np.ndarray) -> np.ndarray | None:
        """Label image from channels-last outputs, decoded as the model's encoding says (None for 'linear')."""
        return get_encoding(self.cfg).labels(probs)


def _all_finite(image: np.ndarray) -> bool:
    """``np.isfinite(image).all()`` a slab of the first axis at a time: no image-sized temporary (memory maps)."""
    rows = slabs(image)
    return all(bool(np.isfinite(image[i : i + rows.step]).all()) for i in rows)
