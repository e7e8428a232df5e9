"""The folder source: image files and mask files in two folders, paired by name, each decoded into memory."""

from __future__ import annotations

from typing import ClassVar

from segflow.config.schema import Config
from segflow.data.pairs import MaskRules, read_pairs
from segflow.data.sources.base import Sample


class FolderSource:
    """Folders of image files and of masks, paired by name (``data.pairs``), each decoded into memory."""

    name: ClassVar[str] = "folder"

    @staticmethod
    def accepts(cfg: Config, image_path: str, what: str) -> bool:
        """Any path: the folder source is the last one asked."""
        return True

    def samples(self, cfg: Config, image_path: str, mask_path: str | None, what: str, rules: MaskRules | None) -> list[Sample]:
        """See ``Source.samples``."""
        return [Sample(p.stem, img, msk, p, mp) for p, img, mp, msk in read_pairs(cfg, image_path, mask_path, what, rules)]
