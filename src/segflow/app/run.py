"""The ``run`` command: config, then training and the test phase, as the config says; the checks ``check`` shares."""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import shutil
from pathlib import Path

from segflow.config.loader import load_config
from segflow.config.schema import Config
from segflow.data.loading import TrainData
from segflow.data.pairs import list_pairs, read_pair
from segflow.data.sources import Sample
from segflow.errors import SegflowError
from segflow.io.paths import RunPaths


def print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"warning: {w}")


def check_writable(folder: Path, result_dir: Path) -> None:
    """Fail early, before hours of training, if results cannot be written below ``folder``: its nearest
    existing folder must be a folder (not a file) that this user can write to."""
    probe = folder
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
    except OSError as exc:
        if exc.errno not in (errno.ENAMETOOLONG, errno.ELOOP):
            raise  # permission problems get the CLI's own line
        too_long = exc.errno == errno.ENAMETOOLONG
        fix = "use shorter folder names" if too_long else "fix the symbolic link loop, or give a real folder"
        raise SegflowError(f"--result_dir {result_dir}: {folder} cannot be made ({exc.strerror}); {fix}") from None
    if not probe.is_dir():
        if probe == result_dir:
            raise SegflowError(
                f"--result_dir {result_dir} is a file, not a folder; choose a folder (it is created if missing)"
            )
        made = "where a folder is needed" if probe == folder else f"so {folder} cannot be made"
        raise SegflowError(
            f"--result_dir {result_dir}: {probe} is a file, {made}; "
            "move the file away, or choose another --result_dir or --name"
        )
    if not os.access(probe, os.W_OK):
        raise SegflowError(f"--result_dir {result_dir}: {probe} is not writable; choose a folder you can write to")


def check_outputs(paths: RunPaths) -> None:
    """Every folder the run writes can be made or written, and no file it writes is a folder."""
    for folder in (paths.root, paths.config_files, paths.checkpoints, paths.run):
        check_writable(folder, paths.result_dir)
    for target in (paths.config_copy, paths.checkpoint("best"), paths.checkpoint("last"), paths.finished_marker):
        if target.is_dir():
            raise SegflowError(
                f"{target} is a folder, where run {paths.job} writes a file; move it away, or choose another --run_id"
            )


def remove_run_outputs(paths: RunPaths) -> None:
    """``--overwrite``, once every check has passed: remove what this run's earlier training left (its
    checkpoints with their ``.prev``/``.part`` files, finished marker, logs, charts, TensorBoard events and
    augmentation samples), so that no later fallback, resume or plot mixes the two runs. Other runs' files
    and this run's test outputs (rewritten by its test phase) are left alone."""
    for path in paths.own_checkpoints():
        path.unlink(missing_ok=True)
    for folder in paths.training_outputs():
        if folder.is_dir():
            shutil.rmtree(folder)


def check_split_fits_patch(cfg: Config, train: list[Sample], val: list[Sample]) -> None:
    """Every training and validation sample (after the split) must hold one patch, unless
    DATA.REFLECT_TO_COMPLETE_SHAPE pads it. A single training image is split along its first axis
    (y in 2D, z in 3D); when that makes a part too small, say so instead of naming a shape the user never gave."""
    from segflow.data.patches import fit_to_patch

    if cfg.DATA.REFLECT_TO_COMPLETE_SHAPE:
        return
    patch = cfg.spatial_patch
    single = cfg.DATA.VAL.FROM_TRAIN and len(train) == len(val) == 1 and train[0].path == val[0].path
    if single:
        head, tail = train[0].image.shape[:-1], val[0].image.shape[:-1]
        fits_across = all(a >= p for a, p in zip(head[1:], patch[1:]))
        if fits_across and min(head[0], tail[0]) < patch[0]:
            raise SegflowError(_split_message(cfg, train[0].path, head, tail))
    for sample in train + val:
        fit_to_patch(sample, patch, reflect=False)  # raises, naming the image, when it is smaller than the patch


def _split_message(cfg: Config, path: Path, head: tuple[int, ...], tail: tuple[int, ...]) -> str:
    fraction, p, n = cfg.DATA.VAL.SPLIT_TRAIN, cfg.spatial_patch[0], head[0] + tail[0]
    axis = "y (rows)" if cfg.ndim == 2 else "z (slices)"
    low, high = math.ceil(100 * p / n) / 100, math.floor(100 * (n - p) / n) / 100
    fix = ""  # with an image less than two patches long, no fraction fits
    if 0 < low <= high < 1:
        fix = f"set DATA.VAL.SPLIT_TRAIN to {low:g}, " if low == high else f"set DATA.VAL.SPLIT_TRAIN between {low:g} and {high:g}, "
    return (
        f"{path}: the only training image is split along {axis} for validation (DATA.VAL.SPLIT_TRAIN={fraction:g}): "
        f"{head[0]} of its {n} go to training {head}, {tail[0]} to validation {tail}, and the "
        f"{'validation' if tail[0] < p else 'training'} part is smaller than DATA.PATCH_SIZE {cfg.spatial_patch}; "
        f"{fix}give validation images (DATA.VAL.FROM_TRAIN: false with DATA.VAL.PATH and GT_PATH), "
        "or set DATA.REFLECT_TO_COMPLETE_SHAPE: true"
    )


