"""segflow's Lightning callbacks: atomic checkpoints, first-epoch seeding (exact resume), the epoch log."""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    ModelCheckpoint,
)

from segflow.checkpoint import previous
from segflow.io.atomic import atomic_write_text
from segflow.io.paths import RunPaths
from segflow.runtime import is_rank_zero
from segflow.training.sampler import EpochSeededSampler


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


LOG_COLUMNS = ("epoch", "time", "data_wait", "lr", "loss", "IoU", "val_loss", "val_IoU")


class EpochLog(Callback):
    """One row per epoch in ``train_logs/<job>_log.csv`` (rewritten atomically; ``report.charts.Charts`` draws them).

    The rows are part of every checkpoint, so a resumed run continues the log without gaps or
    duplicates, whatever was written after the checkpoint it resumes from.

    It also times how long the training steps wait for their batches (NIST's "input queue starvation"):
    the ``data_wait`` column, and a warning when the wait is a large share of the epoch.
    """

    # Warn when steps waited this share of an epoch that took at least STARVED_MIN_S: below that
    # the epoch is too short for the share to mean anything (worker start-up dominates).
    STARVED_SHARE, STARVED_MIN_S = 0.2, 10.0

    def __init__(self, paths: RunPaths, workers: int = 0, lines: bool = False) -> None:
        self.paths, self.workers = paths, workers
        self.lines = lines  # print one line per epoch (stdout is a log file, not a terminal with progress bars)
        self.rows: list[dict[str, float]] = []
        self._start = self._ready = time.monotonic()
        self.wait = 0.0
        self.starving = False  # the last epoch was starved (NIST's "Input Queue Starvation" until it is "Over")

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
        if is_rank_zero():  # every process of a distributed run resumes; one writes
            self._write()

    def _write(self) -> None:
        # Rows of checkpoints written before a column existed show it as NaN.
        lines = [",".join(LOG_COLUMNS)] + [",".join(f"{r.get(c, float('nan')):.6g}" for c in LOG_COLUMNS) for r in self.rows]
        atomic_write_text(self.csv_path, "\n".join(lines) + "\n")

    @property
    def csv_path(self) -> Path:
        return self.paths.log_csv

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._ready = time.monotonic()
        self.wait = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        # From the end of the previous step (or the epoch's start: workers starting) until this batch arrived.
        self.wait += time.monotonic() - self._ready

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._ready = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        seconds = time.monotonic() - self._start
        row = {
            "epoch": trainer.current_epoch + 1,
            "time": round(seconds, 2),
            "data_wait": round(self.wait, 2),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
        }
        for key in LOG_COLUMNS[4:]:
            row[key] = float(m[key]) if key in m else float("nan")
        self.rows.append(row)
        self._write()
        if self.lines:
            print(epoch_line(row, trainer.max_epochs), flush=True)
        # One line when starvation starts and one when it is over, not one an epoch: the log has every epoch's figure.
        starved = seconds >= self.STARVED_MIN_S and self.wait > self.STARVED_SHARE * seconds
        if starved and not self.starving:
            print(starvation_warning(row["epoch"], self.wait, seconds, self.workers))
        elif self.starving and not starved:
            print(
                f"epoch {row['epoch']}: data loading caught up: training waited {self.wait:.1f} s of {seconds:.1f} s "
                f"({100 * self.wait / max(seconds, 1e-9):.0f}%) for data"
            )
        self.starving = starved


def epoch_line(row: dict[str, float], epochs: int | None) -> str:
    """``epoch 3/20  loss 0.4123  IoU 0.71  val_loss 0.4500  val_IoU 0.69  lr 1.0e-03  12.3 s``; metrics the run
    does not have (no validation, no IoU for the encoding) are left out."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key, digits in (("loss", 4), ("IoU", 2), ("val_loss", 4), ("val_IoU", 2)):
        if not math.isnan(row[key]):
            parts.append(f"{key} {row[key]:.{digits}f}")
    return "  ".join(parts + [f"lr {row['lr']:.1e}", f"{row['time']:.1f} s"])


def best_line(rows: list[dict[str, float]], monitor: str, path: Path) -> str:
    """``Best checkpoint: epoch 4 (val_loss 0.3120): <path>``: the first epoch with the lowest ``monitor``, as
    ModelCheckpoint keeps it (a later epoch must be strictly better to replace it)."""
    row = min((r for r in rows if not math.isnan(r[monitor])), key=lambda r: r[monitor])
    return f"Best checkpoint: epoch {row['epoch']} ({monitor} {row[monitor]:.4f}): {path}"


def starvation_warning(epoch: int, wait: float, seconds: float, workers: int) -> str:
    """NIST's "input queue starvation", in words that say what to change."""
    cores = os.cpu_count() or 1
    if workers < cores - 1:
        fix = f"raise SYSTEM.NUM_WORKERS (now {workers}; this machine has {cores} cores)"
    else:
        fix = f"every spare core already loads data ({workers} worker(s)): use fewer or cheaper AUGMENTOR transforms (ELASTIC, ROTATION_RANGE) or a machine with more cores"
    return (
        f"warning: epoch {epoch}: training waited {wait:.1f} s of {seconds:.1f} s ({100 * wait / seconds:.0f}%) for data, "
        f"so loading and augmenting patches, not the network, sets the speed; {fix}. Each epoch's wait is in the data_wait column of its log"
    )


class OptimizerFrom(Callback):
    """MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS false: the optimizer starts from a checkpoint's per-parameter state (Adam's
    moments and step count, SGD's momentum) for each parameter of the same name and shape; the learning rate and the
    other settings stay this config's. A run that resumes has its own state: nothing is done then."""

    def __init__(self, state: dict[str, dict]) -> None:
        self.state = state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step:
            return
        optimizer, params = trainer.optimizers[0], dict(pl_module.net.named_parameters())
        taken = 0
        for name, param in params.items():
            saved = self.state.get(name)
            if saved is None or any(torch.is_tensor(v) and v.ndim and v.shape != param.shape for v in saved.values()):
                continue  # a layer that starts anew (another class count, MODEL.SKIP_UNMATCHED_LAYERS)
            optimizer.state[param] = {k: v.to(param.device) if torch.is_tensor(v) and v.ndim else copy.deepcopy(v) for k, v in saved.items()}
            taken += 1
        if trainer.is_global_zero:
            print(f"MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS false: the optimizer's state of {taken} of the network's {len(params)} parameters from the checkpoint")
