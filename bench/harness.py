"""The suite's harness: child processes, timing helpers, medians and noise, the result table and the CLI.

Every measurement runs in a fresh child process (``Runner.child``: ``python -m bench.harness --child``) so
that its peak RSS (``VmHWM``) is its own and one measurement cannot warm up or pollute another. A section
is a function of a ``Context``; ``main`` runs the sections it is given, so the suite (``bench/suite.py``)
and each section module (``python -m bench.sections.NAME``) share one command line and one table.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULT_PREFIX = "SUITE-RESULT "


# ----------------------------------------------------------------------------------------------- figures
def now() -> float:
    return time.perf_counter()


def med(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def spread(values: list[float]) -> float | None:
    """(max - min) / median: the noise of a median of repeats."""
    return float((max(values) - min(values)) / np.median(values)) if len(values) > 1 else None


def by_pair(ours: list[float], base: list[float]) -> list[float]:
    """Ratios of measurements taken back to back (pass i of one path against pass i of the other)."""
    return [o / b for o, b in zip(ours, base) if b]


def memory_mib() -> dict[str, float]:
    """This process's resident memory now (``VmRSS``) and at its peak (``VmHWM``), MiB (/proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo.extend(children.get(out[-1], []))
    return out


def tree_memory(pid: int) -> tuple[float, float]:
    """PSS and RSS of ``pid``'s process tree, each summed over its processes, MiB (a process gone counts 0). PSS
    counts a page shared by n processes 1/n in each (forked readers share the parent's pages); RSS counts it in all."""
    pss = rss = 0.0
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("Pss", "Rss"):
                kib = float(value.split()[0])
                pss, rss = (pss + kib, rss) if key == "Pss" else (pss, rss + kib)
    return pss / 1024, rss / 1024


class TreePeak:
    """The peak PSS and RSS (MiB, ``tree_memory``) of a process tree, sampled every ``interval`` s in a thread
    while the ``with`` block runs (or until ``stop``)."""

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        self.pid, self.interval = pid or os.getpid(), interval
        self.pss = self.rss = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            pss, rss = tree_memory(self.pid)
            self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)
            self._done.wait(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def layout(ndim: int, channels_last: bool):
    """The torch memory format of a 2D / 3D network: channels-last or PyTorch's default."""
    import torch

    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def iou(labels: np.ndarray, mask: np.ndarray) -> float:
    """Foreground IoU (class 1) of two label arrays of the same shape."""
    fg, gt = np.asarray(labels).astype(bool), np.asarray(mask).astype(bool)
    union = np.logical_or(fg, gt).sum()
    return float(np.logical_and(fg, gt).sum() / union) if union else float("nan")


def agreement(p: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Largest probability difference and share of equal labels (threshold 0.5) of ``p`` against ``ref``."""
    return {"max_diff": float(np.abs(p - ref).max()), "agreement": float(((p > 0.5) == (ref > 0.5)).mean())}


def machine() -> str:
    """CPU model, cores, torch version, threads and whether oneDNN has native bf16: the table's header."""
    import torch

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (StopIteration, OSError):
        model = platform.processor() or "unknown CPU"
    bf16 = (
        torch.ops.mkldnn._is_mkldnn_bf16_supported() if hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported") else "?"
    )
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads, oneDNN bf16: {bf16})"
    )


# ----------------------------------------------------------------------------------------------- the table
class Table:
    """Rows of (what, segflow, baseline, ratio, noise) under section titles and notes."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def section(self, title: str) -> None:
        self.rows.append(("section", title))

    def note(self, text: str) -> None:
        self.rows.append(("note", text))

    def compare(
        self,
        what: str,
        ours: list[float],
        base: list[float],
        fmt: str = "{:.2f}",
        higher_better: bool = True,
        paired: bool = True,
    ) -> None:
        """A row from two lists of measurements: medians, noise and, when they were taken in turn, the median
        pair ratio."""
        pairs = (by_pair(ours, base) if higher_better else by_pair(base, ours)) if paired else None
        self.row(
            what,
            med(ours),
            med(base),
            fmt,
            higher_better=higher_better,
            noise=(spread(ours), spread(base)),
            pairs=pairs,
        )

    def row(
        self,
        what: str,
        ours: Any,
        base: Any,
        fmt: str = "{:.2f}",
        higher_better: bool = True,
        noise: tuple = (None, None),
        ratio: bool | str = True,
        pairs: list[float] | None = None,
    ) -> None:
        """``pairs``: segflow-over-baseline ratios of measurements taken back to back; the ratio shown is then
        their median (robust to the machine's load changing between pairs), else the ratio of the medians.
        ``ratio``: False for none, a string to show instead (a share, say)."""

        def show(v: Any) -> str:
            return "-" if v is None else v if isinstance(v, str) else fmt.format(v)

        r = ratio if isinstance(ratio, str) else "-"
        if pairs:
            r = f"{med(pairs):.2f}x"
        elif ratio is True and isinstance(ours, (int, float)) and isinstance(base, (int, float)) and ours and base:
            r = f"{(ours / base if higher_better else base / ours):.2f}x"
        n = "/".join("-" if v is None else f"{100 * v:.0f}%" for v in noise)
        self.rows.append(("row", what, show(ours), show(base), r, n))

    def render(self, header: str) -> str:
        width = max([len(r[1]) for r in self.rows if r[0] == "row"] + [80])
        lines = [
            header,
            "ratio: segflow over baseline, > 1 = segflow better (faster, smaller); where the two "
            "were measured in turn, the median of the "
            "back-to-back pairs. noise s/b: (max - min) / median of the segflow / baseline figure.",
            f"{'what':<{width}}  {'segflow':>9}  {'baseline':>9}  {'ratio':>7}  {'noise s/b':>9}",
        ]
        for r in self.rows:
            if r[0] == "section":
                lines.append(f"== {r[1]}")
            elif r[0] == "note":
                lines.append(f"-- {r[1]}")
            else:
                _, what, ours, base, ratio, noise = r
                lines.append(f"{what:<{width}}  {ours:>9}  {base:>9}  {ratio:>7}  {noise:>9}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- child processes
def qualified(fn: Callable) -> str:
    """``module:function`` of a child function, importable in the child (a section run with ``-m`` is ``__main__``)."""
    module = fn.__module__
    if module == "__main__":
        module = sys.modules["__main__"].__spec__.name
    return f"{module}:{fn.__qualname__}"


class Runner:
    """Runs each measurement in a fresh process, logs its output, and samples the machine's load around it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.log = open(work / "children.log", "a")  # noqa: SIM115 (open for the runner's lifetime; closed in close())
        self.n = 0
        self.loads: list[float] = []

    def child(self, fn: Callable[[dict], dict], **a: Any) -> dict | None:
        """``fn(a)`` in a child process (``a`` gets ``dir``, a fresh folder name of its own); None (and a note)
        when it fails."""
        self.n += 1
        a.setdefault("dir", str(self.work / f"child{self.n}"))
        spec = json.dumps({"fn": qualified(fn), "args": a})
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        start = now()
        self.loads.append(os.getloadavg()[0])
        proc = subprocess.run(
            [sys.executable, "-m", "bench.harness", "--child", spec], capture_output=True, text=True, env=env
        )
        self.loads.append(os.getloadavg()[0])
        self.log.write(f"### {spec}\n{proc.stdout}\n{proc.stderr}\n")
        self.log.flush()
        label = f"{fn.__name__} {a.get('name', '')}".strip()
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
                result["wall_s"] = now() - start
                print(f"  {label}: {result['wall_s']:.0f} s", flush=True)
                return result
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  ! {label} failed: {' | '.join(tail)}", flush=True)
        return None

    def close(self) -> None:
        self.log.close()


