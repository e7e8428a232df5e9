"""One line for what torch.distributed reports as a traceback: another process of the run lost, a rendezvous that
does not fill within SYSTEM.DIST_TIMEOUT, a port in use."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from segflow.app.spawn import SPAWNED

# What gloo and NCCL say when the process at the other end of a connection has gone.
_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "nccl communicator was aborted", "remote process exited")
RESUME = "run the same command again (on every machine): it resumes from the last checkpoint"


def distributed_line(exc: BaseException, env: Mapping[str, str] = os.environ) -> tuple[str | None, int] | None:
    """``(line, exit code)`` for a failure of a distributed run, ``line`` None where segflow's own agent (``spawn``)
    says it instead; None for any other error."""
    text = " ".join(str(exc).split())
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world > 1 and (type(exc).__name__ == "SIGTERMException" or any(s in text.lower() for s in _LOST)):
        if env.get(SPAWNED):
            return None, 1
        reason = "stopped by its launcher (SIGTERM)" if type(exc).__name__ == "SIGTERMException" else _short(text)
        return f"process {env.get('RANK', '?')} of {world}: another process of this run ended ({reason}); {RESUME}", 1
    if type(exc).__name__ not in ("DistStoreError", "DistNetworkError", "TimeoutError"):
        return None
    address = f"{env.get('MASTER_ADDR', '127.0.0.1')}:{env.get('MASTER_PORT', '?')}"
    if "EADDRINUSE" in text or "address already in use" in text.lower():
        port = re.search(r"port: (\d+)", text)
        return (
            f"MASTER_PORT {port.group(1) if port else env.get('MASTER_PORT', '?')}: the port is in use on this machine (another run?); "
            "set MASTER_PORT to a free port, the same on every machine (torchrun: --master_port)", 2
        )  # fmt: skip
    waited = re.search(r"(?:after|timed out after) (\d+(?:\.\d+)?) ?(?:s\b|seconds)", text, re.I)
    if waited or "timed out" in text.lower() or "timeout" in text.lower():
        joined = re.search(r"(\d+)/(\d+) clients joined", text)
        who = f"only {joined.group(1)} of {joined.group(2)} machines or processes" if joined else "not every machine or process"
        within = f"within {float(waited.group(1)):g} s" if waited else "in time"
        return (
            f"SYSTEM.DIST_TIMEOUT: {who} of this run met at {address} {within}; start the same command on every machine "
            "(NODE_RANK 0 first), check MASTER_ADDR, MASTER_PORT and the firewall, or raise SYSTEM.DIST_TIMEOUT", 2
        )  # fmt: skip
    return None


def _short(text: str) -> str:
    """The gloo/NCCL message without its source location and advice: ``[.../pair.cc:553] Connection closed by peer
    [127.0.0.1]:36739. This is typically ...`` -> ``Connection closed by peer [127.0.0.1]:36739``."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".")[:120]
