"""``segflow run`` on several processes that segflow starts itself: one per GPU of ``--gpu 0,1``, SYSTEM.NUM_PROCESSES
on the CPU, on each of SYSTEM.NUM_NODES machines. torch's elastic agent (torchrun's engine) starts them, each running
the same ``segflow run`` as torchrun would start it; segflow's part is what the agent reports as a traceback: when one
process ends, which one, how, and where the same command resumes, in one line."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

from segflow.errors import SegflowError

SPAWNED = "SEGFLOW_SPAWNED"  # set in the processes segflow starts: there the agent, not they, says that one ended


def visible_gpus(ids: Sequence[int], env: Mapping[str, str]) -> str:
    """CUDA_VISIBLE_DEVICES for the processes of ``--gpu ids``: those GPUs among the ones this process sees, so that
    process ``i`` (local rank) takes the i-th chosen GPU as ``cuda:i``."""
    seen = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    names = [s.strip() for s in seen.split(",")] if seen else [str(i) for i in range(max(ids) + 1)]
    return ",".join(names[i] for i in ids)


def rendezvous(nodes: int, timeout: int, env: Mapping[str, str]) -> tuple[str, str, dict[str, int]]:
    """``(backend, endpoint, configs)`` of the agents' meeting: on one machine c10d on a free port of 127.0.0.1
    (``torchrun --standalone``); on several, static at MASTER_ADDR:MASTER_PORT with this machine as NODE_RANK (the
    variables Lightning's own multi-machine start reads), each waiting ``timeout`` seconds for the others."""
    if nodes == 1:
        return "c10d", "127.0.0.1:0", {"join_timeout": timeout}
    missing = [key for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if not env.get(key)]
    if missing:
        raise SegflowError(
            f"SYSTEM.NUM_NODES {nodes}: set {', '.join(missing)} on every machine (the first machine's address, a free port, "
            f"and 0..{nodes - 1}) and start the same command on each; or launch with torchrun --nnodes or srun (segflow slurm)"
        )
    return "static", f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}", {"rank": int(env["NODE_RANK"]), "timeout": timeout}


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` (the agent hands its environment to the processes), restored after."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def spawn(
    command: Sequence[str], processes: int, nodes: int, timeout: int, gpus: Sequence[int] | None, resume: Callable[[], str]
) -> None:
    """Run ``segflow <command>`` as ``processes`` processes on this machine, one of ``nodes`` machines, and wait for
    them. A process that ends on a signal or an error stops the others (the agent's SIGTERM) and raises the one line
    that says which, how, and ``resume()``: where the same command goes on."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from segflow.runtime import usable_cores

    backend, endpoint, configs = rendezvous(nodes, timeout, os.environ)
    env = {SPAWNED: "1"} | ({"CUDA_VISIBLE_DEVICES": visible_gpus(gpus, os.environ)} if gpus else {})
    if "OMP_NUM_THREADS" not in os.environ:  # the processes share the cores (torchrun gives each one thread)
        env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // processes))
    launch = LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=processes, rdzv_backend=backend, rdzv_endpoint=endpoint,
        rdzv_configs=configs, run_id=f"segflow-{uuid.uuid4()}" if nodes == 1 else "segflow", max_restarts=0,
    )  # fmt: skip
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its report is replaced by the line below
    try:
        with _environment(env):
            elastic_launch(launch, sys.executable)("-m", "segflow", *command)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = f"was killed ({failure.signal_name()})" if failure.exitcode < 0 else f"stopped with exit code {failure.exitcode} (its error is above)"
        raise SegflowError(
            f"process {rank} of {processes * nodes} {how}, so the others were stopped; nothing written was lost: "
            f"run the same command again to {resume()}"
        ) from None
