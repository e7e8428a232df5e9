"""Sections ``peak2d`` / ``peak3d``: the share of the machine's peak that segflow's network reaches.

In one child process per dimension: the FLOP/s of a large matmul in fp32 and in bf16 (the peak, best of
its repeats, timed before and after the rest), then ``segflow.training.train`` as shipped, whose steps a
callback times (from the batch's arrival to the end of the optimiser step) and counts once with
``torch.utils.flop_counter.FlopCounterMode`` (forward + backward), then segflow's ``Predictor`` as shipped
on the prediction sweep's image, its network FLOPs counted over a whole pass (every window, forward).
Achieved FLOP/s = counted FLOPs / median seconds; the share is achieved over each peak.

    python -m bench.sections.peak [--quick] [--only peak2d]
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from bench.harness import Context, main, med, now, spread
from bench.sections.predict import SIZES as PREDICT_SIZES
from bench.sections.predict import warm_up
from bench.workload import BATCH, PATCH, mosaic, run_train, train_data

SIZES = {
    # largest matmul side and repeats per dtype (x 2: before and after); training epochs (the first step
    # is counted, not timed); prediction passes on the prediction sweep's image
    "full": {"matmul": (2048, 5), 2: {"epochs": 2, "passes": 3}, 3: {"epochs": 2, "passes": 2}},
    "quick": {"matmul": (1024, 3), 2: {"epochs": 2, "passes": 2}, 3: {"epochs": 3, "passes": 1}},
}
# The matmul side grows (from 256, doubling) until one product takes this long, up to the size's largest:
# long enough to time, short where a dtype is slow (bf16 on a CPU that emulates it).
MATMUL_MIN_S = 0.25


# ----------------------------------------------------------------------------------------------- children
def matmul_side(dtype_name: str, largest: int) -> int:
    """The matmul side n: doubling from 256 until one product takes MATMUL_MIN_S, at most ``largest``."""
    import torch

    dtype, n = getattr(torch, dtype_name), 256
    while 2 * n <= largest:
        a = torch.randn(n, n, dtype=dtype)
        torch.mm(a, a)  # warm-up: kernels and caches for this size
        start = now()
        torch.mm(a, a)
        if now() - start >= MATMUL_MIN_S:
            break
        n *= 2
    return n


def matmul_rates(dtype_name: str, n: int, repeats: int) -> list[float]:
    """FLOP/s (2 n^3 / seconds) of ``repeats`` n x n matmuls in ``dtype_name``, after a warm-up one."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        start = now()
        torch.mm(a, b)
        rates.append(2 * n**3 / (now() - start))
    return rates


def step_flops(state: dict[str, Any]):
    """A callback that counts the FLOPs of train()'s first step (FlopCounterMode from the batch's arrival to
    the end of its optimiser step: forward, backward) and times every later step."""
    import lightning
    from torch.utils.flop_counter import FlopCounterMode

    class StepFlops(lightning.Callback):
        counter: FlopCounterMode | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            state["precision"] = str(trainer.precision)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if "flops_per_patch" not in state:  # the first step also warms the kernels up: counted, not timed
                self.counter = FlopCounterMode(display=False)
                self.counter.__enter__()
            state["start"] = now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seconds, patches = now() - state["start"], len(batch["image"])
            if self.counter is not None:
                self.counter.__exit__(None, None, None)
                state["flops_per_patch"] = self.counter.get_total_flops() / patches
                self.counter = None
            else:
                state["steps"].append((patches, seconds))

    return StepFlops()


def predict_flops(checkpoint: str, image: np.ndarray, passes: int) -> dict[str, Any]:
    """segflow's Predictor as shipped on ``image``: the network FLOPs of one pass, and the seconds of each."""
    from torch.utils.flop_counter import FlopCounterMode

    from segflow.inference.predictor import Predictor
    from segflow.inference.windows import window_batch

    p = Predictor.from_checkpoint(checkpoint, "cpu")
    batch, ndim = window_batch(p.cfg, p.device), p.cfg.ndim
    warm_up(p.window_fn(), image.shape, ndim, batch)
    with FlopCounterMode(display=False) as counter:
        p.predict(image, overlap=[0.5] * ndim)
    seconds = []
    for _ in range(passes):
        start = now()
        p.predict(image, overlap=[0.5] * ndim)
        seconds.append(now() - start)
    return {
        "flops": counter.get_total_flops(),
        "seconds": seconds,
        "batch": batch,
        "autocast": str(p.autocast).replace("torch.", ""),
    }


