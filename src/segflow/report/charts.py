"""The training log: ``train_logs/<job>_log.csv``, one line per epoch on stdout when it is not a terminal, and
the charts ``charts/<job>_loss.png`` and one per metric, all redrawn every epoch."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from segflow.io.atomic import atomic_write

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


