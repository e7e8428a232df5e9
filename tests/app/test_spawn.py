"""The pieces of segflow's own start of several processes and its lines for torch.distributed's failures, on the
messages torch 2.13 gives (the real runs are in tests/training/test_distributed.py and tests/test_bad_input.py)."""

from __future__ import annotations

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.distributed import DistNetworkError, DistStoreError

from segflow.app.dist_errors import distributed_line
from segflow.app.spawn import SPAWNED, rendezvous, visible_gpus
from segflow.errors import SegflowError
from segflow.runtime import spawn_layout

GLOO = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:36739. "
        "This is typically caused by a remote worker crashing. Check the logs of the remote worker before reporting an error.")  # fmt: skip
TORCHRUN = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}


def test_the_chosen_gpus_are_the_processes_visible_ones() -> None:
    assert visible_gpus([1, 3], {}) == "1,3"
    assert visible_gpus([0, 1], {"CUDA_VISIBLE_DEVICES": "4, 5,6"}) == "4,5"  # --gpu counts within what is visible


def test_one_machine_meets_on_a_free_local_port_and_several_at_master_addr() -> None:
    assert rendezvous(1, 60, {}) == ("c10d", "127.0.0.1:0", {"join_timeout": 60})
    env = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "NODE_RANK": "1"}
    assert rendezvous(2, 60, env) == ("static", "10.0.0.1:29500", {"rank": 1, "timeout": 60})
    with pytest.raises(SegflowError, match="^SYSTEM.NUM_NODES 3: set NODE_RANK on every machine .* and 0..2"):
        rendezvous(3, 60, {"MASTER_ADDR": "a", "MASTER_PORT": "1"})


def test_segflow_starts_the_processes_only_when_no_launcher_did(monkeypatch) -> None:
    for key in ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert spawn_layout("cpu", 1, 2, 1) == (2, 1)
    assert spawn_layout("gpu", [0, 1, 2], 1, 2) == (3, 2)
    assert spawn_layout("cpu", 1, 1, 1) is None and spawn_layout("gpu", [0], 4, 1) is None  # 1 GPU: 1 process
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert spawn_layout("cpu", 1, 2, 1) is None  # torchrun made this process


def test_a_lost_process_is_one_line_or_left_to_segflow_s_agent() -> None:
    line, code = distributed_line(RuntimeError(GLOO), TORCHRUN)
    assert code == 1 and line == ("process 0 of 2: another process of this run ended (Connection closed by peer [127.0.0.1]:36739); "
                                  "run the same command again (on every machine): it resumes from the last checkpoint")  # fmt: skip
    line, _ = distributed_line(SIGTERMException(), TORCHRUN)
    assert "another process of this run ended (stopped by its launcher (SIGTERM))" in line
    assert distributed_line(RuntimeError(GLOO), {**TORCHRUN, SPAWNED: "1"}) == (None, 1)  # segflow's agent says it
    assert distributed_line(RuntimeError(GLOO), {}) is None  # not a distributed run: a bug, traceback kept
    assert distributed_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), TORCHRUN) is None


def test_a_rendezvous_timeout_and_a_port_in_use_are_one_line() -> None:
    late = DistStoreError("Timed out after 61 seconds waiting for clients. 1/2 clients joined.")
    line, code = distributed_line(late, TORCHRUN)
    assert code == 2 and line.startswith("SYSTEM.DIST_TIMEOUT: only 1 of 2 machines or processes of this run met at 10.0.0.1:29500 within 61 s;")
    taken = DistNetworkError("The server socket has failed to listen on any local network address. port: 29500, useIpv6: false, code: -98, "
                             "name: EADDRINUSE, message: address already in use")  # fmt: skip
    line, code = distributed_line(taken, TORCHRUN)
    assert code == 2 and line.startswith("MASTER_PORT 29500: the port is in use on this machine")
