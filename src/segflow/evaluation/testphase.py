"""The test phase: predict every test image the ways the config asks, write the outputs, measure them.

Modes, with BiaPy's names: ``per patch`` (IoU of non-overlapping patches predicted alone, without
test-time augmentation, averaged: a diagnostic, since empty patches weigh as much as full ones),
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

from segflow.config.schema import Config
from segflow.data.pairs import list_pairs, read_pair
from segflow.encodings import get_encoding
from segflow.errors import SegflowError
from segflow.evaluation.metrics import SUMMARY_KEYS, Scorer
from segflow.evaluation.postprocess import (
    apply_median_filters,
    filters_for,
    median_filters,
)
from segflow.evaluation.ranks import gather, share
from segflow.inference.predictor import Predictor
from segflow.io.atomic import atomic_write_text
from segflow.io.formats import write_tiff
from segflow.io.images import label_style, write_output
from segflow.io.paths import RunPaths
from segflow.progress import each_image
from segflow.runtime import is_rank_zero


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


class Recorder:
    """Writes each mode's outputs (``<folder>/``) and labels (``<binarized>/``) and scores them."""

    def __init__(self, cfg: Config, predictor: Predictor, paths: RunPaths) -> None:
        self.cfg, self.predictor, self.paths = cfg, predictor, paths
        self.modes: dict[str, Scorer] = {}

    def emit(
        self,
        mode: str,
        folder: Path,
        binarized: Path | None,
        src: Path,
        probs: np.ndarray,
        mask: np.ndarray | None,
        ndim: int,
        mask_path: Path | None = None,
    ) -> None:
        """Decode ``probs`` with the threshold the IoU uses, write both, and score them against ``mask``.

        The labels take the form of the user's mask file ``mask_path`` (see ``images.label_style``).
        """
        labels = self.predictor.labels(probs)
        reference = src if src.is_file() else None
        write_tiff(folder / f"{src.stem}.tif", probs.astype(np.float32, copy=False), ndim, reference=reference)
        if binarized is not None and labels is not None:
            self._write_labels(binarized, src, labels, ndim, reference, mask_path)
        if mask is not None:
            self.scorer(mode).add(src.name, probs, labels, mask)

    def _write_labels(
        self, folder: Path, src: Path, labels: np.ndarray, ndim: int, reference: Path | None, mask_path: Path | None
    ) -> None:
        model_cfg = self.predictor.cfg
        enc = get_encoding(model_cfg)
        if not self.cfg.DATA.TEST.ARGMAX_TO_OUTPUT and (enc.n > 2 or enc.bitwise):
            # One 0/1 channel per class instead of a label (or bitmask) image: only TIFF holds that.
            write_tiff(folder / f"{src.stem}.tif", enc.class_channels(labels), ndim, reference=reference)
            return
        suffix, palette = label_style(mask_path)
        if suffix == ".png" and (ndim != 2 or labels.max(initial=0) > 65535):
            suffix = ".tif"  # a PNG holds one 2D image of at most 16 bits
        write_output(folder / f"{src.stem}{suffix}", labels, ndim, reference=reference, palette=palette)

    def scorer(self, mode: str) -> Scorer:
        return self.modes.setdefault(mode, Scorer(self.predictor.cfg))


def run_test(cfg: Config, paths: RunPaths, predictor: Predictor, checkpoint: str | None = None) -> dict:
    """Predict ``DATA.TEST.PATH`` as the config says (by chunks with ``TEST.BY_CHUNKS.ENABLE``: ``checkpoint`` is
    then the model's file, which each chunk worker loads); return the scores of each mode (empty without masks)."""
    stack = cfg.TEST.ANALIZE_2D_IMGS_AS_3D_STACK and predictor.cfg.ndim == 2
    if (cfg.TEST.BY_CHUNKS.ENABLE or stack) and not is_rank_zero():
        return {}  # in a DDP run rank 0 alone predicts volumes by chunks (its workers share them) and 3D stacks
    if cfg.TEST.BY_CHUNKS.ENABLE:
        from segflow.evaluation.testphase_chunks import run_test_by_chunks

        if checkpoint is None:
            raise SegflowError("TEST.BY_CHUNKS.ENABLE: the test phase by chunks needs the model's checkpoint file")
        return report(run_test_by_chunks(cfg, paths, predictor, checkpoint), paths, paths.per_image())
    # The checkpoint fixes the model and its data format; the run's config decides test data and outputs.
    t = cfg.DATA.TEST
    ndim = predictor.cfg.ndim
    tta = cfg.TEST.AUGMENTATION
    filters = median_filters(cfg)
    image_filters = filters_for(filters, ndim)  # in 2D, the z filters wait for the stack
    rec = Recorder(cfg, predictor, paths)
    pairs = list_pairs(t.PATH, t.GT_PATH if t.LOAD_GT else None, "test")
    patches = Scorer(predictor.cfg)
    stacked: list[tuple[np.ndarray, np.ndarray | None]] = []

    rules = get_encoding(predictor.cfg) if t.CHECK_DATA else None
    # In a DDP run each process predicts and writes its share; a 3D stack needs every image in one process.
    mine = pairs if stack else share(pairs)
    for src, mask_path in each_image(mine, "test image", lambda pair: pair[0].name):
        image, mask = read_pair(predictor.cfg, src, mask_path, "test", rules)
        probs = predictor.predict(image, tta=tta, progress=True, source=src)
        rec.emit("merge patches", paths.per_image(), paths.per_image("_binarized"), src, probs, mask, ndim, mask_path)
        if mask is not None:
            for region, p in predictor.predict_patches(image):
                patches.add("patch", p, predictor.labels(p), mask[region])
        if image_filters:
            rec.emit("merge patches - post-processing", paths.per_image("_post_processing"), None, src, apply_median_filters(probs, image_filters), mask, ndim)
        if cfg.TEST.FULL_IMG:
            full = predictor.predict(image, tta=tta, full_image=True, source=src)
            rec.emit("full image", paths.sub("full_image"), paths.sub("full_image_binarized"), src, full, mask, ndim, mask_path)
            if image_filters:
                rec.emit("full image - post-processing", paths.sub("full_post_processing"), None, src, apply_median_filters(full, image_filters), mask, ndim)
        if stack:
            stacked.append((probs, mask))

    if stacked:
        _as_3d_stack(stacked, pairs[0][0], filters, rec)
    modes = {"per patch": patches, **rec.modes} if patches.rows else rec.modes
    modes = modes if stack else gather(modes, [src.name for src, _ in pairs], predictor.cfg)
    return {} if modes is None else report(modes, paths, paths.per_image(), len(pairs))


