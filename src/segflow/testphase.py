"""The test phase: predict every test image, write probability and label images, measure IoU."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segflow.atomic import atomic_write_text
from segflow.data import list_pairs, read_pair
from segflow.evaluation import confusion, scores
from segflow.images import write_tiff
from segflow.inference import Predictor
from segflow.paths import RunPaths
from segflow.schema import Config


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def run_test(cfg: Config, paths: RunPaths, checkpoint: Path, device: str = "cpu") -> dict:
    """Predict ``DATA.TEST.PATH``; return pooled and per-image scores (when masks are given)."""
    predictor = Predictor.from_checkpoint(checkpoint, device)
    # The checkpoint fixes the model; the run's config decides the test data and outputs.
    t = cfg.DATA.TEST
    n_classes = predictor.n_classes
    ignore = predictor.cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
    pairs = list_pairs(t.PATH, t.GT_PATH if t.LOAD_GT else None, "test")
    pooled = np.zeros((n_classes, n_classes), dtype=np.int64)
    rows = []
    for img_path, mask_path in tqdm(pairs, desc="Test images", unit="img"):
        image, mask = read_pair(predictor.cfg, img_path, mask_path, "test", t.CHECK_DATA)
        probs = predictor.predict(image)
        labels = predictor.labels(probs)
        name = img_path.stem + ".tif"
        write_tiff(paths.sub("per_image") / name, probs.astype(np.float32), cfg.ndim, reference=img_path)
        if t.ARGMAX_TO_OUTPUT or n_classes == 2:
            binarized = labels
        else:
            binarized = np.stack([(labels == c) for c in range(n_classes)], axis=-1).astype(np.uint8)
        write_tiff(paths.sub("per_image_binarized") / name, binarized, cfg.ndim, reference=img_path)
        if mask is not None:
            conf = confusion(labels, mask, n_classes, ignore)
            pooled += conf
            rows.append({"image": img_path.name, **scores(conf)})
    if not rows:
        print(f"Predicted {len(pairs)} test image(s) into {paths.sub('per_image')}")
        return {}
    result = {"pooled": scores(pooled), "per_image": rows}
    result["per_image_mean"] = {
        key: float(np.nanmean([r[key] for r in rows])) for key in ("foreground_iou", "mean_iou", "foreground_dice", "accuracy")
    }
    write_metrics_csv(result, n_classes, paths.sub("test_metrics.csv"))
    print_summary(result, n_classes)
    return result


def write_metrics_csv(result: dict, n_classes: int, target: Path) -> None:
    """One row per test image, then the per-image mean and the pooled (all pixels) row."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "foreground_iou", "mean_iou", *[f"iou_class_{c}" for c in range(n_classes)], "foreground_dice", "accuracy"])
    for r in result["per_image"] + [{"image": "POOLED", **result["pooled"]}]:
        w.writerow([r["image"], _fmt(r["foreground_iou"]), _fmt(r["mean_iou"]), *[_fmt(v) for v in r["iou_per_class"]], _fmt(r["foreground_dice"]), _fmt(r["accuracy"])])
    m = result["per_image_mean"]
    w.writerow(["MEAN_PER_IMAGE", _fmt(m["foreground_iou"]), _fmt(m["mean_iou"]), *[""] * n_classes, _fmt(m["foreground_dice"]), _fmt(m["accuracy"])])
    atomic_write_text(target, buf.getvalue())


def print_summary(result: dict, n_classes: int) -> None:
    """The end-of-test table, with BiaPy's line names."""
    m, p = result["per_image_mean"], result["pooled"]
    print(f"Test Foreground IoU (merge patches, per image mean): {_fmt(m['foreground_iou'])}")
    print(f"Test Foreground IoU (merge patches, pooled):         {_fmt(p['foreground_iou'])}")
    print(f"Test mean IoU (per image mean):                      {_fmt(m['mean_iou'])}")
    print(f"Test IoU per class (pooled): " + ", ".join(f"{c}: {_fmt(v)}" for c, v in enumerate(p["iou_per_class"])))
    print(f"Test foreground Dice (per image mean): {_fmt(m['foreground_dice'])}   pixel accuracy: {_fmt(m['accuracy'])}")
