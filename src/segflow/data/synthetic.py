"""A synthetic EM-like dataset made in code: textured background, dark 'organelles' with a membrane rim.

Used by ``segflow demo`` and the tests; nothing is shipped or downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage


def synthetic_pair(shape: tuple[int, ...], rng: np.random.Generator, n_blobs: int = 6, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 image and its mask (2D or 3D). Blob ``k`` gets class ``1 + k % (n_classes - 1)``,
    and each class has its own mean intensity, so every class can be told apart."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    mask = np.zeros(shape, dtype=np.uint8)
    scale = min(shape[-2:])
    for k in range(n_blobs):
        centre = [rng.uniform(0, s) for s in shape]
        radii = [rng.uniform(0.05, 0.12) * scale for _ in shape]
        if len(shape) == 3:
            radii[0] = max(2.0, radii[0] * shape[0] / scale)
        angle = rng.uniform(0, np.pi)
        dy, dx = grids[-2] - centre[-2], grids[-1] - centre[-1]
        ry = np.cos(angle) * dy + np.sin(angle) * dx
        rx = -np.sin(angle) * dy + np.cos(angle) * dx
        dist = (ry / radii[-2]) ** 2 + (rx / radii[-1]) ** 2
        if len(shape) == 3:
            dist = dist + ((grids[0] - centre[0]) / radii[0]) ** 2
        mask[dist <= 1] = 1 + k % (n_classes - 1)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 2.0)
    image = 0.62 + 0.06 * texture / (texture.std() + 1e-6)
    levels = np.linspace(0.25, 0.45, n_classes - 1) if n_classes > 2 else np.array([0.3])
    for c in range(1, n_classes):
        image[mask == c] = levels[c - 1] + 0.05 * texture[mask == c] / (texture.std() + 1e-6)
    # A dark membrane rim around each organelle, as in EM.
    rim = ndimage.binary_dilation(mask > 0, iterations=2) & ~(mask > 0)
    image[rim] = 0.15
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 0.06, shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def make_dataset(
    root: str | Path,
    ndim: int = 2,
    n_train: int = 8,
    n_test: int = 3,
    shape: tuple[int, ...] | None = None,
    n_classes: int = 2,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,test}/{x,y}/img_NNN.tif``; return ``root``."""
    root = Path(root)
    shape = shape or ((256, 256) if ndim == 2 else (32, 96, 96))
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for sub in ("x", "y"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, mask = synthetic_pair(shape, rng, n_classes=n_classes)
            tifffile.imwrite(root / split / "x" / f"img_{i:03d}.tif", image)
            tifffile.imwrite(root / split / "y" / f"img_{i:03d}.tif", mask)
    return root