def child_peak(a: dict) -> dict:
    """Matmul peaks, segflow's training steps and prediction, matmul peaks again, all in this process."""
    largest, repeats = a["matmul"]
    peaks = {d: {"n": matmul_side(d, largest)} for d in ("float32", "bfloat16")}
    for d, x in peaks.items():
        x["rates"] = matmul_rates(d, x["n"], repeats)
    state: dict[str, Any] = {"steps": []}
    last = run_train(a, [step_flops(state)])
    prediction = predict_flops(str(last), np.load(a["image"]), a["passes"])
    for d, x in peaks.items():  # again: the load may have changed meanwhile
        x["rates"] += matmul_rates(d, x["n"], repeats)
    train = {k: state[k] for k in ("precision", "flops_per_patch", "steps")}
    return {"peaks": peaks, "train": train, "predict": prediction}


# ----------------------------------------------------------------------------------------------- the section
def share_rows(ctx: Context, what: str, achieved: list[float], peaks: dict[str, Any]) -> None:
    """Two rows: ``achieved`` FLOP/s (its median) against the fp32 and the bf16 matmul peak (their best)."""
    for dtype, label in (("float32", "fp32"), ("bfloat16", "bf16")):
        peak = peaks[dtype]["rates"]
        share = med(achieved) / max(peak)
        ctx.table.row(
            f"GFLOP/s, {what}, against the {label} matmul peak",
            med(achieved) / 1e9,
            max(peak) / 1e9,
            "{:.1f}",
            noise=(spread(achieved), spread(peak)),
            ratio=f"{100 * share:.1f}%",
        )


def peak_section(ctx: Context, ndim: int) -> None:
    """One child: the matmul peaks, then segflow's training step and prediction against them."""
    conf = SIZES[ctx.mode]
    sweep = PREDICT_SIZES[ctx.mode][ndim]["sweep"]
    image, _ = mosaic(ctx, "sweep", ndim, sweep, seed=1)
    args = dict(
        ndim=ndim,
        data=str(train_data(ctx, ndim)),
        epochs=conf[ndim]["epochs"],
        passes=conf[ndim]["passes"],
        matmul=conf["matmul"],
        image=image,
    )
    r = ctx.results[f"peak{ndim}d"] = ctx.runner.child(child_peak, name=f"{ndim}D", **args)
    patch = "x".join(map(str, PATCH[ndim]))
    ctx.table.section(
        f"share of peak, {ndim}D U-Net 16-256: network FLOPs (torch.utils.flop_counter) per second, median, against "
        "the best of timed n x n matmuls in the same process (before and after); baseline column: the matmul peak; "
        "ratio column: the share"
    )
    if not r:
        return
    t, p, peaks = r["train"], r["predict"], r["peaks"]
    sizes = ", ".join(f"{d} n={x['n']}, {len(x['rates'])} products" for d, x in peaks.items())
    ctx.table.note(
        f"matmuls: {sizes}; training step: {BATCH[ndim] * t['flops_per_patch'] / 1e9:.1f} GFLOP "
        f"(forward + backward, {BATCH[ndim]} x {patch}), "
        f"{len(t['steps'])} timed; prediction: {p['flops'] / 1e9:.1f} GFLOP a pass over a "
        f"{'x'.join(map(str, sweep))} image (windows {patch}, overlap 0.5)"
    )
    step_rates = [n * t["flops_per_patch"] / s for n, s in t["steps"]]
    share_rows(ctx, f"segflow training step as shipped ({t['precision']})", step_rates, peaks)
    share_rows(
        ctx,
        f"segflow prediction as shipped (autocast {p['autocast']}, batch {p['batch']})",
        [p["flops"] / s for s in p["seconds"]],
        peaks,
    )


SECTIONS = {"peak2d": partial(peak_section, ndim=2), "peak3d": partial(peak_section, ndim=3)}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
