"""Label images as palette PNGs with PASCAL VOC's colours (class 0 black, 255 void light grey)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.io.atomic import atomic_write


def voc_colormap(n: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map: ``(n, 3)`` uint8, class 0 black, 255 (void) light grey."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    """Write a 2D uint8 label image as a palette PNG with PASCAL VOC's colours, atomically."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(voc_colormap().ravel().tolist())
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
