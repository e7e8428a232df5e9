"""ISBI 2012 benchmark: train and test with bench/configs/isbi2012.yaml, then report accuracy and speed.

    python bench/isbi.py [--result_dir bench/results] [--reuse] [-D KEY=VALUE ...]

Prints test foreground IoU (merge patches, mean per image), mean IoU, training time, and prediction
time and throughput over the 10 test images (model loaded once), with and without test-time
augmentation. ``--reuse`` skips training when the run's checkpoint exists (the test phase runs again).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from segflow.app.run import run
from segflow.config.loader import load_config
from segflow.data.pairs import list_pairs, read_pair
from segflow.inference.predictor import load_model
from segflow.io.paths import RunPaths

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "isbi2012.yaml"
# Measured by the author on a 2-core machine; not re-measured here.
BIAPY_REFERENCE = {"foreground_iou": 0.891, "mean_iou": 0.774, "train_min": 13.0, "predict_s": 12.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--result_dir", default=str(HERE / "results"))
    ap.add_argument("--run_id", default="1")
    ap.add_argument("--reuse", action="store_true", help="skip training when the checkpoint exists")
    ap.add_argument("-D", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    paths = RunPaths.checked(args.result_dir, "isbi", args.run_id)
    checkpoint = paths.checkpoint("best")
    overrides = list(args.overrides) + (["TRAIN.ENABLE=false"] if args.reuse and checkpoint.is_file() else [])
    result = run(CONFIG, args.result_dir, paths.name, paths.run_id, None, overrides, overwrite=True)
    log = paths.log_csv
    train_s = sum(float(line.split(",")[1]) for line in log.read_text().splitlines()[1:])

    cfg, _ = load_config(CONFIG, args.overrides)
    model = load_model(checkpoint, "cpu")
    images = [read_pair(cfg, p, None, "test")[0] for p, _ in list_pairs(cfg.DATA.TEST.PATH, None, "test")]
    pixels = sum(int(np.prod(im.shape[:-1])) for im in images)
    seconds = {}
    for tta in (False, True):
        t0 = time.monotonic()
        for image in images:
            model.predict(image, tta=tta)
        seconds[tta] = time.monotonic() - t0

    merged = result["merge patches"]
    rows = [
        ("test foreground IoU (merge patches, mean per image)", f"{merged['per_image_mean']['foreground_iou']:.4f}", f"{BIAPY_REFERENCE['foreground_iou']:.3f}"),
        ("test mean IoU (cell, membrane; mean per image)", f"{merged['per_image_mean']['mean_iou']:.4f}", f"{BIAPY_REFERENCE['mean_iou']:.3f}"),
        ("training time (epochs summed), min", f"{train_s / 60:.1f}", f"{BIAPY_REFERENCE['train_min']:.1f}"),
        (f"predict {len(images)} test images, s (no TTA)", f"{seconds[False]:.1f}", f"{BIAPY_REFERENCE['predict_s']:.1f} (whole process)"),
        ("prediction throughput, pixels/s (no TTA)", f"{pixels / seconds[False]:,.0f}", "-"),
        (f"predict {len(images)} test images, s (TTA, 8 views)", f"{seconds[True]:.1f}", "-"),
        ("prediction throughput, pixels/s (TTA)", f"{pixels / seconds[True]:,.0f}", "-"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'ISBI 2012 benchmark':<{width}}  {'segflow':>12}  {'BiaPy 3.7.1 (reference)':>24}")
    for name, ours, ref in rows:
        print(f"{name:<{width}}  {ours:>12}  {ref:>24}")


if __name__ == "__main__":
    main()
