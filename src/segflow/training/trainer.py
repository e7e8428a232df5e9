"""``train()``: the datasets, loaders, callbacks and Lightning Trainer a config asks for, and the run's end.

Lightning gives the loop, DDP (``--gpu 0,1``, torchrun, SLURM), mixed precision, checkpoints,
early stopping and TensorBoard; segflow adds the BiaPy-style epoch log, charts and data checks.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from monai.data import DataLoader

from segflow.checkpoint import check_model_matches, first_names, load_checkpoint, load_weights, optimizer_state
from segflow.config.schema import Config
from segflow.data.augment import write_aug_samples
from segflow.data.loading import TrainData
from segflow.data.patches import PatchDataset, write_prob_maps
from segflow.encodings import get_encoding
from segflow.errors import SegflowError
from segflow.io.atomic import atomic_write_text
from segflow.io.paths import RunPaths
from segflow.models.networks import check_model
from segflow.runtime import is_rank_zero, num_workers, precision, resolve_devices, trainer_layout, worker_warning
from segflow.training.callbacks import AtomicCheckpoint, EpochLog, FirstEpochSeeds, OptimizerFrom, best_line
from segflow.training.datasets import load_data, make_datasets
from segflow.training.module import SegModel
from segflow.training.runstate import check_resume, choose_checkpoint
from segflow.training.sampler import EpochSeededSampler, ShardSampler

# Lightning's start-up banners and tips say nothing a segflow user can act on.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
# Replaced by segflow's own lines: worker_warning() and the one on training without validation.
warnings.filterwarnings("ignore", message="This DataLoader will create .* worker processes in total")
warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")
# Runs with different --run_id share checkpoints/ by design (BiaPy's layout); file names differ.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")

NO_VALIDATION = (
    "warning: training without validation images (DATA.VAL.SPLIT_TRAIN 0): the best checkpoint, early "
    "stopping and reduceonplateau follow the training loss, which says nothing about overfitting"
)


def train(
    cfg: Config,
    paths: RunPaths,
    gpu: str | None = None,
    data: TrainData | None = None,
    resume: Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train as ``cfg`` says (continuing from ``resume``, a checkpoint of this run); return the best checkpoint.

    ``callbacks``: extra Lightning callbacks (timers, probes), run after segflow's own.
    """
    check_model(cfg)
    L.seed_everything(cfg.SYSTEM.SEED, workers=True, verbose=False)
    if cfg.SYSTEM.NUM_CPUS > 0:
        torch.set_num_threads(cfg.SYSTEM.NUM_CPUS)
    data = data or load_data(cfg)
    train_ds, val_ds = make_datasets(cfg, data)
    print(f"Training on {len(data.train)} image(s), {len(train_ds)} patches per epoch; validating on {len(data.val)} image(s), {len(val_ds) if val_ds else 0} patches")

    aug_dir = paths.aug
    writer = is_rank_zero()  # the other processes of a distributed run write nothing
    if writer and cfg.AUGMENTOR.ENABLE and cfg.AUGMENTOR.AUG_SAMPLES and train_ds.transform is not None:
        plain = PatchDataset(
            train_ds.samples, train_ds.patch, mode=train_ds.mode, replicate=cfg.DATA.TRAIN.REPLICATE,
            prob_weights=train_ds.prob_weights, normalizer=train_ds.normalizer, encoding=train_ds.encoding,
        )
        plain.set_random_state(seed=cfg.SYSTEM.SEED + 1)
        pairs = [(it["image"], it["label"]) for it in (plain[i] for i in range(min(cfg.AUGMENTOR.AUG_NUM_SAMPLES, len(plain))))]
        write_aug_samples(train_ds.transform, pairs, aug_dir, cfg.AUGMENTOR.DRAW_GRID)
    if writer and cfg.DATA.PROBABILITY_MAP:
        write_prob_maps(train_ds, Path(cfg.PATHS.PROB_MAP_DIR) if cfg.PATHS.PROB_MAP_DIR else paths.prob_map, aug_dir)

    accelerator, devices = resolve_devices(gpu, cfg.SYSTEM.DEVICE)
    devices, nodes, strategy = trainer_layout(accelerator, devices, cfg.SYSTEM.NUM_PROCESSES, cfg.SYSTEM.NUM_NODES)
    world = (len(devices) if isinstance(devices, list) else devices) * nodes
    check_world(cfg, world, len(train_ds))
    workers = num_workers(cfg.SYSTEM.NUM_WORKERS, accelerator)
    for line in (worker_warning(workers), None if val_ds else NO_VALIDATION):
        if line:
            print(line)
    # Workers are not persistent: made anew each epoch, they get that epoch's seeds (exact resume).
    loader_args = dict(batch_size=cfg.TRAIN.BATCH_SIZE, num_workers=workers, pin_memory=cfg.SYSTEM.PIN_MEM and accelerator == "gpu")
    sampler = EpochSeededSampler(train_ds, cfg.SYSTEM.SEED, cfg.AUGMENTOR.SHUFFLE_TRAIN_DATA_EACH_EPOCH)
    train_loader = DataLoader(train_ds, sampler=sampler, generator=sampler.generator, **loader_args)
    val_loader = DataLoader(val_ds, sampler=ShardSampler(len(val_ds)), **loader_args) if val_ds is not None else None

    monitor = "val_loss" if val_loader is not None else "loss"
    # Saved at the end of the training epoch, after EpochLog has added the epoch's row (checkpoint
    # callbacks run last), so each checkpoint holds the log up to and including its epoch.
    common = dict(dirpath=paths.checkpoints, save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)
    best = AtomicCheckpoint(filename=f"{paths.job}-checkpoint-best", monitor=monitor, mode="min", **common)
    last = AtomicCheckpoint(filename=f"{paths.job}-checkpoint-last", monitor=None, **common)
    n_batches = math.ceil(len(train_ds) / cfg.TRAIN.BATCH_SIZE)
    # In a log file (SLURM, CI) progress bars flood it with redraws; there, EpochLog prints one line per epoch.
    terminal = sys.stdout.isatty()
    epoch_log, seeds = EpochLog(paths, workers, lines=not terminal), FirstEpochSeeds(sampler)
    own: list[Callback] = [best, last, epoch_log, seeds] + ([TQDMProgressBar()] if terminal else [])
    early = EarlyStopping(monitor=monitor, patience=cfg.TRAIN.PATIENCE, mode="min") if cfg.TRAIN.PATIENCE > 0 else None
    if early is not None:
        own.append(early)

    # Class pixel counts weigh the loss only with CLASS_REBALANCE; they read every mask, slow for a large lazy one.
    counts, n_valid = get_encoding(cfg).class_counts(train_ds.targets()) if cfg.LOSS.CLASS_REBALANCE else (None, None)
    model = SegModel(cfg.model_dump(mode="json"), None if counts is None else counts.tolist(), data.normalizer.state(), n_valid)
    model.monitor = monitor
    if cfg.MODEL.LOAD_CHECKPOINT:
        start = choose_checkpoint(cfg, paths)
        ckpt = load_checkpoint(start)
        print(f"Starting from the weights in {start}")
        start_from(model.net, cfg, start, ckpt)
        if not cfg.MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS:
            own.append(OptimizerFrom(optimizer_state(ckpt, start, cfg)))
    prec = precision(cfg, accelerator)
    # The processes of a DDP run wait SYSTEM.DIST_TIMEOUT for each other, then stop with one line (app/dist_errors.py).
    ddp = DDPStrategy(timeout=datetime.timedelta(seconds=cfg.SYSTEM.DIST_TIMEOUT)) if strategy == "ddp" else strategy
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=nodes,
        strategy=ddp,
        sync_batchnorm=world > 1 and accelerator == "gpu",  # on the CPU torch has no SyncBatchNorm
        use_distributed_sampler=False,  # the samplers split the epoch themselves (training/sampler.py)
        precision=prec,
        max_epochs=cfg.TRAIN.EPOCHS,
        accumulate_grad_batches=cfg.TRAIN.ACCUM_ITER,
        callbacks=own + list(callbacks),
        logger=TensorBoardLogger(save_dir=str(paths.run), name=paths.tensorboard_name, version="", default_hp_metric=False),
        default_root_dir=str(paths.run),
        log_every_n_steps=max(1, min(50, n_batches)),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=terminal,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Model: {cfg.MODEL.ARCHITECTURE} {cfg.PROBLEM.NDIM}, {n_params / 1e6:.2f} M parameters, on {accelerator} ({prec})"
          + (f"; {world} processes (DDP) x TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} = {world * cfg.TRAIN.BATCH_SIZE} patches a step" if world > 1 else ""))
    if resume is not None:
        saved = check_resume(cfg, paths, resume)
        print(f"Resuming from {resume} ({saved['epoch'] + 1} epoch(s) done)")
    if writer:
        paths.finished_marker.unlink(missing_ok=True)  # only once the resume is known to be possible
    seeds.epoch = saved["epoch"] + 1 if resume is not None else 0
    fit(trainer, model, train_loader, val_loader, resume)
    best_path = Path(best.best_model_path or last.last_model_path or paths.checkpoint("last"))
    if trainer.is_global_zero:
        print_end(early, epoch_log.rows, monitor, best_path)
        atomic_write_text(paths.finished_marker, json.dumps({"epochs": trainer.current_epoch, "best": str(best_path)}))
    return best_path


