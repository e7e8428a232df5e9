"""Section ``data``: the data pipeline alone, patches per second from disk to tensor with augmentation.

The DataLoader ``segflow.training.train`` builds (images decoded once and cached), taken from its Trainer
by a callback, against a plain Dataset that reads its TIFF on every access with MONAI's stock transforms
in a default DataLoader, epoch by epoch in turn, in one child process per loader setting.

    python -m bench.sections.data [--quick]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.baselines import plain_loader
from bench.harness import Context, by_pair, main, med, now, spread
from bench.workload import PATCH, on_train_start, run_train, train_data

EPOCHS = {"full": 4, "quick": 3}  # the first is a warm-up, not counted


def drain(loader) -> float:
    """Patches per second of one pass over ``loader``."""
    start, n = now(), 0
    for batch in loader:
        n += len(batch["image"] if isinstance(batch, dict) else batch[0])
    return n / (now() - start)


def child_data(a: dict) -> dict:
    """train()'s own loader and the plain one, epoch by epoch in turn; train() stops before its first epoch."""
    plain = plain_loader(Path(a["data"]) / "train", a["ndim"])
    state: dict[str, Any] = {"t0": now(), "rates": [], "plain": []}

    def measure(trainer, model) -> bool:
        loader = trainer.train_dataloader
        state["setup_s"] = now() - state["t0"]
        state["workers"] = loader.num_workers
        for e in range(a["epochs"]):
            ours, theirs = drain(loader), drain(plain)
            if e:
                state["rates"].append(ours)
                state["plain"].append(theirs)
        return True

    run_train(a, [on_train_start(measure)])
    del state["t0"]
    return state


def data_section(ctx: Context) -> None:
    """Both dimensions, segflow's loader as shipped (and, in the full suite, with 1 worker)."""
    epochs = EPOCHS[ctx.mode]
    for ndim in (2, 3):
        common = dict(ndim=ndim, data=str(train_data(ctx, ndim)), epochs=epochs)
        runs = {"shipped": ctx.runner.child(child_data, name="segflow + plain", **common)}
        if not ctx.quick:
            runs["w1"] = ctx.runner.child(child_data, name="segflow 1 worker + plain", workers=1, **common)
        ctx.results[f"data{ndim}d"] = runs
        ctx.table.section(
            f"data pipeline alone, {ndim}D {'x'.join(map(str, PATCH[ndim]))} patches, disk to tensor "
            f"with flips + rotation, median of {epochs - 1} epochs, "
            "in turn with the baseline: TIFF read per patch, MONAI's transforms, default DataLoader"
        )
        for key, label in (("shipped", "as shipped"), ("w1", "with 1 worker")):
            r = runs.get(key)
            if r:
                ctx.table.row(
                    f"patches/s, segflow train()'s loader {label} ({r['workers']} worker(s))",
                    med(r["rates"]),
                    med(r["plain"]),
                    "{:.1f}",
                    noise=(spread(r["rates"]), spread(r["plain"])),
                    pairs=by_pair(r["rates"], r["plain"]),
                )


SECTIONS = {"data": data_section}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
