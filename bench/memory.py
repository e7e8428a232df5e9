"""Peak memory of prediction on large inputs: a 4096x4096 image and a 256x1024x1024 stack.

    python bench/memory.py [--quick]

Trains a small model for one epoch on synthetic data (2D and 3D), writes a large synthetic uint8
TIFF, predicts it with ``segflow predict`` in a child process and reports that process's peak RSS next
to the size of the output it must hold (float32 probabilities). ``--quick`` uses 2048x2048 and
64x512x512 instead.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml

from segflow.data.synthetic import make_dataset


def train_small(root: Path, ndim: str) -> Path:
    data = make_dataset(root / "data", ndim=2 if ndim == "2D" else 3, n_train=2, n_test=1, shape=(256, 256) if ndim == "2D" else (32, 128, 128))
    cfg = {
        "SYSTEM": {"NUM_WORKERS": 0},
        "PROBLEM": {"NDIM": ndim},
        "DATA": {
            "PATCH_SIZE": "(256, 256, 1)" if ndim == "2D" else "(32, 128, 128, 1)",
            "TRAIN": {"PATH": str(data / "train/x"), "GT_PATH": str(data / "train/y")},
            "VAL": {"SPLIT_TRAIN": 0.0},
        },
        "MODEL": {"FEATURE_MAPS": [8, 16, 32, 64]},
        "TRAIN": {"ENABLE": True, "EPOCHS": 1, "BATCH_SIZE": 2},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, "-m", "segflow.app.cli", "run", "--config", str(root / "c.yaml"), "--result_dir", str(root), "--name", "m"], check=True, capture_output=True)
    return root / "m" / "checkpoints" / "m_1-checkpoint-last.pth"


def big_image(path: Path, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, shape[-2:], dtype=np.uint8)
    with tifffile.TiffWriter(path) as tif:  # written slice by slice: this script must not need the memory it measures
        for _ in range(shape[0] if len(shape) == 3 else 1):
            tif.write(tile, contiguous=True)


def measure(model: Path, image: Path, out: Path) -> tuple[float, float]:
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "segflow.app.cli", "predict", str(model), str(image), str(out), "--probabilities", "--batch-size", "4"], check=True, capture_output=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak, before) / 2**20, time.monotonic() - start  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cases = [("2D", (2048, 2048) if args.quick else (4096, 4096)), ("3D", (64, 512, 512) if args.quick else (256, 1024, 1024))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ndim, shape in cases:
            root = Path(tmp) / ndim
            model = train_small(root, ndim)
            image = root / "big.tif"
            big_image(image, shape)
            peak_gib, seconds = measure(model, image, root / "pred.tif")
            out_gib = np.prod(shape) * 4 / 2**30
            rows.append((f"{ndim} {'x'.join(map(str, shape))}", out_gib, peak_gib, seconds, np.prod(shape) / seconds))
    print(f"\n{'input (uint8)':<22} {'output GiB':>10} {'peak RSS GiB':>13} {'ratio':>6} {'seconds':>8} {'voxels/s':>12}")
    for name, out_gib, peak, sec, rate in rows:
        print(f"{name:<22} {out_gib:>10.2f} {peak:>13.2f} {peak / out_gib:>6.2f} {sec:>8.1f} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