def report(modes: dict[str, Scorer], paths: RunPaths, where: Path, images: int | None = None) -> dict:
    """The scores of each mode, written to the metrics CSV and printed; ``{}`` (and where the predictions went) when
    no mode scored an image."""
    if not any(m.rows for m in modes.values()):
        print(f"Predicted {'the' if images is None else images} test image(s) into {where}")
        return {}
    result = {mode: m.summary() for mode, m in modes.items()}
    if "per patch" in result:
        result["per patch"]["pooled"] = None  # patches overlap at the borders; only their mean is meaningful
    write_metrics_csv(result, paths.test_metrics)
    print_summary(result)
    return result


def _as_3d_stack(stacked: list[tuple[np.ndarray, np.ndarray | None]], first: Path, filters: list[tuple[str, int]], rec: Recorder) -> None:
    """Stack the 2D predictions in file order into one volume, write it, filter it along z, score both."""
    shapes = {p.shape for p, _ in stacked}
    if len(shapes) > 1:
        raise SegflowError(f"TEST.ANALIZE_2D_IMGS_AS_3D_STACK needs test images of one size; found {sorted(shapes)}")
    probs = np.stack([p for p, _ in stacked])
    masks = [m for _, m in stacked]
    mask = np.stack(masks) if all(m is not None for m in masks) else None
    name = first.parent / f"{first.stem}_stack.tif"  # not a file: names the outputs
    rec.emit("as 3D stack", rec.paths.sub("as_3d_stack"), rec.paths.sub("as_3d_stack_binarized"), name, probs, mask, 3)
    if filters:
        rec.emit("as 3D stack - post-processing", rec.paths.sub("as_3d_stack_post_processing"), None, name, apply_median_filters(probs, filters), mask, 3)


def write_metrics_csv(result: dict, target: Path) -> None:
    """One row per (mode, image), then per mode the mean over images and the pooled (all pixels) row."""
    n_classes = max((len(r["iou_per_class"]) for res in result.values() for r in res["per_image"]), default=0)
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
    """The end-of-test table; the first column uses BiaPy's line names, as wide as the longest of them."""
    regression = any(not math.isnan(res["per_image_mean"]["mse"]) for res in result.values())
    extra = f" {'MSE':>9} {'MAE':>9}" if regression else ""
    labels = {mode: f"Test Foreground IoU ({mode})" for mode in result}
    width = max(len(label) for label in labels.values()) if labels else len("Test")
    print()
    columns = f"{'Foreground IoU':>14} {'(pooled)':>9} {'mean IoU':>9} {'Dice':>7} {'accuracy':>9}{extra}"
    print(f"{'Test':<{width}} {columns}")
    for mode, res in result.items():
        m, p = res["per_image_mean"], res["pooled"]
        unit = "patch" if mode == "per patch" else "image"
        errors = f" {_fmt(m['mse']):>9} {_fmt(m['mae']):>9}" if regression else ""
        print(
            f"{labels[mode]:<{width}} {_fmt(m['foreground_iou']):>14} {_fmt(p['foreground_iou']) if p else '-':>9} "
            f"{_fmt(m['mean_iou']):>9} {_fmt(m['foreground_dice']):>7} {_fmt(m['accuracy']):>9}{errors}   (mean per {unit})"
        )
    main = next((m for m in ("merge patches", "by chunks") if m in result), None)
    merged = result.get(main) if main else None
    if merged and merged["pooled"] and merged["pooled"]["iou_per_class"]:
        per_class = ", ".join(f"{c}: {_fmt(v)}" for c, v in enumerate(merged["pooled"]["iou_per_class"]))
        print(f"IoU per class ({main}, pooled): {per_class}")
