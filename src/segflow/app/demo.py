"""``segflow demo``: make a synthetic EM-like dataset, train on it, test, and print IoU and where results are."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from segflow.data.synthetic import make_dataset
from segflow.io.paths import RunPaths

# Sized to train in about two minutes on two CPU cores.
DEMO_CONFIG = {
    "PROBLEM": {"NDIM": "2D"},
    "DATA": {
        "PATCH_SIZE": "(128, 128, 1)",
        "EXTRACT_RANDOM_PATCH": True,
        "TRAIN": {"PATH": "data/train/x", "GT_PATH": "data/train/y", "REPLICATE": 6},
        "VAL": {"SPLIT_TRAIN": 0.2},
        "TEST": {"PATH": "data/test/x", "GT_PATH": "data/test/y", "PADDING": "(16, 16)"},
    },
    "AUGMENTOR": {"ENABLE": True, "VFLIP": True, "HFLIP": True, "ROT90": True, "AUG_NUM_SAMPLES": 4},
    "MODEL": {"ARCHITECTURE": "unet", "FEATURE_MAPS": [16, 32, 64, 128]},
    "TRAIN": {
        "ENABLE": True,
        "OPTIMIZER": "ADAMW",
        "LR": 0.002,
        "BATCH_SIZE": 8,
        "EPOCHS": 12,
        "LR_SCHEDULER": {"NAME": "onecycle"},
    },
    "TEST": {"ENABLE": True},
}


def demo(out: str | Path = "demo_results", gpu: str | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Run the demo end to end in ``out``; return the test scores."""
    from segflow.app.run import run

    out = Path(out).resolve()
    start = time.monotonic()
    make_dataset(out / "data", ndim=2, n_train=10, n_test=4, shape=(256, 256), seed=0)
    config = out / "demo.yaml"
    config.write_text(yaml.safe_dump(DEMO_CONFIG, sort_keys=False))
    print(f"Synthetic dataset in {out / 'data'}; config {config}")
    result = run(config, out, "demo", "1", gpu, overrides, overwrite=True)
    fg = result["merge patches"]["per_image_mean"]["foreground_iou"]
    paths = RunPaths.checked(out, "demo", "1")
    print(f"\nDemo finished in {time.monotonic() - start:.0f} s.")
    print(f"Test foreground IoU (per image mean): {fg:.3f}")
    print(f"Predictions: {paths.per_image()}  metrics: {paths.test_metrics}  charts: {paths.charts}")
    return result