def start_from(net: torch.nn.Module, cfg: Config, path: Path, ckpt: dict) -> None:
    """MODEL.LOAD_CHECKPOINT: ``net`` from checkpoint ``path``'s weights, saying what starts anew: the output layer
    for another MODEL.N_CLASSES; with MODEL.SKIP_UNMATCHED_LAYERS every tensor whose name and shape the checkpoint
    lacks (a wider or deeper network from a smaller one)."""
    if cfg.MODEL.SKIP_UNMATCHED_LAYERS:
        fresh = load_weights(net, ckpt, path, "MODEL.* of this config", skip="unmatched")
        total = len(first_names(net))
        print(f"MODEL.SKIP_UNMATCHED_LAYERS: {total - len(fresh)} of the network's {total} tensors from the checkpoint, "
              f"{len(fresh)} start anew" + (f" (e.g. {fresh[0]})" if fresh else ""))  # fmt: skip
        return
    check_model_matches(path, ckpt, cfg, new_head=True)
    fresh = load_weights(net, ckpt, path, "MODEL.* of this config", skip="shape")
    if fresh:
        was = Config.model_validate(ckpt["hyper_parameters"]["config"]).MODEL.N_CLASSES
        print(f"MODEL.N_CLASSES {cfg.MODEL.N_CLASSES}: the checkpoint was trained for {was}; its output layer ({', '.join(fresh)}) "
              "starts anew, every other layer from the checkpoint")  # fmt: skip


