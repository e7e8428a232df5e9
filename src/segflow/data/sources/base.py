"""What every data source hands out (``Sample``) and the interface it implements (``Source``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from segflow.config.schema import Config
from segflow.data.pairs import MaskRules


@dataclass
class Sample:
    """One image ``(*spatial, C)`` in its raw dtype with its mask ``(*spatial)`` (or None) and where it came from."""

    name: str
    image: np.ndarray
    mask: np.ndarray | None
    path: Path
    mask_path: Path | None = None
    # Normalizer.stats of the image, measured on the whole image once: each patch is normalised with them.
    stats: dict | None = None
    # The whole mask encoded, kept only for encodings whose target depends on the whole image (region, distance).
    target: np.ndarray | None = None


class Source(Protocol):
    """One kind of storage of images and masks."""

    name: ClassVar[str]

    @staticmethod
    def accepts(cfg: Config, image_path: str, what: str) -> bool:
        """Whether this source reads ``image_path`` (a ``DATA.*.PATH``) as ``cfg`` configures it; ``what`` ('train',
        'validation') says which part."""

    def samples(self, cfg: Config, image_path: str, mask_path: str | None, what: str, rules: MaskRules | None) -> list[Sample]:
        """Every image of ``image_path`` with its mask from ``mask_path``, checked (masks against ``rules``,
        None: unchecked); ``what`` ('train', 'validation') names them in errors."""