def child_main(spec: str) -> None:
    """In the child: import and run the function ``spec`` names, print its result as one JSON line."""
    s = json.loads(spec)
    module, _, name = s["fn"].partition(":")
    result = getattr(importlib.import_module(module), name)(s["args"])
    print(RESULT_PREFIX + json.dumps(result, default=float))


# ----------------------------------------------------------------------------------------------- sections and the CLI
@dataclass
class Context:
    """What a section works with: sizes (``mode``), a work folder, the child runner, the table and the results."""

    mode: str  # "full" or "quick"
    work: Path
    runner: Runner
    isbi_checkpoint: Path
    table: Table = field(default_factory=Table)
    results: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # what the sections measured, for the defaults

    @property
    def quick(self) -> bool:
        return self.mode == "quick"


Section = Callable[[Context], None]


def parse_args(names: list[str], description: str, argv: list[str] | None) -> argparse.Namespace:
    """The command line of the suite and of each section module; ``names``: the sections ``--only`` accepts."""
    from segflow.io.paths import RunPaths

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats: a smoke run")
    ap.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="SECTION",
        help=f"sections to run (space or comma separated): {', '.join(names)}",
    )
    isbi = RunPaths(BENCH / "results", "isbi", "1").checkpoint("best")  # where bench/isbi.py writes it
    ap.add_argument("--isbi-checkpoint", default=str(isbi), help="a trained ISBI checkpoint (bench/isbi.py writes one)")
    ap.add_argument("--keep", default="", help="work in this folder and keep it (data, outputs, children.log)")
    ap.add_argument("--json", default="", help="also write every measurement to this JSON file")
    args = ap.parse_args(argv)
    args.only = [s for item in args.only for s in item.split(",") if s]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        ap.error(f"--only {', '.join(unknown)}: no such section; choose from {', '.join(names)}")
    return args


def main(sections: dict[str, Section], description: str, argv: list[str] | None = None) -> None:
    """Run ``sections`` (those of ``--only``, in their order here), then print the table and the findings."""
    args = parse_args(list(sections), description, argv)
    start = now()
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="segflow-bench-")
    work = Path(args.keep).resolve() if args.keep else Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context("quick" if args.quick else "full", work, Runner(work), Path(args.isbi_checkpoint))
    header = f"segflow speed suite ({ctx.mode}), {datetime.datetime.now():%Y-%m-%d %H:%M}, {machine()}"
    print(header, flush=True)
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        t = now()
        print(f"[{name}]", flush=True)
        ctx.runner.loads = []
        run(ctx)
        loads = ctx.runner.loads
        if loads:
            ctx.table.note(
                f"machine load (1-minute load average, {os.cpu_count()} cores) during this section: "
                f"{min(loads):.1f} to {max(loads):.1f}"
            )
        print(f"[{name}] {now() - t:.0f} s", flush=True)
    print("\n" + ctx.table.render(header))
    if ctx.findings:
        print("\nMeasured, for the defaults:\n" + "\n".join(f"- {f}" for f in ctx.findings))
    print(f"\nwall time {now() - start:.0f} s" + ("" if tmp else f"; data, outputs and children.log in {work}"))
    if args.json:
        dump = {"header": header, "results": ctx.results, "rows": ctx.table.rows, "recommendations": ctx.findings}
        Path(args.json).write_text(json.dumps(dump, indent=1, default=float))
    ctx.runner.close()
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
    else:
        sys.exit("usage: python -m bench.harness --child SPEC (the suite's children; run bench/suite.py instead)")