def check_world(cfg: Config, world: int, patches: int) -> None:
    """Each of the ``world`` processes of a distributed run gets at least one patch of its own an epoch."""
    if world > patches:
        raise SegflowError(
            f"{world} training processes but only {patches} patches an epoch: every process needs patches of its own; "
            "use fewer processes (--gpu, SYSTEM.NUM_PROCESSES, torchrun --nproc_per_node) or more training data"
        )


def print_end(early: EarlyStopping | None, rows: list[dict[str, float]], monitor: str, best_path: Path) -> None:
    """Say whether early stopping ended training, and which epoch's checkpoint is the best."""
    if early is not None and early.stopped_epoch:
        epoch, patience = early.stopped_epoch + 1, early.patience
        print(f"Early stopping at epoch {epoch}: {monitor} did not improve for TRAIN.PATIENCE={patience} epochs")
    if rows:  # none when a callback stopped training before its first epoch
        print(best_line(rows, monitor, best_path))


def fit(
    trainer: L.Trainer, model: SegModel, train_loader: DataLoader, val_loader: DataLoader | None, resume: Path | None
) -> None:
    """``trainer.fit``, where Ctrl-C raises KeyboardInterrupt (the CLI: ``segflow: interrupted``, exit 130).

    Lightning answers Ctrl-C with its own shutdown and ``sys.exit(1)``; the checkpoints written until then
    are complete (AtomicCheckpoint), so the same command resumes from the last one.
    """
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(model, train_loader, val_loader, ckpt_path=resume)
    except SystemExit:
        if not trainer.interrupted:
            raise
        if handler is not None:  # Lightning ignores Ctrl-C from then on; the caller's handler again
            signal.signal(signal.SIGINT, handler)
        raise KeyboardInterrupt from None