def check_stack_sizes(cfg: Config, shapes: list[tuple[Path, tuple[int, ...]]]) -> None:
    """TEST.ANALIZE_2D_IMGS_AS_3D_STACK stacks the 2D test images into one volume: they must share one size.
    ``shapes``: each test image with its shape ``(y, x, c)``."""
    if not (cfg.TEST.ANALIZE_2D_IMGS_AS_3D_STACK and cfg.ndim == 2) or not shapes:
        return
    first_path, first = shapes[0]
    for path, shape in shapes[1:]:
        if shape[:-1] != first[:-1]:
            raise SegflowError(
                f"TEST.ANALIZE_2D_IMGS_AS_3D_STACK stacks the test images of {cfg.DATA.TEST.PATH} into one volume, "
                f"so they must have one size, but {first_path.name} is {first[:-1]} and {path.name} is {shape[:-1]}; "
                "give test images of one size, or set TEST.ANALIZE_2D_IMGS_AS_3D_STACK: false"
            )


def check_test_data(cfg: Config) -> None:
    """Read every test image and mask once, one pair at a time, before anything is written or trained: a
    test mask with a wrong class or size must not surface after hours of training, nor halfway through
    rewriting a finished run's test outputs."""
    from segflow.encodings import get_encoding

    if cfg.TEST.BY_CHUNKS.ENABLE:
        from segflow.evaluation.testphase_chunks import check_test_volumes

        check_test_volumes(cfg)  # opened lazily: volumes larger than RAM are read by chunks, later
        return
    t = cfg.DATA.TEST
    shapes = []
    rules = get_encoding(cfg) if t.CHECK_DATA else None
    for img_path, mask_path in list_pairs(t.PATH, t.GT_PATH if t.LOAD_GT else None, "test"):
        image, _ = read_pair(cfg, img_path, mask_path, "test", rules)
        shapes.append((img_path, image.shape))
    check_stack_sizes(cfg, shapes)


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
    Everything is checked before anything is written. Several processes on this machine (``--gpu 0,1``,
    SYSTEM.NUM_PROCESSES) or machines (SYSTEM.NUM_NODES) are started here (``spawn``), each running this command;
    then the scores are those of ``test_metrics.csv`` and the returned dict is empty.
    """
    from segflow.app.spawn import spawn
    from segflow.runtime import resolve_devices, spawn_layout
    from segflow.training.datasets import make_datasets
    from segflow.training.trainer import check_world

    if overwrite and resume_run:
        raise SegflowError("--overwrite and --resume contradict each other (train afresh, or continue); give one of them")
    cfg, warnings = load_config(config_path, overrides)
    accelerator, devices = resolve_devices(gpu, cfg.SYSTEM.DEVICE)  # a wrong --gpu fails before any work
    layout = spawn_layout(accelerator, devices, cfg.SYSTEM.NUM_PROCESSES, cfg.SYSTEM.NUM_NODES)
    # When segflow starts the processes, this one only checks, silently: its processes say it all again.
    with contextlib.redirect_stdout(io.StringIO()) if layout else contextlib.nullcontext():
        print_warnings(warnings)
        paths = RunPaths.checked(result_dir, name, str(run_id))
        if not cfg.TRAIN.ENABLE and not cfg.TEST.ENABLE:
            raise SegflowError(f"{config_path}: TRAIN.ENABLE and TEST.ENABLE are both false; nothing to do")
        check_outputs(paths)
        train_now, resume, data, checkpoint = _plan(cfg, paths, overwrite, resume_run)
        if layout and data is not None:
            check_world(cfg, layout[0] * layout[1], len(make_datasets(cfg, data)[0]))
    if layout:
        del data  # each process reads its own
        gpus = devices if isinstance(devices, list) and accelerator == "gpu" else None
        flags = ["--config", str(config_path), "--result_dir", str(result_dir), "--name", name, "--run_id", str(run_id)]
        flags += [*(a for o in overrides for a in ("-D", o)), *(["--overwrite"] if overwrite else []), *(["--resume"] if resume_run else [])]
        # Each process sees its GPU of --gpu as GPU <local rank> (spawn sets CUDA_VISIBLE_DEVICES).
        flags += ["--gpu", ",".join(str(i) for i in range(len(gpus))) if gpus else "cpu"]
        spawn(["run", *flags], *layout, cfg.SYSTEM.DIST_TIMEOUT, gpus, lambda: resume_hint(paths))
        return {}  # the scores are in the run's test_metrics.csv
    return _train_and_test(cfg, paths, gpu, (train_now, resume, data, checkpoint), overwrite)


def _train_and_test(cfg: Config, paths: RunPaths, gpu: str | None, plan: tuple, overwrite: bool) -> dict:
    """Train (or resume) and test in this process as ``_plan`` said (``plan``), as one of a distributed run's
    processes or alone; return the test scores."""
    from segflow.evaluation.testphase import run_test
    from segflow.inference.predictor import Predictor
    from segflow.report.charts import Charts
    from segflow.runtime import is_rank_zero, rank_device, resolve_devices, synchronize
    from segflow.training.runstate import write_config_copy
    from segflow.training.trainer import train

    train_now, resume, data, checkpoint = plan
    accelerator, devices = resolve_devices(gpu, cfg.SYSTEM.DEVICE)
    writer = is_rank_zero()  # in a distributed run the other processes train with it and write nothing
    if overwrite and train_now and writer:
        remove_run_outputs(paths)
    if writer:
        write_config_copy(cfg, paths)
    if train_now:
        checkpoint = train(cfg, paths, gpu, data=data, resume=resume, callbacks=[Charts(paths)])
    elif cfg.TRAIN.ENABLE:
        print(f"Training of run {paths.job} already finished (use --overwrite to train again, --resume to train further)")
    result: dict = {}
    if cfg.TEST.ENABLE:  # in a DDP run on every process: each predicts its share of the test images
        synchronize()  # rank 0's last checkpoint is whole before any process loads it
        result = run_test(cfg, paths, Predictor.from_checkpoint(checkpoint, rank_device(accelerator, devices)), str(checkpoint))
    if writer and cfg.MODEL.BMZ.EXPORT.ENABLE:
        from segflow.app.export import export_after_run

        export_after_run(cfg, paths.job, paths.run, checkpoint)
    if writer:
        print(f"FINISHED JOB {paths.job}: results in {paths.run}, checkpoints in {paths.checkpoints}")
    return result


def resume_hint(paths: RunPaths) -> str:
    """What the same command does next for run ``paths.job``, as the end of a sentence."""
    from segflow.checkpoint import load_checkpoint
    from segflow.training.runstate import resume_point

    if paths.finished_marker.is_file():
        return "test the trained model (training had finished)"
    point = resume_point(paths)
    if point is None:
        return "start the training again (no epoch had finished)"
    return f"resume the training from {point} ({load_checkpoint(point)['epoch'] + 1} epoch(s) done)"


def _plan(
    cfg: Config, paths: RunPaths, overwrite: bool, resume_run: bool
) -> tuple[bool, Path | None, TrainData | None, Path | None]:
    """What the run will do, checked as far as it can be without writing: ``(train now?, checkpoint to
    resume from, the training data, the checkpoint to test when not training)``."""
    from segflow.checkpoint import check_model_matches, load_checkpoint, optimizer_state
    from segflow.training.datasets import load_data
    from segflow.training.runstate import check_resume, choose_checkpoint, resume_point

    resume = None if overwrite or not cfg.TRAIN.ENABLE else resume_point(paths)
    if cfg.TRAIN.ENABLE and resume_run and resume is None:
        raise SegflowError(
            f"--resume: run {paths.job} has no checkpoint in {paths.checkpoints} to resume from; drop --resume to start it"
        )
    train_now = cfg.TRAIN.ENABLE and (resume is None or resume_run or not paths.finished_marker.is_file())
    if train_now and resume is not None:
        check_resume(cfg, paths, resume)
    if train_now and resume is None and cfg.MODEL.LOAD_CHECKPOINT:  # the checkpoint to fine-tune from fits this network
        start = choose_checkpoint(cfg, paths)
        saved = load_checkpoint(start)
        if not cfg.MODEL.SKIP_UNMATCHED_LAYERS:
            check_model_matches(start, saved, cfg, new_head=True)
        if not cfg.MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS:
            optimizer_state(saved, start, cfg)
    data = load_data(cfg) if train_now else None
    if data is not None:
        check_split_fits_patch(cfg, data.train, data.val)
    if cfg.TEST.ENABLE:
        check_test_data(cfg)
    if cfg.MODEL.BMZ.EXPORT.ENABLE:
        from segflow.app.export import package_image

        package_image(cfg)  # the package's fields and test image, before any training
    checkpoint = None
    if not train_now:
        checkpoint = choose_checkpoint(cfg, paths)
        # The config copy about to be written must describe the network that was trained.
        check_model_matches(checkpoint, load_checkpoint(checkpoint), cfg)
    return train_now, resume if train_now else None, data, checkpoint
