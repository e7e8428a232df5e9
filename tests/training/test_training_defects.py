"""Training defects of issue 10: extra callbacks, the plateau scheduler's monitor, Ctrl-C, the epoch line,
early-stopping and best-checkpoint messages, charts, and warnings that leak through."""

from __future__ import annotations

import csv
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from conftest import tiny_config, write_yaml
from lightning.pytorch.callbacks import Callback

from segflow.config.loader import build_config
from segflow.io.paths import RunPaths
from segflow.report.charts import history_figures
from segflow.training.trainer import train


class _EpochCounter(Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(trainer.current_epoch)


def test_extra_callbacks_see_every_epoch(tmp_path: Path, data2d: Path) -> None:
    cfg, _ = build_config(tiny_config(data2d, TRAIN={"EPOCHS": 3}, TEST={"ENABLE": False}))
    counter = _EpochCounter()
    best = train(cfg, RunPaths(tmp_path, "t", "1"), "cpu", callbacks=[counter])
    assert counter.epochs == [0, 1, 2]
    assert best.is_file()


def _rows(run: Path) -> list[dict[str, float]]:
    with open(next((run / "train_logs").glob("*_log.csv"))) as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _plateau_lrs(losses: list[float], lr: float) -> list[float]:
    """The lr of each epoch that torch's ReduceLROnPlateau (patience 0, factor 0.5) gives for these losses."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=0)
    lrs = []
    for loss in losses:
        lrs.append(opt.param_groups[0]["lr"])
        sched.step(loss)
    return lrs


def test_reduce_on_plateau_watches_the_validation_loss_and_resumes_exactly(cli, tmp_path, data2d):
    """Validated on the training images with inverted masks: learning lowers the training loss and raises
    the validation loss, so the lr must halve after every epoch without a new lowest val_loss (issue 10,
    item 1). A run stopped after 1 epoch and resumed to 3 must match the straight run: Lightning skips the
    scheduler step of the epoch a run resumes after."""
    val = tmp_path / "val"
    for sub in ("x", "y"):
        (val / sub).mkdir(parents=True)
    for image in sorted((data2d / "train/x").glob("*.tif"))[:2]:
        shutil.copy(image, val / "x" / image.name)
        inverted = 1 - tifffile.imread(data2d / "train/y" / image.name)
        tifffile.imwrite(val / "y" / image.name, inverted.astype(np.uint8))
    cfg = tiny_config(
        data2d,
        DATA={"VAL": {"FROM_TRAIN": False, "PATH": str(val / "x"), "GT_PATH": str(val / "y")}},
        TRAIN={"EPOCHS": 3, "LR_SCHEDULER": {"NAME": "reduceonplateau", "REDUCEONPLATEAU_PATIENCE": 0, "MIN_LR": 0}},
        TEST={"ENABLE": False},
    )
    config = write_yaml(tmp_path / "c.yaml", cfg)
    assert cli("run", "--config", config, "--result_dir", tmp_path / "res", "--name", "a")[0] == 0
    rows = _rows(tmp_path / "res/a/results/a_1")
    losses, val_losses, lrs = ([r[k] for r in rows] for k in ("loss", "val_loss", "lr"))
    assert losses[-1] < losses[0] and val_losses[-1] > val_losses[0]  # the set-up does what it should
    assert lrs == pytest.approx(_plateau_lrs(val_losses, 0.01)) and lrs[-1] < 0.01
    assert lrs != pytest.approx(_plateau_lrs(losses, 0.01))
    ckpt = torch.load(tmp_path / "res/a/checkpoints/a_1-checkpoint-last.pth", map_location="cpu", weights_only=True)
    assert ckpt["lr_schedulers"][0]["best"] == pytest.approx(min(val_losses), rel=1e-5)

    resumed = ("run", "--config", config, "--result_dir", tmp_path / "res", "--name", "b")
    assert cli(*resumed, "-D", "TRAIN.EPOCHS=1")[0] == 0
    code, out, err = cli(*resumed, "--resume")
    assert code == 0, err
    assert "Resuming from" in out
    again = torch.load(tmp_path / "res/b/checkpoints/b_1-checkpoint-last.pth", map_location="cpu", weights_only=True)
    assert [r["lr"] for r in _rows(tmp_path / "res/b/results/b_1")] == lrs
    assert again["lr_schedulers"] == ckpt["lr_schedulers"]
    assert all(torch.equal(again["state_dict"][k], ckpt["state_dict"][k]) for k in ckpt["state_dict"])


def _segflow(*args: object) -> list[str]:
    return [sys.executable, "-m", "segflow.app.cli", *(str(a) for a in args)]


def test_ctrl_c_says_interrupted_exits_130_and_the_same_command_resumes(tmp_path, data2d):
    """Issue 10, item 15: Lightning turned Ctrl-C into its own shutdown and exit 1, with no message."""
    # Enough epochs that the signal lands during training on a fast machine (3 were over before it came).
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d, TRAIN={"EPOCHS": 20}, TEST={"ENABLE": False}))
    command = _segflow("run", "--config", config, "--result_dir", tmp_path / "res", "--name", "r")
    log = tmp_path / "res/r/results/r_1/train_logs/r_1_log.csv"
    last = tmp_path / "res/r/checkpoints/r_1-checkpoint-last.pth"
    # A shell's background job (a CI script run with &) ignores SIGINT, and a Python started so keeps ignoring it:
    # the child gets the default back, as a terminal's Ctrl-C would find it.
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=reset)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if last.is_file() and len(log.read_text().splitlines()) > 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as epoch 2 starts: epoch 1's checkpoints are written
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["segflow: interrupted"]
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] in (0, 1)
    assert not list(last.parent.glob("*.part"))
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resuming from" in done.stdout
    assert [line.split(",")[0] for line in log.read_text().splitlines()] == ["epoch", *(str(e) for e in range(1, 21))]


def test_log_output_has_one_line_per_epoch_and_says_why_and_where_it_stopped(cli, tmp_path, data2d):
    """Not a terminal (a SLURM log, ``| tee``): no progress bars; one line per epoch, the early stop and
    the best checkpoint. The weights cannot change (SGD, LR 1e-30): val_loss is flat, PATIENCE=2 stops at 3."""
    train = {"OPTIMIZER": "SGD", "LR": 1e-30, "EPOCHS": 10, "PATIENCE": 2}
    cfg = tiny_config(data2d, MODEL={"NORMALIZATION": "none"}, TRAIN=train, TEST={"ENABLE": False})
    config = write_yaml(tmp_path / "c.yaml", cfg)
    code, out, err = cli("run", "--config", config, "--result_dir", tmp_path / "res", "--name", "t")
    assert code == 0, err
    assert "\r" not in out + err and "Validation DataLoader" not in out + err and "it/s" not in out + err
    rows = _rows(tmp_path / "res/t/results/t_1")
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == len(rows) == 3
    for line, row in zip(lines, rows):
        pattern = r"epoch \d/10  loss [\d.]+  IoU [\d.]+  val_loss [\d.]+  val_IoU [\d.]+  lr 1\.0e-30  [\d.]+ s"
        assert re.fullmatch(pattern, line), line
        assert f"loss {row['loss']:.4f}  IoU {row['IoU']:.2f}  val_loss {row['val_loss']:.4f}" in line
    assert "Early stopping at epoch 3: val_loss did not improve for TRAIN.PATIENCE=2 epochs" in out
    best = tmp_path / "res/t/checkpoints/t_1-checkpoint-best.pth"
    assert f"Best checkpoint: epoch 1 (val_loss {rows[0]['val_loss']:.4f}): {best}" in out
    assert torch.load(best, map_location="cpu", weights_only=True)["epoch"] == 0


def test_no_validation_regression_and_too_many_workers_print_segflow_lines_only(tmp_path, data2d):
    """Without validation (SPLIT_TRAIN 0), with the linear encoding, and with more loader workers than the
    process may use (pinned to one core): segflow's own lines, no Lightning or torch warning text, no
    empty IoU chart."""
    cfg = tiny_config(
        data2d,
        SYSTEM={"NUM_WORKERS": 2},
        PROBLEM={"SEMANTIC_SEG": {"ENCODING": "linear"}},
        LOSS={"TYPE": "MSE"},
        DATA={"VAL": {"SPLIT_TRAIN": 0}},
        TRAIN={"EPOCHS": 1},
        TEST={"ENABLE": False},
    )
    config = write_yaml(tmp_path / "c.yaml", cfg)
    pinned = (
        "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from segflow.app.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["run", "--config", config, "--result_dir", tmp_path / "res", "--name", "t"]
    done = subprocess.run([sys.executable, "-c", pinned, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr and "val_dataloader" not in done.stdout + done.stderr, done.stderr
    assert done.stdout.count("SYSTEM.NUM_WORKERS 2 is more than the 1 core(s)") == 1
    assert done.stdout.count("warning: training without validation images") == 1
    assert re.search(r"^epoch 1/1  loss [\d.]+  lr 1\.0e-02  [\d.]+ s$", done.stdout, re.M), done.stdout
    charts = tmp_path / "res/t/results/t_1/charts"
    assert sorted(p.name for p in charts.iterdir()) == ["t_1_loss.png"]


def test_charts_have_whole_epoch_ticks():
    rows = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e, "IoU": 0.1 * e, "val_IoU": 0.1 * e} for e in (1, 2)]
    for fig in history_figures(rows, "j").values():
        ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 2]
        assert ticks == [1, 2]
