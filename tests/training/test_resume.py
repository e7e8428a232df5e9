"""Resume after a crash: a run killed at any moment restarts with the same command and ends with the
same weights, metrics and log as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, write_yaml

from segflow.checkpoint import load_checkpoint
from segflow.errors import SegflowError


def _cfg(data: Path, workers: int = 0, epochs: int = 5) -> dict:
    return tiny_config(
        data,
        SYSTEM={"NUM_WORKERS": workers},
        DATA={"EXTRACT_RANDOM_PATCH": True, "TRAIN": {"REPLICATE": 6}},
        AUGMENTOR={"ENABLE": True, "VFLIP": True, "ROT90": True, "ELASTIC": True},
        MODEL={"DROPOUT_VALUES": [0.1, 0.1, 0.1]},
        TRAIN={"EPOCHS": epochs, "PATIENCE": 4, "LR_SCHEDULER": {"NAME": "onecycle"}},
        TEST={"ENABLE": False},
    )


def _command(config: Path, result_dir: Path) -> list[str]:
    return [sys.executable, "-m", "segflow.app.cli", "run", "--config", str(config), "--result_dir", str(result_dir), "--name", "r"]


def _state(result_dir: Path) -> tuple[dict, str]:
    ckpt = torch.load(result_dir / "r/checkpoints/r_1-checkpoint-last.pth", map_location="cpu", weights_only=True)
    return ckpt["state_dict"], (result_dir / "r/results/r_1/train_logs/r_1_log.csv").read_text()


def _without_time(log: str) -> list[list[str]]:
    return [line.split(",")[:1] + line.split(",")[3:] for line in log.splitlines()]  # drop the wall-clock columns (time, data_wait)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data2d) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("ref")
    config = write_yaml(root / "c.yaml", _cfg(data2d))
    subprocess.run(_command(config, root / "res"), check=True, capture_output=True)
    return config, *_state(root / "res")


@pytest.fixture(scope="module")
def reference_workers(tmp_path_factory, data2d) -> tuple[Path, dict, str]:
    """As ``reference``, with 2 loader workers (3 epochs)."""
    root = tmp_path_factory.mktemp("ref_workers")
    config = write_yaml(root / "c.yaml", _cfg(data2d, workers=2, epochs=3))
    subprocess.run(_command(config, root / "res"), check=True, capture_output=True)
    return config, *_state(root / "res")


def _kill_after_rows(config: Path, result_dir: Path, rows: int, delay: float) -> None:
    """Start a run, wait until its log has ``rows`` epochs (0: don't wait), wait ``delay`` more seconds, SIGKILL it."""
    log = result_dir / "r/results/r_1/train_logs/r_1_log.csv"
    proc = subprocess.Popen(_command(config, result_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while rows and time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) > rows:
            break
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: data workers too
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


# Kill points: before the first checkpoint, mid-epoch, right at an epoch's end (checkpoint writing).
@pytest.mark.parametrize(("rows", "delay"), [(0, 2.0), (2, 0.6), (3, 0.0)])
def test_sigkill_at_any_point_then_resume_gives_identical_results(tmp_path, reference, rows, delay):
    config, ref_weights, ref_log = reference
    result_dir = tmp_path / "res"
    _kill_after_rows(config, result_dir, rows, delay)
    done = subprocess.run(_command(config, result_dir), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("Resuming from" in done.stdout) == (rows > 0)
    weights, log = _state(result_dir)
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
    assert _without_time(log) == _without_time(ref_log)
    assert len(log.splitlines()) == 6  # header + 5 epochs, no duplicated or missing rows


def test_sigkill_then_resume_with_loader_workers_gives_identical_results(tmp_path, reference_workers):
    """Lightning starts the first epoch's workers before it calls sampler.set_epoch: the resumed run's first
    epoch used to draw epoch 0's order and seeds (issue 10, item 9)."""
    _kill_after_epochs_resume_and_compare(reference_workers[0], tmp_path / "res", reference_workers)


def _kill_after_epochs_resume_and_compare(config: Path, result_dir: Path, reference: tuple[Path, dict, str]) -> None:
    """Kill a run once 2 epochs are logged, resume it, and compare its weights and log with ``reference``'s."""
    _, ref_weights, ref_log = reference
    _kill_after_rows(config, result_dir, 2, 0.0)  # epoch 1's checkpoint is written by then, maybe epoch 2's
    done = subprocess.run(_command(config, result_dir), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resuming from" in done.stdout
    weights, log = _state(result_dir)
    assert _without_time(log) == _without_time(ref_log)
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)


def test_damaged_last_checkpoint_falls_back_to_the_previous_one(cli, tmp_path, reference):
    config, ref_weights, ref_log = reference
    result_dir = tmp_path / "res"
    _kill_after_rows(config, result_dir, 3, 0.0)
    last = result_dir / "r/checkpoints/r_1-checkpoint-last.pth"
    prev = result_dir / "r/checkpoints/r_1-checkpoint-last.prev.pth"
    assert load_checkpoint(prev)["epoch"] == load_checkpoint(last)["epoch"] - 1
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk or a bad copy
    with pytest.raises(SegflowError, match="truncated, corrupt or not a checkpoint"):
        load_checkpoint(last)
    code, out, err = cli("run", "--config", config, "--result_dir", result_dir, "--name", "r", "--resume")
    assert code == 0, err
    assert "trying the previous checkpoint" in out
    weights, log = _state(result_dir)
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
    assert _without_time(log) == _without_time(ref_log)


def test_raising_epochs_of_a_fixed_schedule_is_a_clear_error(cli, tmp_path, reference):
    config, _, _ = reference
    result_dir = tmp_path / "res"
    _kill_after_rows(config, result_dir, 2, 0.0)  # epoch 1's checkpoint is written by then
    code, _, err = cli("run", "--config", config, "--result_dir", result_dir, "--name", "r", "-D", "TRAIN.EPOCHS=9")
    assert code == 2 and "was started with 5 epochs" in err and "onecycle" in err


def test_sigkill_then_resume_on_a_lazy_source_matches_the_in_memory_run(tmp_path, reference_workers, data2d):
    """Training from Zarr stores read patch by patch, in worker processes, killed and resumed, ends with the
    weights and log of the uninterrupted run from the same images as TIFF files in memory."""
    import tifffile
    import yaml
    import zarr

    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        for tif in sorted((data2d / "train" / sub).glob("*.tif")):
            zarr.create_array(str(tmp_path / sub / f"{tif.stem}.zarr"), data=tifffile.imread(tif), chunks=(64, 64))
    tree = _cfg(data2d, workers=2, epochs=3)
    tree["DATA"]["TRAIN"].update(PATH=str(tmp_path / "x"), GT_PATH=str(tmp_path / "y"), IN_MEMORY=False)
    config = write_yaml(tmp_path / "c.yaml", tree)
    assert yaml.safe_load(config.read_text())["DATA"]["TRAIN"]["IN_MEMORY"] is False
    _kill_after_epochs_resume_and_compare(config, tmp_path / "res", reference_workers)
