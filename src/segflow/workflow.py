"""The ``run`` and ``check`` commands: config, then training and the test phase, as the config says."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segflow.config import load_config
from segflow.data import list_pairs, n_val_images, read_pair
from segflow.errors import SegflowError
from segflow.paths import RunPaths
from segflow.schema import Config


def _print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"warning: {w}")


def check_writable(folder: Path) -> None:
    """Fail early, before hours of training, if results cannot be written."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise SegflowError(f"--result_dir {folder}: {probe} is not writable; choose a folder you can write to")


def run(
    config_path: str | os.PathLike,
    result_dir: str | os.PathLike,
    name: str,
    run_id: str = "1",
    gpu: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    resume_run: bool = False,
) -> dict:
    """Train and/or test as ``TRAIN.ENABLE`` / ``TEST.ENABLE`` say; return the test scores (if any).

    A run that already has checkpoints continues where it stopped: an unfinished training resumes
    from its last checkpoint, a finished one goes straight to testing. ``overwrite`` starts afresh;
    ``resume_run`` insists on resuming (and trains further if TRAIN.EPOCHS was raised).
    """
    from segflow.data import load_train_data
    from segflow.inference import Predictor, check_model_matches, load_checkpoint
    from segflow.testphase import run_test
    from segflow.training import choose_checkpoint, finished_marker, resolve_devices, resume_point, train, write_config_copy

    cfg, warnings = load_config(config_path, overrides)
    _print_warnings(warnings)
    if "/" in name or "/" in str(run_id):
        raise SegflowError(f"--name {name} --run_id {run_id}: must not contain '/'")
    paths = RunPaths(Path(result_dir).resolve(), name, str(run_id))
    if not cfg.TRAIN.ENABLE and not cfg.TEST.ENABLE:
        raise SegflowError(f"{config_path}: TRAIN.ENABLE and TEST.ENABLE are both false; nothing to do")
    accelerator, devices = resolve_devices(gpu, cfg.SYSTEM.DEVICE)  # a wrong --gpu fails before any work
    check_writable(paths.root)
    resume = None if overwrite or not cfg.TRAIN.ENABLE else resume_point(paths)
    if cfg.TRAIN.ENABLE and resume_run and resume is None:
        raise SegflowError(f"--resume: run {paths.job} has no checkpoint in {paths.checkpoints} to resume from; drop --resume to start it")
    train_now = cfg.TRAIN.ENABLE and (resume is None or resume_run or not finished_marker(paths).is_file())
    # Everything that can be checked is checked before anything is written or trained.
    data = load_train_data(cfg) if train_now else None
    if cfg.TEST.ENABLE:
        list_pairs(cfg.DATA.TEST.PATH, cfg.DATA.TEST.GT_PATH if cfg.DATA.TEST.LOAD_GT else None, "test")
    if not train_now:
        checkpoint = choose_checkpoint(cfg, paths)
        if cfg.TEST.ENABLE:
            check_model_matches(checkpoint, load_checkpoint(checkpoint), cfg)
    write_config_copy(cfg, paths, Path(config_path).name)
    if train_now:
        checkpoint = train(cfg, paths, gpu, data=data, resume=resume)
    elif cfg.TRAIN.ENABLE:
        print(f"Training of run {paths.job} already finished (use --overwrite to train again, --resume to train further)")
    result: dict = {}
    if cfg.TEST.ENABLE:
        device = f"cuda:{devices[0]}" if accelerator == "gpu" else "cpu"
        result = run_test(cfg, paths, Predictor.from_checkpoint(checkpoint, device))
    print(f"FINISHED JOB {paths.job}: results in {paths.run}, checkpoints in {paths.checkpoints}")
    return result


