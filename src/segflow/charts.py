"""The training log: ``train_logs/<job>_log.csv``, one line per epoch on stdout when it is not a terminal, and
the charts ``charts/<job>_loss.png`` and one per metric, all redrawn every epoch."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from segflow.atomic import atomic_write, atomic_write_text  # noqa: E402
from segflow.paths import RunPaths  # noqa: E402

LOG_COLUMNS = ("epoch", "time", "data_wait", "lr", "loss", "IoU", "val_loss", "val_IoU")

# chart file suffix -> (training column, validation column, y label)
CHARTS = {"loss": ("loss", "val_loss", "loss"), "jaccard_index": ("IoU", "val_IoU", "IoU (Jaccard index)")}


def history_figures(rows: list[dict[str, float]], job: str) -> dict[str, Figure]:
    """Training and validation curves of each metric the run has, by chart file suffix (no IoU chart for the
    ``linear`` encoding, whose IoU column is all NaN). The caller closes the figures."""
    figures = {}
    epochs = [r["epoch"] for r in rows]
    for suffix, (train_key, val_key, label) in CHARTS.items():
        pairs = ((train_key, "train"), (val_key, "validation"))
        curves = [(key, name) for key, name in pairs if any(not math.isnan(r[key]) for r in rows)]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, name in curves:
            ax.plot(epochs, [r[key] for r in rows], marker="o", label=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, never 1.2, 1.4
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{job}: {label}")
        ax.grid(alpha=0.3)
        ax.legend()
        figures[suffix] = fig
    return figures


def plot_history(rows: list[dict[str, float]], out_dir: Path, job: str) -> list[Path]:
    """Write ``<job>_<suffix>.png`` of each of ``history_figures``; return the written files."""
    written = []
    for suffix, fig in history_figures(rows, job).items():
        target = out_dir / f"{job}_{suffix}.png"
        atomic_write(target, lambda tmp, f=fig: f.savefig(tmp, dpi=100, bbox_inches="tight"))
        plt.close(fig)
        written.append(target)
    return written


class EpochLog(Callback):
    """One row per epoch in ``train_logs/<job>_log.csv`` (rewritten atomically) and the charts.

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
        self.warned = False

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
        self._write()

    def _write(self) -> None:
        # Rows of checkpoints written before a column existed show it as NaN.
        lines = [",".join(LOG_COLUMNS)] + [",".join(f"{r.get(c, float('nan')):.6g}" for c in LOG_COLUMNS) for r in self.rows]
        atomic_write_text(self.csv_path, "\n".join(lines) + "\n")
        if self.rows:
            plot_history(self.rows, self.paths.sub("charts"), self.paths.job)

    @property
    def csv_path(self) -> Path:
        return self.paths.sub("train_logs") / f"{self.paths.job}_log.csv"

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
        if seconds >= self.STARVED_MIN_S and self.wait > self.STARVED_SHARE * seconds and not self.warned:
            self.warned = True  # once a run: the log has every epoch's figure
            print(starvation_warning(row["epoch"], self.wait, seconds, self.workers))


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
