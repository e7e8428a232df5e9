"""Section ``ddp``: training on 2 CPU processes (DDP with gloo, segflow starting them) against 1 (issue 14).

``segflow run`` of a 2D U-Net 16-256 on 256x256 patches, the same global batch both ways: 1 process with batches of
4 (2 torch threads, the machine's cores) against 2 processes with batches of 2 each (SYSTEM.NUM_PROCESSES 2, one
thread each, every step's gradients all-reduced over gloo). Training patches per second from the epoch log (median
over the epochs after the first, whose time holds the start-up), and each run's wall time, start-up included. On a
2-core machine the two processes share the cores one process already keeps busy: the figure shows what DDP costs
there (start-up of 3 processes, the all-reduce, 1-thread convolutions), not a speed-up, which needs more cores or
GPUs. The last validation IoU of each shows that they trained alike.

    python -m bench.sections.ddp [--quick]
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import yaml

from bench.harness import Context, main, med, now, spread

PATCHES = {"full": 48, "quick": 24}  # training patches an epoch (grid patches of 512x512 images)
EPOCHS = {"full": 5, "quick": 3}


def _config(ctx: Context, data: Path, batch: int) -> Path:
    tree = {
        "SYSTEM": {"NUM_WORKERS": 0, "SEED": 0},
        "PROBLEM": {"NDIM": "2D"},
        "DATA": {
            "PATCH_SIZE": "(256, 256, 1)",
            "TRAIN": {"PATH": str(data / "train/x"), "GT_PATH": str(data / "train/y")},
            "VAL": {"FROM_TRAIN": False, "PATH": str(data / "test/x"), "GT_PATH": str(data / "test/y")},
        },
        "MODEL": {"FEATURE_MAPS": [16, 32, 64, 128, 256]},
        "TRAIN": {"ENABLE": True, "EPOCHS": EPOCHS[ctx.mode], "BATCH_SIZE": batch, "PATIENCE": -1},
        "TEST": {"ENABLE": False},
    }
    path = ctx.work / f"ddp_b{batch}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _run(ctx: Context, config: Path, name: str, processes: int) -> dict:
    """One ``segflow run``; its epochs' training patches/s, wall time and last validation IoU."""
    out = ctx.work / "ddp_runs"
    cmd = [sys.executable, "-m", "segflow", "run", "--config", str(config), "--result_dir", str(out), "--name", name, "--gpu", "cpu",
           "--overwrite", "-D", f"SYSTEM.NUM_PROCESSES={processes}"]  # fmt: skip
    start = now()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = now() - start
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    with open(out / name / "results" / f"{name}_1" / "train_logs" / f"{name}_1_log.csv") as f:
        rows = list(csv.DictReader(f))
    rates = [PATCHES[ctx.mode] / float(r["time"]) for r in rows[1:]]
    return {"rates": rates, "wall": wall, "val_iou": float(rows[-1]["val_IoU"])}


def ddp_section(ctx: Context) -> None:
    from segflow.data.synthetic import make_dataset

    data = ctx.work / f"ddp_data{PATCHES[ctx.mode]}"
    if not (data / "test").is_dir():
        make_dataset(data, ndim=2, n_train=PATCHES[ctx.mode] // 4, n_test=1, shape=(512, 512), seed=3)
    ctx.table.section(
        f"training on the CPU, 2D U-Net 16-256, {PATCHES[ctx.mode]} patches of 256x256 an epoch, global batch 4, "
        f"{EPOCHS[ctx.mode]} epochs; baseline: 1 process with batch 4"
    )
    one = _run(ctx, _config(ctx, data, 4), "one", 1)
    two = _run(ctx, _config(ctx, data, 2), "two", 2)
    ctx.table.row("patches/s, 2 processes (DDP, gloo) x batch 2 vs 1 process x batch 4, epochs after the first", med(two["rates"]), med(one["rates"]),
                  noise=(spread(two["rates"]), spread(one["rates"])))  # fmt: skip
    ctx.table.row("  wall s of the whole run (start-up and checkpoints included)", two["wall"], one["wall"], "{:.1f}", higher_better=False)
    ctx.table.row("  last validation IoU (the same training, other float sums)", two["val_iou"], one["val_iou"], "{:.3f}", ratio=False)


SECTIONS = {"ddp": ddp_section}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
