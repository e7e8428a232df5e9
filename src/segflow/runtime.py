"""Where and how the work runs: devices, precision (autocast), loader workers, the distributed rank."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from segflow.config.schema import Config
from segflow.errors import SegflowError
from segflow.models.networks import level_shapes


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch API: absent = no
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(setting: str, device_type: str) -> torch.dtype | None:
    """The autocast type for TRAIN.PRECISION on a device; None = full fp32.

    'auto' is bf16 on CPUs with native bfloat16: there it trains and predicts about twice as fast as
    fp32 with the same test IoU (bench/README.md); fp32 on other CPUs.
    """
    if setting == "bf16":
        return torch.bfloat16
    if setting == "32":
        return None
    if device_type != "cuda":
        return torch.bfloat16 if setting == "auto" and cpu_bf16_native() else None
    return torch.bfloat16 if setting == "auto" and torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class Launch:
    """How this process was started: ``single`` (alone, or the first process of a run that Lightning spawns),
    ``lightning`` (a process Lightning spawned for ``--gpu 0,1`` or SYSTEM.NUM_PROCESSES), ``torchrun`` or ``slurm``
    (``srun``): how many processes per node and nodes the launcher made, and whether this one is the first (rank 0),
    which alone writes files."""

    launcher: str
    processes_per_node: int = 1
    nodes: int = 1
    rank_zero: bool = True

    @property
    def by_launcher(self) -> bool:
        """Whether torchrun or srun made the processes (then Lightning must not spawn more)."""
        return self.launcher in ("torchrun", "slurm")


def detect_launch(env: Mapping[str, str] = os.environ) -> Launch:
    """The ``Launch`` of this process from its environment: torchrun sets ``LOCAL_WORLD_SIZE`` and ``RANK``; srun
    ``SLURM_NTASKS`` (more than one, outside an interactive job: Lightning's rule) and ``SLURM_PROCID``; Lightning's
    spawned processes ``LOCAL_RANK`` and ``NODE_RANK``."""
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
        local, world = int(env["LOCAL_WORLD_SIZE"]), int(env["WORLD_SIZE"])
        return Launch("torchrun", local, max(1, world // max(1, local)), int(env.get("RANK", "0")) == 0)
    tasks = int(env.get("SLURM_NTASKS", "1") or 1)
    if tasks > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes = int(env.get("SLURM_NNODES", "1") or 1)
        return Launch("slurm", max(1, tasks // nodes), nodes, int(env.get("SLURM_PROCID", "0")) == 0)
    if "LOCAL_RANK" in env:
        return Launch("lightning", rank_zero=int(env["LOCAL_RANK"]) == 0 and int(env.get("NODE_RANK", "0") or 0) == 0)
    return Launch("single")


def launch_part(env: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """``(part, parts, local rank)`` of work split over the processes torchrun or srun started (nnU-Net's
    ``-part_id/-num_parts``, automatic): this process takes items ``part::parts``; ``(0, 1, 0)`` otherwise."""
    launch = detect_launch(env)
    if launch.launcher == "torchrun":
        return int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if launch.launcher == "slurm":
        return int(env.get("SLURM_PROCID", "0")), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
    return 0, 1, 0


def is_rank_zero() -> bool:
    """Whether this process writes the run's files: the only one, or rank 0 of a distributed run."""
    return detect_launch().rank_zero


def trainer_layout(accelerator: str, devices: list[int] | int, processes: int, nodes: int) -> tuple[list[int] | int, int, str]:
    """Lightning's ``(devices, num_nodes, strategy)``: what torchrun or srun made; else the GPUs of ``--gpu 0,1``, or
    on the CPU SYSTEM.NUM_PROCESSES processes (DDP with gloo), on SYSTEM.NUM_NODES nodes; one process: no DDP."""
    launch = detect_launch()
    if launch.by_launcher:
        devices, nodes = launch.processes_per_node, launch.nodes
    elif accelerator == "cpu":
        devices = processes
    count = len(devices) if isinstance(devices, list) else devices
    return devices, nodes, "ddp" if count * nodes > 1 else "auto"


def spawn_layout(accelerator: str, devices: list[int] | int, processes: int, nodes: int) -> tuple[int, int] | None:
    """``(processes on this machine, machines)`` that segflow starts itself (``app/spawn.py``): one per GPU of
    ``--gpu 0,1``, or SYSTEM.NUM_PROCESSES on the CPU, on SYSTEM.NUM_NODES machines; None for one process, and in a
    process that a launcher (torchrun, srun, segflow's own) started."""
    if detect_launch().launcher != "single":
        return None
    per_node = len(devices) if isinstance(devices, list) else processes if accelerator == "cpu" else 1
    return (per_node, nodes) if per_node * nodes > 1 else None


def distributed_rank() -> int:
    """This process's rank in a distributed (DDP) run; 0 otherwise."""
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def distributed_world() -> int:
    """The number of processes of a distributed (DDP) run; 1 otherwise."""
    return torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1


def synchronize() -> None:
    """Wait for every process of a distributed (DDP) run here; nothing otherwise."""
    if distributed_world() > 1:
        torch.distributed.barrier()


def rank_device(accelerator: str, devices: list[int] | int) -> str:
    """``torch_device`` for this process: in a DDP run on GPUs the one Lightning gave its rank."""
    if accelerator == "gpu" and distributed_world() > 1:
        return f"cuda:{torch.cuda.current_device()}"
    return torch_device(accelerator, devices)


def resolve_devices(gpu: str | None, system_device: str) -> tuple[str, list[int] | int]:
    """Lightning's ``accelerator`` and ``devices`` from ``--gpu`` (``0``, ``0,1`` or ``cpu``) and SYSTEM.DEVICE."""
    if gpu is None:
        if system_device == "cpu" or (system_device == "auto" and not torch.cuda.is_available()):
            return "cpu", 1
        gpu = "0"
    if gpu.strip().lower() == "cpu":
        return "cpu", 1
    try:
        ids = [int(g) for g in gpu.split(",") if g.strip()]
    except ValueError:
        raise SegflowError(f"--gpu {gpu}: expected GPU numbers such as 0 or 0,1, or 'cpu'") from None
    available = torch.cuda.device_count()
    missing = [i for i in ids if i >= available]
    if not ids or missing:
        have = f"GPUs 0..{available - 1}; choose one of those or --gpu cpu" if available else "no CUDA GPU; use --gpu cpu"
        raise SegflowError(f"--gpu {gpu}: this machine has {have}")
    return "gpu", ids


def torch_device(accelerator: str, devices: list[int] | int, local_rank: int = 0) -> str:
    """The torch device for ``resolve_devices``'s result: on a GPU ``cuda:N``, the chosen GPU of this process's
    ``local_rank`` (the first GPU alone; one each when torchrun or srun started a process per GPU), else ``cpu``."""
    return f"cuda:{devices[local_rank % len(devices)]}" if accelerator == "gpu" else "cpu"


def precision(cfg: Config, accelerator: str) -> str:
    """Lightning precision for TRAIN.PRECISION on this device (the same choice prediction makes)."""
    dtype = autocast_dtype(cfg.TRAIN.PRECISION, "cuda" if accelerator == "gpu" else "cpu")
    if dtype == torch.bfloat16 and accelerator == "cpu" and cfg.ndim == 3 and any(shape[0] == 2 for shape in level_shapes(cfg)):
        # torch 2.13's CPU (oneDNN) bf16 Conv3d computes wrong weight gradients for inputs 2 deep (z only;
        # tests/test_fast_paths.py keeps the check): such a network trains in fp32 on the CPU.
        if cfg.TRAIN.PRECISION == "bf16":
            print(f"warning: TRAIN.PRECISION bf16: a level of this 3D network is 2 voxels deep {level_shapes(cfg)}, where bf16 training on the CPU is wrong (a torch bug); training in fp32")
        dtype = None
    return {None: "32-true", torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}[dtype]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_warning(workers: int) -> str | None:
    """segflow's line, in place of torch's (twice-printed) one, when SYSTEM.NUM_WORKERS exceeds the cores."""
    cores = usable_cores()
    if workers <= cores:
        return None
    return (
        f"warning: SYSTEM.NUM_WORKERS {workers} is more than the {cores} core(s) this process may use; extra "
        f"loader processes only compete for them (loading may slow down or stall): use at most {cores}, "
        "or -1 for segflow's choice"
    )


def num_workers(setting: int, accelerator: str) -> int:
    """SYSTEM.NUM_WORKERS; -1: on a GPU one worker per spare core (at most 4), on the CPU none.

    Training on the CPU already keeps every core busy, and a worker process competes with it: on 2
    cores, 2D epochs ran 1.79x the plain baseline loop with 1 worker and 2.19x with none, where loading
    and augmentation took 4% of the epoch (bench/README.md).
    """
    if setting >= 0:
        return setting
    return max(0, min(4, (os.cpu_count() or 1) - 1)) if accelerator == "gpu" else 0
