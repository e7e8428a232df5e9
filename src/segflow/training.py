"""Training with PyTorch Lightning: the LightningModule, optimisers, schedulers, callbacks and the Trainer.

Lightning gives the loop, DDP (``--gpu 0,1``, torchrun, SLURM), mixed precision, checkpoints,
early stopping and TensorBoard; segflow adds the BiaPy-style epoch log, charts and data checks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torchmetrics
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from monai.data import DataLoader
from monai.optimizers import WarmupCosineSchedule

from segflow import __version__
from segflow.atomic import atomic_write_text
from segflow.augment import build_augmentation, write_aug_samples
from segflow.charts import EpochLog, best_line
from segflow.config import config_to_yaml
from segflow.data import TrainData, load_train_data
from segflow.encodings import class_counts, encode, encoding, is_bitmask
from segflow.errors import SegflowError
from segflow.inference import activate, autocast_dtype, check_model_matches, load_checkpoint
from segflow.losses import SegmentationLoss
from segflow.models import build_model, divisor, level_shapes
from segflow.patches import PatchDataset, fit_to_patch, write_prob_maps
from segflow.paths import RunPaths
from segflow.schema import Config

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


class SegModel(L.LightningModule):
    """The network, its loss and IoU metrics; the checkpoint carries the full config and normaliser."""

    def __init__(self, config: dict, class_counts: list[int] | None = None, normalizer: dict | None = None, n_valid: int | None = None) -> None:
        super().__init__()
        # Stored in every checkpoint: enough to rebuild the network and normalise new images.
        self.save_hyperparameters()
        self.cfg = Config.model_validate(config)
        self.net = build_model(self.cfg)
        self.loss_fn = SegmentationLoss(self.cfg, None if class_counts is None else np.asarray(class_counts), n_valid)
        self.train_iou, self.val_iou = self._iou_metric(), self._iou_metric()
        # What ReduceLROnPlateau watches; train() sets "val_loss" when there is validation. Not decided in
        # configure_optimizers: Lightning calls it before the validation loader exists.
        self.monitor = "loss"

    def _iou_metric(self) -> torchmetrics.Metric | None:
        """IoU as the encoding defines it: per class, per bit, or of the predicted foreground (distance)."""
        cfg = self.cfg
        n = cfg.MODEL.N_CLASSES
        ignore = cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID
        if encoding(cfg) == "linear":
            return None
        if is_bitmask(cfg):
            return torchmetrics.classification.MultilabelJaccardIndex(num_labels=n, average="macro", ignore_index=-1)
        if encoding(cfg) == "distance":
            return torchmetrics.JaccardIndex(task="binary", ignore_index=-1)
        kwargs: dict[str, Any] = {"ignore_index": ignore} if ignore >= 0 else {}
        if n == 2:
            return torchmetrics.JaccardIndex(task="binary", **kwargs)
        return torchmetrics.JaccardIndex(task="multiclass", num_classes=n, average="macro", **kwargs)

    def _metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if is_bitmask(self.cfg):
            return (logits > 0).long(), torch.nan_to_num(y, nan=-1).long()
        if encoding(self.cfg) == "distance":
            pred = activate(logits, self.cfg)[:, 0] > 0.5
            return pred.long(), torch.where(torch.isnan(y[:, 0]), -1, (y[:, 0] > 0.5).long())
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        return pred, y[:, 0].long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw network outputs for a batch ``(B, C, ...)``."""
        return self.net(x)

    def _step(self, batch: dict, metric: torchmetrics.Metric | None, prefix: str) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        logits = self(x)
        loss = self.loss_fn(logits, y)
        self.log(f"{prefix}loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        if metric is not None:
            with torch.no_grad():
                metric.update(*self._metric_inputs(logits.float(), y))
            self.log(f"{prefix}IoU", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One optimisation step."""
        loss = self._step(batch, self.train_iou, "")
        if not torch.isfinite(loss):
            raise SegflowError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}; lower TRAIN.LR or check the images for extreme values"
            )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Validation loss and IoU on one batch of the fixed validation patch grid."""
        self._step(batch, self.val_iou, "val_")

    def configure_optimizers(self) -> dict:
        """``TRAIN.OPTIMIZER`` and ``TRAIN.LR_SCHEDULER``."""
        t = self.cfg.TRAIN
        params = self.net.parameters()
        if t.OPTIMIZER == "SGD":
            opt = torch.optim.SGD(params, lr=t.LR, momentum=0.9, weight_decay=t.W_DECAY)
        elif t.OPTIMIZER == "ADAM":
            opt = torch.optim.Adam(params, lr=t.LR, betas=t.OPT_BETAS, weight_decay=t.W_DECAY)
        else:
            opt = torch.optim.AdamW(params, lr=t.LR, betas=t.OPT_BETAS, weight_decay=t.W_DECAY)
        s = t.LR_SCHEDULER
        if not s.NAME:
            return {"optimizer": opt}
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        min_lr = s.MIN_LR if s.MIN_LR >= 0 else t.LR / 100
        if s.NAME == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.LR, total_steps=steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if s.NAME == "warmupcosine":
            warm_epochs = s.WARMUP_COSINE_DECAY_EPOCHS if s.WARMUP_COSINE_DECAY_EPOCHS >= 0 else max(1, t.EPOCHS // 10)
            warm = min(steps - 1, int(steps * warm_epochs / t.EPOCHS))
            sched = WarmupCosineSchedule(opt, warmup_steps=warm, t_total=steps, end_lr=min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        patience = s.REDUCEONPLATEAU_PATIENCE if s.REDUCEONPLATEAU_PATIENCE >= 0 else max(1, t.PATIENCE // 2) if t.PATIENCE > 0 else 10
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=s.REDUCEONPLATEAU_FACTOR, patience=patience, min_lr=min_lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "monitor": self.monitor}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step a scheduler when Lightning says, except ReduceLROnPlateau: that one steps in on_train_epoch_end."""
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            super().lr_scheduler_step(scheduler, metric)

    def on_train_epoch_end(self) -> None:
        """Step ReduceLROnPlateau on this epoch's monitored loss.

        Lightning would step it after the epoch's checkpoints are written, and skips that step for the epoch
        a run resumes after; stepped here (after EpochLog logged the epoch's lr, before the checkpoints),
        each checkpoint holds the state after its epoch and a resumed run continues exactly.
        """
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step(float(self.trainer.callback_metrics[self.monitor]))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Mark the file as segflow's, with the version that wrote it."""
        checkpoint["segflow_version"] = __version__


def previous(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``<name>.prev.pth``."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


class AtomicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` writing ``.pth`` files through a temporary file and a rename, so a kill
    mid-write never leaves a truncated checkpoint in place of a good one."""

    FILE_EXTENSION = ".pth"

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = filepath + ".part"
        try:
            trainer.save_checkpoint(partial, self.save_weights_only)
        except BaseException:
            Path(partial).unlink(missing_ok=True)  # never leave half a checkpoint behind
            raise
        if trainer.is_global_zero:
            if os.path.exists(filepath):  # the previous good one stays, should this one ever be damaged
                os.replace(filepath, previous(filepath))
            os.replace(partial, filepath)
        trainer.strategy.barrier()
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


def distributed_rank() -> int:
    """This process's rank in a distributed (DDP) run; 0 otherwise."""
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


class EpochSeededSampler(torch.utils.data.Sampler):
    """Shuffles training patches, and reseeds every random draw of the epoch, from (SYSTEM.SEED, epoch).

    Lightning calls ``set_epoch`` before each epoch's iterator is made, so epoch ``e`` draws the same
    patches, augmentations, dropout masks and worker seeds whether the run went straight through or
    was killed and resumed from the checkpoint of epoch ``e - 1``.
    """

    def __init__(self, dataset: PatchDataset, seed: int, shuffle: bool) -> None:
        self.dataset, self.seed, self.shuffle = dataset, seed, shuffle
        self.generator = torch.Generator()  # the DataLoader's: worker seeds come from it
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed everything random for ``epoch``; in a distributed run also for this process's rank, so
        that ranks draw different patch positions and augmentations (the order stays one permutation,
        which Lightning's distributed wrapper splits between the ranks)."""
        self.epoch = epoch
        rank = distributed_rank()
        seed = int(np.random.SeedSequence([self.seed, epoch, rank] if rank else [self.seed, epoch]).generate_state(1)[0])
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)
        self.dataset.set_random_state(seed=seed)
        if self.dataset.transform is not None:
            self.dataset.transform.set_random_state(seed=seed)

    def __iter__(self):
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        return iter(order.tolist())

    def __len__(self) -> int:
        return len(self.dataset)


class FirstEpochSeeds(Callback):
    """Seeds the sampler for the first epoch of a fit (``epoch``: 0, or the one a resumed run starts with)
    before Lightning makes that epoch's iterator.

    Lightning makes the first epoch's training iterator in ``FitLoop.setup_data`` (as soon as the fit loop
    starts, or already in ``configure_optimizers`` when a step schedule asks ``trainer.estimated_stepping_batches``),
    before it calls ``sampler.set_epoch`` (later epochs: after). With loader workers, making the iterator starts
    them: it draws their base seed from the loader's generator, copies the transforms' random state into them
    and takes the first indices from the sampler. A resumed run's first epoch thus drew epoch 0's order and
    the initial seeds instead of its own; without workers nothing is drawn before the first batch, which is
    why resume was exact only there. The ``setup`` hook runs before both, once the processes of a DDP run
    know their rank (the seeds depend on it).
    """

    def __init__(self, sampler: EpochSeededSampler, epoch: int = 0) -> None:
        self.sampler, self.epoch = sampler, epoch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.sampler.set_epoch(self.epoch)


def resolve_devices(gpu: str | None, system_device: str) -> tuple[str, list[int] | int]:
    """Lightning's ``accelerator`` and ``devices`` from ``--gpu`` (``0``, ``0,1`` or ``cpu``) and SYSTEM.DEVICE."""
    if gpu is None:
        if system_device == "cpu" or (system_device == "auto" and not torch.cuda.is_available()):
            return "cpu", 1
        gpu = "0"
    if gpu.strip().lower() == "cpu":
        return "cpu", 1
    try:
        ids = [int(g) for g in gpu.split(",") if g.strip()]
    except ValueError:
        raise SegflowError(f"--gpu {gpu}: expected GPU numbers such as 0 or 0,1, or 'cpu'") from None
    available = torch.cuda.device_count()
    missing = [i for i in ids if i >= available]
    if not ids or missing:
        have = f"GPUs 0..{available - 1}; choose one of those or --gpu cpu" if available else "no CUDA GPU; use --gpu cpu"
        raise SegflowError(f"--gpu {gpu}: this machine has {have}")
    return "gpu", ids


def precision(cfg: Config, accelerator: str) -> str:
    """Lightning precision for TRAIN.PRECISION on this device (the same choice prediction makes)."""
    dtype = autocast_dtype(cfg.TRAIN.PRECISION, "cuda" if accelerator == "gpu" else "cpu")
    if dtype == torch.bfloat16 and accelerator == "cpu" and cfg.ndim == 3 and any(shape[0] == 2 for shape in level_shapes(cfg)):
        # torch 2.13's CPU (oneDNN) bf16 Conv3d computes wrong weight gradients for inputs 2 deep (z only;
        # tests/test_fast_paths.py keeps the check): such a network trains in fp32 on the CPU.
        if cfg.TRAIN.PRECISION == "bf16":
            print(f"warning: TRAIN.PRECISION bf16: a level of this 3D network is 2 voxels deep {level_shapes(cfg)}, where bf16 training on the CPU is wrong (a torch bug); training in fp32")
        dtype = None
    return {None: "32-true", torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}[dtype]


def worker_warning(workers: int) -> str | None:
    """segflow's line, in place of torch's (twice-printed) one, when SYSTEM.NUM_WORKERS exceeds the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers <= cores:
        return None
    return (
        f"warning: SYSTEM.NUM_WORKERS {workers} is more than the {cores} core(s) this process may use; extra "
        f"loader processes only compete for them (loading may slow down or stall): use at most {cores}, "
        "or -1 for segflow's choice"
    )


def num_workers(setting: int, accelerator: str) -> int:
    """SYSTEM.NUM_WORKERS; -1: on a GPU one worker per spare core (at most 4), on the CPU none.

    Training on the CPU already keeps every core busy, and a worker process competes with it: on 2
    cores, 2D epochs ran 1.79x the plain baseline loop with 1 worker and 2.19x with none, where loading
    and augmentation took 4% of the epoch (bench/README.md).
    """
    if setting >= 0:
        return setting
    return max(0, min(4, (os.cpu_count() or 1) - 1)) if accelerator == "gpu" else 0


def check_patch_fits_model(cfg: Config) -> None:
    """The network halves the patch at each level, so its size must divide evenly."""
    div = divisor(cfg)
    bad = [(p, d) for p, d in zip(cfg.spatial_patch, div) if p % d]
    if bad:
        fixed = tuple(max(d, round(p / d) * d) for p, d in zip(cfg.spatial_patch, div))
        raise SegflowError(
            f"DATA.PATCH_SIZE {tuple(cfg.DATA.PATCH_SIZE)}: each spatial size must be a multiple of {div} for "
            f"{len(cfg.MODEL.FEATURE_MAPS)} MODEL.FEATURE_MAPS levels; use e.g. {fixed + (cfg.in_channels,)} or fewer levels"
        )


def make_datasets(cfg: Config, data: TrainData) -> tuple[PatchDataset, PatchDataset | None]:
    """Training patches (grid or random, augmented) and the fixed validation grid."""
    d = cfg.DATA
    patch = cfg.spatial_patch
    train, val = (
        [replace(s, target=encode(s.mask, cfg)) for s in (fit_to_patch(s, patch, d.REFLECT_TO_COMPLETE_SHAPE) for s in part)]
        for part in (data.train, data.val)
    )
    transform = build_augmentation(cfg.AUGMENTOR, cfg.ndim)
    if transform is not None:
        transform.set_random_state(seed=cfg.SYSTEM.SEED)
    train_ds = PatchDataset(
        train,
        patch,
        mode="random" if d.EXTRACT_RANDOM_PATCH else "grid",
        overlap=d.TRAIN.OVERLAP,
        transform=transform,
        replicate=d.TRAIN.REPLICATE,
        prob_weights=(d.W_FOREGROUND, d.W_BACKGROUND) if d.PROBABILITY_MAP else None,
        class_balanced=d.CLASS_BALANCED_SAMPLING,
        ignore_id=cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID,
    )
    train_ds.set_random_state(seed=cfg.SYSTEM.SEED)
    val_ds = PatchDataset(val, patch, mode="grid", overlap=d.VAL.OVERLAP) if val else None
    return train_ds, val_ds


def finished_marker(paths: RunPaths) -> Path:
    """Written when training ends (all epochs, or early stopping): a re-run goes straight to testing."""
    return paths.sub("train_logs") / f"{paths.job}_finished.json"


def resume_point(paths: RunPaths) -> Path | None:
    """The checkpoint to resume from: the last one, or the one before it when the last is damaged."""
    for candidate in (paths.checkpoint("last"), previous(paths.checkpoint("last"))):
        if candidate.is_file():
            try:
                load_checkpoint(candidate)
            except SegflowError as exc:
                print(f"warning: {exc}; trying the previous checkpoint")
                continue
            return candidate
    return None


def check_resume(cfg: Config, paths: RunPaths, resume: Path) -> dict:
    """Refuse to continue run ``paths.job`` from checkpoint ``resume`` with a config that cannot continue it
    (another network, optimizer or schedule, or a fixed-length schedule made longer); return the checkpoint."""
    saved = load_checkpoint(resume)
    try:
        check_model_matches(resume, saved, cfg)
    except SegflowError as exc:
        hint = "(to train the new network instead: --overwrite, or a new --run_id)"
        raise SegflowError(f"run {paths.job} cannot resume: {exc} {hint}") from None
    before = Config.model_validate(saved["hyper_parameters"]["config"]).TRAIN
    for key, was, now in (
        ("TRAIN.OPTIMIZER", before.OPTIMIZER, cfg.TRAIN.OPTIMIZER),
        ("TRAIN.LR_SCHEDULER.NAME", before.LR_SCHEDULER.NAME, cfg.TRAIN.LR_SCHEDULER.NAME),
    ):
        if was != now:  # the saved optimizer / scheduler state belongs to the old one
            raise SegflowError(
                f"{key} {now!r}: run {paths.job} was started with {was!r} and its checkpoint {resume} holds that "
                "state; set it back to continue, or train afresh with --overwrite or a new --run_id"
            )
    if before.EPOCHS != cfg.TRAIN.EPOCHS and cfg.TRAIN.LR_SCHEDULER.NAME in ("onecycle", "warmupcosine"):
        raise SegflowError(
            f"TRAIN.EPOCHS {cfg.TRAIN.EPOCHS}: run {paths.job} was started with {before.EPOCHS} epochs and a "
            f"'{cfg.TRAIN.LR_SCHEDULER.NAME}' schedule whose length was fixed then; start a new --run_id (MODEL.LOAD_CHECKPOINT to start from its weights)"
        )
    return saved


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
    check_patch_fits_model(cfg)
    L.seed_everything(cfg.SYSTEM.SEED, workers=True, verbose=False)
    if cfg.SYSTEM.NUM_CPUS > 0:
        torch.set_num_threads(cfg.SYSTEM.NUM_CPUS)
    data = data or load_train_data(cfg)
    train_ds, val_ds = make_datasets(cfg, data)
    print(f"Training on {len(data.train)} image(s), {len(train_ds)} patches per epoch; validating on {len(data.val)} image(s), {len(val_ds) if val_ds else 0} patches")

    aug_dir = paths.sub("aug")
    if cfg.AUGMENTOR.ENABLE and cfg.AUGMENTOR.AUG_SAMPLES and train_ds.transform is not None:
        plain = PatchDataset(train_ds.samples, train_ds.patch, mode=train_ds.mode, replicate=cfg.DATA.TRAIN.REPLICATE, prob_weights=train_ds.prob_weights)
        plain.set_random_state(seed=cfg.SYSTEM.SEED + 1)
        pairs = [(it["image"], it["label"]) for it in (plain[i] for i in range(min(cfg.AUGMENTOR.AUG_NUM_SAMPLES, len(plain))))]
        write_aug_samples(train_ds.transform, pairs, aug_dir, cfg.AUGMENTOR.DRAW_GRID)
    if cfg.DATA.PROBABILITY_MAP:
        write_prob_maps(train_ds, Path(cfg.PATHS.PROB_MAP_DIR) if cfg.PATHS.PROB_MAP_DIR else paths.prob_map, aug_dir)

    accelerator, devices = resolve_devices(gpu, cfg.SYSTEM.DEVICE)
    workers = num_workers(cfg.SYSTEM.NUM_WORKERS, accelerator)
    for line in (worker_warning(workers), None if val_ds else NO_VALIDATION):
        if line:
            print(line)
    # Workers are not persistent: made anew each epoch, they get that epoch's seeds (exact resume).
    loader_args = dict(batch_size=cfg.TRAIN.BATCH_SIZE, num_workers=workers, pin_memory=cfg.SYSTEM.PIN_MEM and accelerator == "gpu")
    sampler = EpochSeededSampler(train_ds, cfg.SYSTEM.SEED, cfg.AUGMENTOR.SHUFFLE_TRAIN_DATA_EACH_EPOCH)
    train_loader = DataLoader(train_ds, sampler=sampler, generator=sampler.generator, **loader_args)
    val_loader = DataLoader(val_ds, shuffle=False, **loader_args) if val_ds is not None else None

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

    counts, n_valid = class_counts([s.target for s in train_ds.samples], cfg)
    model = SegModel(cfg.model_dump(mode="json"), counts.tolist(), data.normalizer.state(), n_valid)
    model.monitor = monitor
    if cfg.MODEL.LOAD_CHECKPOINT:
        start = choose_checkpoint(cfg, paths)
        ckpt = load_checkpoint(start)
        check_model_matches(start, ckpt, cfg)
        try:
            model.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as exc:
            raise SegflowError(f"checkpoint {start}: its weights do not fit MODEL.* of this config ({str(exc).splitlines()[0]})") from None
        print(f"Starting from the weights in {start}")
    prec = precision(cfg, accelerator)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if isinstance(devices, list) and len(devices) > 1 else "auto",
        precision=prec,
        max_epochs=cfg.TRAIN.EPOCHS,
        accumulate_grad_batches=cfg.TRAIN.ACCUM_ITER,
        callbacks=own + list(callbacks),
        logger=TensorBoardLogger(save_dir=str(paths.run), name="tensorboard", version="", default_hp_metric=False),
        default_root_dir=str(paths.run),
        log_every_n_steps=max(1, min(50, n_batches)),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=terminal,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Model: {cfg.MODEL.ARCHITECTURE} {cfg.PROBLEM.NDIM}, {n_params / 1e6:.2f} M parameters, on {accelerator} ({prec})")
    if resume is not None:
        saved = check_resume(cfg, paths, resume)
        print(f"Resuming from {resume} ({saved['epoch'] + 1} epoch(s) done)")
    finished_marker(paths).unlink(missing_ok=True)  # only once the resume is known to be possible
    seeds.epoch = saved["epoch"] + 1 if resume is not None else 0
    fit(trainer, model, train_loader, val_loader, resume)
    best_path = Path(best.best_model_path or last.last_model_path or paths.checkpoint("last"))
    if trainer.is_global_zero:
        print_end(early, epoch_log.rows, monitor, best_path)
    atomic_write_text(finished_marker(paths), json.dumps({"epochs": trainer.current_epoch, "best": str(best_path)}))
    return best_path


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


def choose_checkpoint(cfg: Config, paths: RunPaths) -> Path:
    """The checkpoint the test phase uses when this run did not train: PATHS.CHECKPOINT_FILE or the job's own."""
    if cfg.PATHS.CHECKPOINT_FILE:
        return Path(cfg.PATHS.CHECKPOINT_FILE)
    which = "best" if cfg.MODEL.LOAD_CHECKPOINT_EPOCH == "best_on_val" else "last"
    return paths.checkpoint(which)


def write_config_copy(cfg: Config, paths: RunPaths) -> None:
    """Save the full resolved config (defaults and overrides included) as ``config_files/<name>_<run_id>.yaml``."""
    atomic_write_text(paths.config_copy, config_to_yaml(cfg))
