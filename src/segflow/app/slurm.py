"""``segflow slurm``: the sbatch script that trains (``segflow run`` under ``srun``, one process per GPU or per CPU
task, Lightning's SLURM environment) or predicts (``segflow predict`` on one node), printed, or submitted."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import SegflowError


@dataclass(frozen=True)
class Request:
    """What the job asks SLURM for."""

    nodes: int = 1
    gpus_per_node: int = 0  # 0: CPU nodes
    tasks_per_node: int = 1  # CPU nodes: processes per node (DDP with gloo)
    cpus_per_task: int = 8
    mem: str = "32G"
    time: str = "04:00:00"
    partition: str | None = None
    account: str | None = None
    name: str = "segflow"


def _header(req: Request, tasks: int) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={req.name}", f"#SBATCH --nodes={req.nodes}", f"#SBATCH --ntasks-per-node={tasks}",
             f"#SBATCH --cpus-per-task={req.cpus_per_task}", f"#SBATCH --mem={req.mem}", f"#SBATCH --time={req.time}",
             "#SBATCH --output=%x-%j.out"]  # fmt: skip
    if req.gpus_per_node:
        lines.append(f"#SBATCH --gres=gpu:{req.gpus_per_node}")
    # A job killed at its time limit loses only the epoch it was in: the same script, submitted again, resumes the
    # run from its last checkpoint.
    return lines + [f"#SBATCH --partition={req.partition}"] * bool(req.partition) + [f"#SBATCH --account={req.account}"] * bool(req.account)


def _prologue() -> list[str]:
    venv = Path(sys.prefix).resolve()
    return ["", "set -euo pipefail", f"source {shlex.quote(str(venv / 'bin' / 'activate'))}  # the segflow this script was made with",
            "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # the rendezvous of the job's processes", ""]  # fmt: skip


def train_script(req: Request, config: Path, result_dir: Path, name: str, overrides: tuple[str, ...] = ()) -> str:
    """The sbatch script training ``config`` on ``req.nodes`` nodes: one process per GPU (or ``tasks_per_node`` CPU
    processes), each with TRAIN.BATCH_SIZE patches a step."""
    tasks = req.gpus_per_node or req.tasks_per_node
    command = ["segflow", "run", "--config", str(config.resolve()), "--result_dir", str(result_dir.resolve()), "--name", name]
    command += [] if req.gpus_per_node else ["--gpu", "cpu"]
    command += [a for o in overrides for a in ("-D", o)]
    return "\n".join([*_header(req, tasks), *_prologue(), "srun " + shlex.join(command), ""])


def predict_script(req: Request, model: Path, image: Path, output: Path) -> str:
    """The sbatch script predicting ``image`` into ``output`` by chunks on one node, with its GPU or its CPUs."""
    single = Request(**{**req.__dict__, "nodes": 1, "gpus_per_node": min(req.gpus_per_node, 1), "tasks_per_node": 1})
    command = ["segflow", "predict", str(model.resolve()), str(image.resolve()), str(output.resolve())]
    command += ["--gpu", "0"] if single.gpus_per_node else ["--gpu", "cpu", "--workers", str(min(4, req.cpus_per_task))]
    return "\n".join([*_header(single, 1), *_prologue(), "srun " + shlex.join(command), ""])


def slurm_cli(req: Request, config: str | None, result_dir: str, name: str, predict: list[str] | None, submit: bool,
              overrides: tuple[str, ...] = ()) -> str:  # fmt: skip
    """Print (and with ``submit`` pass to sbatch) the training script for ``config``, or with ``predict`` ``[MODEL,
    IMAGE, OUTPUT]`` the prediction script."""
    if req.nodes < 1 or req.gpus_per_node < 0 or req.tasks_per_node < 1:
        raise SegflowError("--nodes and --tasks-per-node must be at least 1, --gpus-per-node at least 0")
    if predict:
        model, image, output = (Path(p) for p in predict)
        if not model.is_file():
            raise SegflowError(f"--predict {model}: no such checkpoint")
        script = predict_script(req, model, image, output)
    else:
        if config is None or not Path(config).is_file():
            raise SegflowError(f"--config {config}: no such config file; give the YAML file to train with")
        script = train_script(req, Path(config), Path(result_dir), name, overrides)
    if not submit:
        sys.stdout.write(script)
        return script
    if shutil.which("sbatch") is None:
        raise SegflowError("--submit: sbatch is not on this machine's PATH; run it on the cluster's login node, or save the printed script")
    done = subprocess.run(["sbatch"], input=script, text=True, capture_output=True)
    if done.returncode != 0:
        raise SegflowError(f"--submit: sbatch refused the script: {done.stderr.strip() or done.stdout.strip()}")
    print(done.stdout.strip())
    return script
