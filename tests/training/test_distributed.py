"""DDP for real: two processes on 127.0.0.1 with gloo, launched by Lightning (SYSTEM.NUM_PROCESSES), by torchrun,
and by torchrun as two "nodes", each training as one process with twice the batch and writing once."""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import tiny_config, write_yaml

from segflow.app.cli import main

EPOCHS = 3


def _config(tmp_path: Path, data2d: Path, batch: int) -> Path:
    """Grid patches, no augmentation, instance norm and fp32: what a step computes does not depend on how its
    patches are split between processes (BatchNorm's statistics and random draws would)."""
    tree = tiny_config(data2d, SYSTEM={"NUM_CPUS": 1}, MODEL={"NORMALIZATION": "in"},
                       TRAIN={"EPOCHS": EPOCHS, "BATCH_SIZE": batch, "PRECISION": "32"})  # fmt: skip
    return write_yaml(tmp_path / f"b{batch}.yaml", tree)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(commands: list[list[str]], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=400)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _log(root: Path, name: str) -> list[dict[str, float]]:
    with open(root / name / "results" / f"{name}_1" / "train_logs" / f"{name}_1_log.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _written_once(out: str, root: Path, name: str) -> None:
    """What only rank 0 writes or says, once: the finished line, one row per epoch, one TensorBoard file."""
    assert out.count(f"FINISHED JOB {name}_1") == 1, out
    assert [r["epoch"] for r in _log(root, name)] == list(range(1, EPOCHS + 1))
    run = root / name / "results" / f"{name}_1"
    assert len(list(run.rglob("events.out.tfevents*"))) == 1
    assert len(list((root / name / "config_files").iterdir())) == 1


@pytest.fixture(scope="module")
def single(tmp_path_factory, data2d) -> tuple[Path, str]:
    """One process, batch 4 (in this process: its torch threads are restored after, for the tests that follow)."""
    import torch

    root, threads = tmp_path_factory.mktemp("single"), torch.get_num_threads()
    try:
        assert main(["run", "--config", str(_config(root, data2d, 4)), "--result_dir", str(root), "--name", "one", "--gpu", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, "one"


def _metrics(root: Path, name: str) -> list[dict[str, str]]:
    with open(root / name / "results" / f"{name}_1" / "test_metrics.csv") as f:
        return list(csv.DictReader(f))


def _same_test(out: str, root: Path, name: str, single: tuple[Path, str]) -> None:
    """Each of the 2 processes predicted 1 of the 2 test images (rank 0 says it took img_000 alone) and wrote it;
    rank 0 wrote the metrics of both, rows in the single process's order, IoU within 0.01."""
    assert "test image 1/1 img_000.tif" in out and "test image 1/2" not in out, out
    run = root / name / "results" / f"{name}_1"
    assert sorted(p.name for p in (run / "per_image_binarized").iterdir()) == ["img_000.tif", "img_001.tif"]
    ours, theirs = _metrics(root, name), _metrics(*single)
    assert [(r["mode"], r["image"]) for r in ours] == [(r["mode"], r["image"]) for r in theirs]
    assert any(r["image"] == "img_001.tif" for r in ours)
    for x, y in zip(ours, theirs):
        for key in ("foreground_iou", "mean_iou"):
            assert float(x[key]) == pytest.approx(float(y[key]), abs=0.01), (key, x, y)


def _same_training(a: list[dict], b: list[dict]) -> None:
    """The same curve, epoch by epoch: losses within 0.1 %, IoU within 0.01. Each step trains on the same patches
    and the gradients are all-reduced over 2 ranks: float sums in another order (measured: losses 1e-5 apart, the
    third epoch's IoU up to 0.002 on these 4 validation patches, where a pixel's class flips on a small change)."""
    assert len(a) == len(b) == EPOCHS
    for x, y in zip(a, b):
        for key in ("loss", "val_loss"):
            assert x[key] == pytest.approx(y[key], rel=1e-3), (key, x, y)
        for key in ("IoU", "val_IoU"):
            assert x[key] == pytest.approx(y[key], abs=0.01), (key, x, y)


def _spawned(root: Path, config: Path) -> list[str]:
    """``segflow run`` of 2 CPU processes that segflow starts itself (SYSTEM.NUM_PROCESSES)."""
    return [sys.executable, "-m", "segflow", "run", "--config", str(config), "--result_dir", str(root), "--name", "ddp",
            "--gpu", "cpu", "-D", "SYSTEM.NUM_PROCESSES=2"]  # fmt: skip


@pytest.fixture(scope="module")
def spawned(tmp_path_factory, data2d) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The run of ``_spawned``, uninterrupted: ``(result dir, config, its process)``."""
    root = tmp_path_factory.mktemp("spawned")
    config = _config(root, data2d, 2)
    (r,) = _launch([_spawned(root, config)], root)
    return root, config, r


def test_two_cpu_processes_train_as_one_with_twice_the_batch(single, spawned) -> None:
    root, _, r = spawned
    assert r.returncode == 0, r.stderr
    assert "2 processes (DDP) x TRAIN.BATCH_SIZE 2 = 4 patches a step" in r.stdout
    _written_once(r.stdout, root, "ddp")
    _same_training(_log(root, "ddp"), _log(*single))
    _same_test(r.stdout, root, "ddp", single)


def _kill_rank_one(proc: subprocess.Popen, checkpoint: Path) -> None:
    """SIGKILL the process of local rank 1 among ``proc``'s children once ``checkpoint`` exists (epoch 1 ended)."""
    while not checkpoint.is_file():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
        if b"LOCAL_RANK=1" in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            os.kill(int(child), signal.SIGKILL)
            return
    raise AssertionError("no process of local rank 1")


def test_a_killed_process_ends_the_run_in_one_line_and_the_same_command_resumes_exactly(spawned, tmp_path) -> None:
    """SIGKILL of one of the 2 processes after epoch 1: the run stops, segflow says which process and where the same
    command goes on; that command finishes with the uninterrupted run's weights, bit for bit (each epoch's draws are
    seeded by (seed, epoch, rank), the optimizer state is in the checkpoint)."""
    root, config, _ = spawned
    command, env = _spawned(tmp_path, config), {**os.environ, "OMP_NUM_THREADS": "1"}
    last = tmp_path / "ddp" / "checkpoints" / "ddp_1-checkpoint-last.pth"
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_rank_one(proc, last)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("segflow")]
    assert len(lines) == 1, err
    assert re.fullmatch(r"segflow: error: process 1 of 2 was killed \(SIGKILL\), so the others were stopped; nothing written was lost: "
                        r"run the same command again to (resume the training from .*ddp_1-checkpoint-last\.pth \([12] epoch\(s\) done\)"
                        r"|test the trained model \(training had finished\))", lines[0]), lines[0]  # fmt: skip
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "FINISHED JOB ddp_1" in again.stdout
    ours = torch.load(last, map_location="cpu", weights_only=False)
    theirs = torch.load(root / "ddp" / "checkpoints" / "ddp_1-checkpoint-last.pth", map_location="cpu", weights_only=False)
    assert ours["epoch"] == theirs["epoch"] == EPOCHS - 1
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key


def test_torchrun_two_processes_and_two_nodes(single, data2d, tmp_path) -> None:
    """``torchrun --nproc_per_node 2``, and two torchrun "nodes" of one process each meeting on 127.0.0.1."""
    config = str(_config(tmp_path, data2d, 2))
    run = ["-m", "segflow", "run", "--config", config, "--result_dir", str(tmp_path), "--gpu", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    (one,) = _launch([[*torchrun, "--standalone", "--nproc_per_node", "2", *run, "--name", "tr"]], tmp_path)
    assert one.returncode == 0, one.stderr
    _written_once(one.stdout, tmp_path, "tr")
    _same_training(_log(tmp_path, "tr"), _log(*single))
    _same_test(one.stdout, tmp_path, "tr", single)
    port = str(_free_port())
    nodes = [[*torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(n), "--master_addr", "127.0.0.1",
              "--master_port", port, *run, "--name", "nodes"] for n in (0, 1)]  # fmt: skip
    first, second = _launch(nodes, tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "FINISHED JOB" not in second.stdout  # node 1 trains and says nothing
    _written_once(first.stdout, tmp_path, "nodes")
    _same_training(_log(tmp_path, "nodes"), _log(*single))


def test_segflow_starts_the_processes_of_two_machines_that_meet_at_master_addr(single, data2d, tmp_path) -> None:
    """SYSTEM.NUM_NODES 2, the same command on two "machines" (NODE_RANK 0 and 1, MASTER_ADDR 127.0.0.1): each starts
    its one process, they meet at MASTER_PORT, and train as one process with twice the batch; machine 1 writes nothing."""
    cmd = [sys.executable, "-m", "segflow", "run", "--config", str(_config(tmp_path, data2d, 2)), "--result_dir", str(tmp_path),
           "--name", "two", "--gpu", "cpu", "-D", "SYSTEM.NUM_NODES=2"]  # fmt: skip
    port, procs = str(_free_port()), []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    (out0, err0), (out1, err1) = (p.communicate(timeout=400) for p in procs)
    assert procs[0].returncode == procs[1].returncode == 0, err0 + err1
    assert out1 == "" and "2 processes (DDP) x TRAIN.BATCH_SIZE 2 = 4 patches a step" in out0
    _written_once(out0, tmp_path, "two")
    _same_training(_log(tmp_path, "two"), _log(*single))


def test_the_sbatch_script_s_srun_line_trains_with_slurm_s_variables(single, data2d, tmp_path, cli) -> None:
    """``segflow slurm`` prints the script; its srun line, run here as srun would run it (2 tasks on one node, with
    SLURM's variables), trains as the other launchers do."""
    import shlex

    config = _config(tmp_path, data2d, 2)
    code, script, err = cli("slurm", "--config", config, "--result_dir", tmp_path, "--name", "sl", "--tasks-per-node", "2", "--time", "01:00:00")
    assert code == 0, err
    assert "#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=2\n" in script and "#SBATCH --time=01:00:00" in script
    assert f"source {Path(sys.prefix).resolve()}/bin/activate" in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    command = shlex.split(srun)[1:]
    assert command[:2] == ["segflow", "run"] and command[-2:] == ["--gpu", "cpu"]
    port = str(20000 + 4242 % 20000)  # the script's MASTER_PORT for job 4242
    tasks = []
    for rank in (0, 1):
        env = {"SLURM_NTASKS": "2", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
               "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "segflow", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
        tasks.append(subprocess.Popen([sys.executable, "-m", "segflow", *command[1:]], cwd=tmp_path, env={**os.environ, **env},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    outs = [t.communicate(timeout=400) for t in tasks]
    assert all(t.returncode == 0 for t in tasks), outs[0][1] + outs[1][1]
    _written_once(outs[0][0], tmp_path, "sl")
    assert "FINISHED JOB" not in outs[1][0]
    _same_training(_log(tmp_path, "sl"), _log(*single))
    code, _, err = cli("slurm", "--config", tmp_path / "nope.yaml")
    assert code == 2 and "--config " in err and "no such config file" in err


def test_torchrun_splits_a_folder_s_prediction_between_processes(checkpoint, data2d, tmp_path, cli) -> None:
    """Each of 2 torchrun processes predicts its share of the images (by rank), and the folder holds what one
    process writes alone."""
    code, _, err = cli("predict", checkpoint, "--input-dir", data2d / "test" / "x", "--output-dir", tmp_path / "one", "--gpu", "cpu")
    assert code == 0, err
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "segflow", "predict",
           str(checkpoint), "--input-dir", str(data2d / "test" / "x"), "--output-dir", str(tmp_path / "two"), "--gpu", "cpu"]  # fmt: skip
    (r,) = _launch([cmd], tmp_path)
    assert r.returncode == 0, r.stderr
    for part in (1, 2):  # torchrun's output carries both processes' lines
        assert f"Wrote 1 prediction(s) (process {part} of 2: 1 of 2)" in r.stdout, r.stdout
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) == ["img_000.tif", "img_001.tif"]
    for name in names:
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "two" / name), tifffile.imread(tmp_path / "one" / name))


def test_launch_part_and_device_follow_the_launcher() -> None:
    from segflow.runtime import launch_part, torch_device

    torchrun = {"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"}
    assert launch_part(torchrun) == (5, 8, 1)
    srun = {"SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_NAME": "segflow"}
    assert launch_part(srun) == (3, 4, 1)
    assert launch_part({"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "bash"}) == (0, 1, 0)  # an interactive allocation
    assert launch_part({}) == (0, 1, 0)
    assert torch_device("gpu", [0, 1], local_rank=1) == "cuda:1" and torch_device("gpu", [2], local_rank=1) == "cuda:2"
    assert torch_device("cpu", 1, local_rank=1) == "cpu"
