"""The training charts ``charts/<job>_loss.png`` and one per metric, drawn from the epoch log's rows and redrawn
after every epoch by the ``Charts`` callback that ``segflow run`` hands to ``train``."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import matplotlib
from lightning.pytorch.callbacks import Callback

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from segflow.io.atomic import atomic_write
from segflow.io.paths import RunPaths
from segflow.training.callbacks import EpochLog

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


class Charts(Callback):
    """Redraws the charts from ``EpochLog``'s rows after every epoch, and when a resumed run starts (from the
    rows its checkpoint restored), on the main process only."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer)

    def _draw(self, trainer: L.Trainer) -> None:
        log = next((cb for cb in trainer.callbacks if isinstance(cb, EpochLog)), None)
        if trainer.is_global_zero and log is not None and log.rows:
            plot_history(log.rows, self.paths.charts, self.paths.job)