def _describe(label: str, cfg: Config, image_dir: str, mask_dir: str | None, what: str) -> list:
    from segflow.encodings import BITMASK, REGRESSION, bits, encoding

    pairs = list_pairs(image_dir, mask_dir, what)
    shapes, dtypes = set(), set()
    kind = encoding(cfg)
    n = cfg.MODEL.N_CLASSES
    counts = np.zeros(n, dtype=np.int64)
    total = 0
    lo, hi = np.inf, -np.inf
    samples, constant = [], []
    for img_path, mask_path in pairs:
        image, mask = read_pair(cfg, img_path, mask_path, what)
        if image.size and image.min() == image.max():
            constant.append((img_path, image.flat[0]))
        shapes.add(image.shape)
        dtypes.add(str(image.dtype))
        if mask is not None:
            valid = mask[mask != cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID] if cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID >= 0 else mask.ravel()
            total += valid.size
            if kind in REGRESSION:
                lo, hi = min(lo, float(valid.min(initial=np.inf))), max(hi, float(valid.max(initial=-np.inf)))
            elif kind in BITMASK:
                counts += bits(valid, n).sum(0)
            elif kind == "categorical":
                values, k = np.unique(valid, return_counts=True)
                keep = (values >= 0) & (values < n)
                counts[values[keep].astype(np.int64)] += k[keep]
        samples.append(image.shape)
    print(f"{label}: {len(pairs)} image{'s' if len(pairs) != 1 else ''}" + (" with masks" if mask_dir else "") + f" from {image_dir}")
    print(f"  shapes {', '.join(str(s) for s in sorted(shapes))}; dtypes {', '.join(sorted(dtypes))}")
    if mask_dir is not None and total:
        if kind in REGRESSION:
            print(f"  target values ({kind}): {lo:g} .. {hi:g}" if kind == "linear" else f"  foreground for the distance transform: mask > 0")
        elif kind in (*BITMASK, "categorical"):
            what_is = "bit classes (pixel fraction, classes may overlap)" if kind in BITMASK else "classes (pixel fraction)"
            print(f"  {what_is}: " + ", ".join(f"{c}: {k / total:.1%}" for c, k in enumerate(counts)))
            for c in np.flatnonzero(counts == 0):
                print(f"  warning: class {c} never occurs in these masks")
    for path, value in constant:
        print(f"  warning: {path}: every pixel is {value}; a constant image teaches the network nothing (a failed export or conversion?)")
    return samples


def check(config_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate the config and read every image and mask it names, printing what was found."""
    from segflow.training import check_patch_fits_model

    cfg, warnings = load_config(config_path, overrides)
    _print_warnings(warnings)
    check_patch_fits_model(cfg)
    d = cfg.DATA
    print(f"Config {config_path}: valid ({cfg.PROBLEM.NDIM}, {cfg.MODEL.N_CLASSES} classes, patch {tuple(d.PATCH_SIZE)}, {cfg.MODEL.ARCHITECTURE})")
    if cfg.TRAIN.ENABLE:
        train_shapes = _describe("train", cfg, d.TRAIN.PATH, d.TRAIN.GT_PATH, "train")
        if d.VAL.FROM_TRAIN:
            n_val = n_val_images(len(train_shapes), d.VAL.SPLIT_TRAIN)
            print(f"validation: {n_val} of the training images (DATA.VAL.SPLIT_TRAIN={d.VAL.SPLIT_TRAIN})" if n_val else f"validation: the last {d.VAL.SPLIT_TRAIN:.0%} of the single training image")
        else:
            _describe("validation", cfg, d.VAL.PATH, d.VAL.GT_PATH, "validation")
        small = [s for s in train_shapes if any(a < p for a, p in zip(s[:-1], cfg.spatial_patch))]
        if small and not d.REFLECT_TO_COMPLETE_SHAPE:
            raise SegflowError(
                f"{len(small)} training image(s) (e.g. shape {small[0][:-1]}) are smaller than DATA.PATCH_SIZE {cfg.spatial_patch}; "
                "use a smaller patch or DATA.REFLECT_TO_COMPLETE_SHAPE: true"
            )
    if cfg.TEST.ENABLE:
        _describe("test", cfg, d.TEST.PATH, d.TEST.GT_PATH if d.TEST.LOAD_GT else None, "test")
    print("OK: config and data are ready")
    return cfg
