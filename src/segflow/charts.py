"""Training charts: ``charts/<job>_loss.png`` and one chart per metric, redrawn every epoch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402

from segflow.atomic import atomic_write  # noqa: E402

# chart file suffix -> (training column, validation column, y label)
CHARTS = {"loss": ("loss", "val_loss", "loss"), "jaccard_index": ("IoU", "val_IoU", "IoU (Jaccard index)")}


def plot_history(rows: list[dict[str, float]], out_dir: Path, job: str) -> list[Path]:
    """Draw training and validation curves of each metric; return the written files."""
    written = []
    epochs = [r["epoch"] for r in rows]
    for suffix, (train_key, val_key, label) in CHARTS.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [r[train_key] for r in rows], marker="o", label="train")
        if any(r[val_key] == r[val_key] for r in rows):  # any non-NaN validation value
            ax.plot(epochs, [r[val_key] for r in rows], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{job}: {label}")
        ax.grid(alpha=0.3)
        ax.legend()
        target = out_dir / f"{job}_{suffix}.png"
        atomic_write(target, lambda tmp, f=fig: f.savefig(tmp, dpi=100, bbox_inches="tight"))
        plt.close(fig)
        written.append(target)
    return written
