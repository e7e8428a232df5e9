"""The test phase: predict every test image the ways the config asks, write the outputs, measure them.

Modes, with BiaPy's names: ``per patch`` (IoU of non-overlapping patches predicted alone, averaged),
``merge patches`` (overlapping windows blended into the whole image; always run), ``full image``
(``TEST.FULL_IMG``), their ``post-processing`` variants (median filters, 3D) and ``as 3D stack``
(``TEST.ANALIZE_2D_IMGS_AS_3D_STACK``: the 2D predictions stacked and filtered along z).
The printed IoU and the ``*_binarized`` images use the same labels (threshold 0.5, or argmax).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segflow.atomic import atomic_write_text
from segflow.data import list_pairs, read_pair
from segflow.errors import SegflowError
from segflow.evaluation import confusion, scores
from segflow.images import write_tiff
from segflow.inference import Predictor
from segflow.paths import RunPaths
from segflow.postprocess import apply_median_filters, filters_for, median_filters
from segflow.schema import Config

SUMMARY_KEYS = ("foreground_iou", "mean_iou", "foreground_dice", "accuracy")


class Tally:
    """Scores of one mode: per image, and a pooled confusion matrix over all pixels."""

    def __init__(self, n_classes: int) -> None:
        self.rows: list[dict] = []
        self.pooled = np.zeros((n_classes, n_classes), dtype=np.int64)

    def add(self, name: str, labels: np.ndarray, mask: np.ndarray, n_classes: int, ignore: int) -> dict:
        conf = confusion(labels, mask, n_classes, ignore)
        self.pooled += conf
        row = {"image": name, **scores(conf)}
        self.rows.append(row)
        return row

    def summary(self) -> dict:
        mean = {k: _nanmean([r[k] for r in self.rows]) for k in SUMMARY_KEYS}
        return {"per_image_mean": mean, "pooled": scores(self.pooled), "per_image": self.rows}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


class OutputWriter:
    """Writes probabilities and labels of one mode into ``<folder>/`` and ``<folder>_binarized/``."""

    def __init__(self, cfg: Config, predictor: Predictor, paths: RunPaths) -> None:
        self.cfg, self.predictor, self.paths = cfg, predictor, paths

    def write(self, folder: str, binarized: str | None, name: str, probs: np.ndarray, labels: np.ndarray, reference: Path | None, ndim: int) -> None:
        write_tiff(self.paths.sub(folder) / name, probs.astype(np.float32, copy=False), ndim, reference=reference)
        if binarized is None:
            return
        n = self.predictor.n_classes
        if self.cfg.DATA.TEST.ARGMAX_TO_OUTPUT or n == 2:
            out = labels
        else:  # one 0/1 channel per class
            out = np.stack([labels == c for c in range(n)], axis=-1).astype(np.uint8)
        write_tiff(self.paths.sub(binarized) / name, out, ndim, reference=reference)


def run_test(cfg: Config, paths: RunPaths, predictor: Predictor) -> dict:
    """Predict ``DATA.TEST.PATH`` as the config says; return the scores of each mode (empty without masks)."""
    # The checkpoint fixes the model and its data format; the run's config decides test data and outputs.
    t = cfg.DATA.TEST
    n = predictor.n_classes
    ignore = predictor.cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
    ndim = predictor.cfg.ndim
    tta = cfg.TEST.AUGMENTATION
    filters = median_filters(cfg)
    image_filters = filters_for(filters, ndim)  # in 2D, the z filters wait for the stack
    stack = cfg.TEST.ANALIZE_2D_IMGS_AS_3D_STACK and ndim == 2
    writer = OutputWriter(cfg, predictor, paths)
    pairs = list_pairs(t.PATH, t.GT_PATH if t.LOAD_GT else None, "test")
    modes: dict[str, Tally] = {}
    patch_rows: list[dict] = []
    stacked: list[tuple[np.ndarray, np.ndarray | None]] = []

    def tally(mode: str) -> Tally:
        return modes.setdefault(mode, Tally(n))

    for img_path, mask_path in tqdm(pairs, desc="Test images", unit="img"):
        image, mask = read_pair(predictor.cfg, img_path, mask_path, "test", t.CHECK_DATA)
        name = img_path.stem + ".tif"
        probs = predictor.predict(image, tta=tta, progress=True)
        labels = predictor.labels(probs)
        writer.write("per_image", "per_image_binarized", name, probs, labels, img_path, ndim)
        if mask is not None:
            tally("merge patches").add(img_path.name, labels, mask, n, ignore)
            for p in predictor.patch_scores(image, mask, tta=tta):
                patch_rows.append(p)
        if image_filters:
            pp = apply_median_filters(probs, image_filters)
            pp_labels = predictor.labels(pp)
            writer.write("per_image_post_processing", None, name, pp, pp_labels, img_path, ndim)
            if mask is not None:
                tally("merge patches - post-processing").add(img_path.name, pp_labels, mask, n, ignore)
        if cfg.TEST.FULL_IMG:
            full = predictor.predict(image, tta=tta, full_image=True)
            full_labels = predictor.labels(full)
            writer.write("full_image", "full_image_binarized", name, full, full_labels, img_path, ndim)
            if mask is not None:
                tally("full image").add(img_path.name, full_labels, mask, n, ignore)
            if image_filters:
                fpp = apply_median_filters(full, image_filters)
                fpp_labels = predictor.labels(fpp)
                writer.write("full_post_processing", None, name, fpp, fpp_labels, img_path, ndim)
                if mask is not None:
                    tally("full image - post-processing").add(img_path.name, fpp_labels, mask, n, ignore)
        if stack:
            stacked.append((probs, mask))

    if stack and stacked:
        _as_3d_stack(stacked, pairs, filters, writer, predictor, tally, n, ignore)
    if patch_rows:
        per_patch = Tally(n)
        per_patch.rows = patch_rows
        modes = {"per patch": per_patch, **modes}
    if not any(m.rows for m in modes.values()):
        print(f"Predicted {len(pairs)} test image(s) into {paths.sub('per_image')}")
        return {}
    result = {mode: m.summary() for mode, m in modes.items()}
    if "per patch" in result:
        result["per patch"]["pooled"] = None  # patches overlap at the borders; only their mean is meaningful
    write_metrics_csv(result, n, paths.sub("test_metrics.csv"))
    print_summary(result)
    return result


def _as_3d_stack(stacked, pairs, filters, writer: OutputWriter, predictor: Predictor, tally, n: int, ignore: int) -> None:
    """Stack the 2D predictions in file order into one volume, write it, filter it along z, score both."""
    shapes = {p.shape for p, _ in stacked}
    if len(shapes) > 1:
        raise SegflowError(f"TEST.ANALIZE_2D_IMGS_AS_3D_STACK needs test images of one size; found {sorted(shapes)}")
    probs = np.stack([p for p, _ in stacked])
    labels = predictor.labels(probs)
    name = pairs[0][0].stem + "_stack.tif"
    writer.write("as_3d_stack", "as_3d_stack_binarized", name, probs, labels, None, 3)
    masks = [m for _, m in stacked]
    mask = np.stack(masks) if all(m is not None for m in masks) else None
    if mask is not None:
        tally("as 3D stack").add(name, labels, mask, n, ignore)
    if filters:
        pp = apply_median_filters(probs, filters)
        pp_labels = predictor.labels(pp)
        writer.write("as_3d_stack_post_processing", None, name, pp, pp_labels, None, 3)
        if mask is not None:
            tally("as 3D stack - post-processing").add(name, pp_labels, mask, n, ignore)


def write_metrics_csv(result: dict, n_classes: int, target: Path) -> None:
    """One row per (mode, image), then per mode the mean over images and the pooled (all pixels) row."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["mode", "image", *SUMMARY_KEYS, *[f"iou_class_{c}" for c in range(n_classes)]])
    for mode, res in result.items():
        # Per-patch rows are many and anonymous; their mean is the figure BiaPy reports.
        for r in res["per_image"] if mode != "per patch" else []:
            w.writerow([mode, r["image"], *[_fmt(r[k]) for k in SUMMARY_KEYS], *[_fmt(v) for v in r["iou_per_class"]]])
        w.writerow([mode, "MEAN", *[_fmt(res["per_image_mean"][k]) for k in SUMMARY_KEYS], *[""] * n_classes])
        if res["pooled"] is not None:
            p = res["pooled"]
            w.writerow([mode, "POOLED", *[_fmt(p[k]) for k in SUMMARY_KEYS], *[_fmt(v) for v in p["iou_per_class"]]])
    atomic_write_text(target, buf.getvalue())


def print_summary(result: dict) -> None:
    """The end-of-test table; the first column uses BiaPy's line names."""
    print()
    print(f"{'Test':<44} {'Foreground IoU':>14} {'(pooled)':>9} {'mean IoU':>9} {'Dice':>7} {'accuracy':>9}")
    for mode, res in result.items():
        m, p = res["per_image_mean"], res["pooled"]
        unit = "patch" if mode == "per patch" else "image"
        label = f"Test Foreground IoU ({mode})"
        print(
            f"{label:<44} {_fmt(m['foreground_iou']):>14} {_fmt(p['foreground_iou']) if p else '-':>9} "
            f"{_fmt(m['mean_iou']):>9} {_fmt(m['foreground_dice']):>7} {_fmt(m['accuracy']):>9}   (mean per {unit})"
        )
    merged = result.get("merge patches")
    if merged and merged["pooled"]:
        per_class = ", ".join(f"{c}: {_fmt(v)}" for c, v in enumerate(merged["pooled"]["iou_per_class"]))
        print(f"IoU per class (merge patches, pooled): {per_class}")
