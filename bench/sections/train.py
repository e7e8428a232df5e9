"""Sections ``train2d`` / ``train3d``: segflow's training against a plain PyTorch loop.

2D (6 x 256x256 patches a step) and 3D (4 x 64x64x64) U-Nets 16-256, BiaPy's template sizes, flips and free
rotations. First the training step alone (``SegModel.training_step`` + backward + AdamW) in fp32 / bf16
autocast x contiguous / channels-last, round-robin in one process, with loss and gradient agreement
against fp32. Then whole epochs, data loading and augmentation included: ``segflow.training.train`` itself
(its Trainer, loader, checkpoints, log; timed by a callback) as shipped, each epoch followed by one of the
plain loop (``bench.baselines.PlainLoop``) in the same process; in 2D also the shipped run with 1 worker
instead of 0 (starvation) and with v0.1.0's defaults (fp32, contiguous, 1 worker).

    python -m bench.sections.train [--quick] [--only train2d]
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Any

from bench.baselines import PlainLoop
from bench.harness import Context, Table, by_pair, layout, main, med, memory_mib, now, spread
from bench.workload import BATCH, PATCH, checkpoint_path, evaluate, on_train_start, run_train, train_data

SIZES = {
    # epochs (the first is a warm-up, not counted), rounds of the step sweep, segflow runs
    "full": {
        2: {"epochs": 4, "step_rounds": 3, "runs": ("shipped", "w1", "v010")},
        3: {"epochs": 4, "step_rounds": 1, "runs": ("shipped",)},
    },
    "quick": {
        2: {"epochs": 3, "step_rounds": 1, "runs": ("shipped", "w1")},
        3: {"epochs": 2, "step_rounds": 0, "runs": ("shipped",)},
    },
}
# A training step is a candidate default only if its loss and gradient agree with fp32 this well.
LOSS_RTOL, GRAD_COSINE_MIN = 0.02, 0.99
STEP_VARIANTS = {
    "fp32": (False, False),
    "fp32+cl": (False, True),
    "bf16": (True, False),
    "bf16+cl": (True, True),
}  # (bf16, channels-last)
PLANS = {
    "shipped": dict(name="as shipped + plain loop", evaluate=True, pair=True),
    "w1": dict(name="as shipped but 1 worker + plain loop", workers=1, pair=True),
    "v010": dict(
        name="v0.1.0 defaults + plain loop", precision="32", channels_last=False, workers=1, pair=True, evaluate=True
    ),
}
LABELS = {
    "shipped": "segflow as shipped",
    "w1": "segflow as shipped but 1 worker",
    "v010": "segflow v0.1.0 defaults (fp32, contiguous, 1 worker)",
}


# ----------------------------------------------------------------------------------------------- children
def epoch_clock(state: dict[str, Any], plain: PlainLoop | None, ndim: int, channels_last: bool | None):
    """A callback that times each epoch of train() (start to the next start: checkpoints and log included),
    its steps and its waits for data; with ``plain``, runs one plain epoch after each (not counted)."""
    import lightning

    class Clock(lightning.Callback):
        def _close(self, t: float) -> None:
            if state["cur"] is not None:
                cur = state["cur"]
                cur["epoch_s"] = t - cur.pop("start") - cur.pop("plain_s", 0.0)
                state["epochs"].append(cur)

        def on_train_start(self, trainer, pl_module) -> None:
            state["setup_s"] = now() - state["t0"]
            state["workers"] = trainer.train_dataloader.num_workers
            state["precision"] = str(trainer.precision)
            if channels_last is not None:  # else as segflow builds it (channels-last)
                pl_module.net.to(memory_format=layout(ndim, channels_last))

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            t = now()
            self._close(t)
            state["cur"] = {"start": t, "wait": 0.0, "patches": 0, "steps_s": 0.0}
            state["last"] = t

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            state["cur"]["wait"] += now() - state["last"]  # fetching this batch since the last step ended
            state["cur"]["patches"] += len(batch["image"] if isinstance(batch, dict) else batch[0])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            state["last"] = now()
            state["cur"]["steps_s"] = state["last"] - state["cur"]["start"]

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if plain is not None:
                t = now()
                plain.epoch()
                state["cur"]["plain_s"] = now() - t

        def on_train_end(self, trainer, pl_module) -> None:
            self._close(now())

    return Clock()


def child_segflow_train(a: dict) -> dict:
    """Whole epochs of segflow.training.train, timed per epoch and per wait for data; with ``pair``, one epoch
    of the plain loop after each of segflow's, in this process, so that both see the same machine load."""
    from segflow.inference.predictor import Predictor

    ndim = a["ndim"]
    plain = PlainLoop(ndim, Path(a["data"]), a["epochs"]) if a.get("pair") else None
    state: dict[str, Any] = {"epochs": [], "cur": None, "t0": now()}
    last = run_train(a, [epoch_clock(state, plain, ndim, a.get("channels_last"))])
    out = {k: state[k] for k in ("setup_s", "workers", "precision")}
    out["epochs"] = state["epochs"][1:]
    out.update(memory_mib())
    if a.get("evaluate"):
        p = Predictor.from_checkpoint(last, "cpu")
        p.autocast = None
        out["iou"] = evaluate(lambda img: p.predict(img)[..., 0], Path(a["data"]))
    if plain is not None:
        out["plain"] = {
            "epochs": plain.epochs[1:],
            "workers": 0,
            "precision": "32-true",
            "iou": plain.finish(a.get("save")),
        }
    return out


def step_sweep(model, batch: dict, ndim: int, rounds: int) -> dict[str, dict]:
    """segflow's training step on ``batch`` in each precision x layout: first the agreement of one step of
    identical models with fp32 (which also warms each path up), then ``rounds`` timed steps, round-robin."""
    import torch

    def step(m, opt, bf16: bool) -> float:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as Lightning's bf16-mixed does
            loss = m.training_step(batch, 0)
        loss.backward()
        return float(loss.detach().float())

    out, models, ref = {}, {}, None
    for name, (bf16, cl) in STEP_VARIANTS.items():
        torch.manual_seed(0)
        m = type(model)(**dict(model.hparams))
        m.net.to(memory_format=layout(ndim, cl))
        m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        models[name] = (m, opt)
        loss = step(m, opt, bf16)
        grad = torch.cat([p.grad.reshape(-1).float() for p in m.parameters() if p.grad is not None])
        ref = ref or (loss, grad)
        cosine = float(torch.nn.functional.cosine_similarity(grad, ref[1], dim=0))
        out[name] = {
            "loss": loss,
            "loss_rel": abs(loss - ref[0]) / abs(ref[0]),
            "grad_cosine": cosine,
            "finite": bool(torch.isfinite(grad).all()),
            "seconds": [],
        }
    for r in range(rounds):
        for name, (bf16, _) in list(STEP_VARIANTS.items())[:: 1 if r % 2 == 0 else -1]:  # alternate the order
            m, opt = models[name]
            start = now()
            step(m, opt, bf16)
            opt.step()
            out[name]["seconds"].append(now() - start)
    return out


def child_step_matrix(a: dict) -> dict:
    """The step sweep on one real augmented batch from train()'s own loader (train() stops before its first epoch)."""
    warnings.filterwarnings("ignore", message=".*self.log.*")
    out: dict[str, Any] = {}

    def sweep(trainer, model) -> bool:
        batch = next(iter(trainer.train_dataloader))
        out["variants"] = step_sweep(model, batch, a["ndim"], a["rounds"])
        out["patches"] = len(batch["image"])
        return True

    run_train(a, [on_train_start(sweep)])
    return out


# ----------------------------------------------------------------------------------------------- the section
def rates(run: dict, key: str) -> list[float]:
    """Patches per second of each epoch of a run, over its ``key`` seconds (``steps_s`` or ``epoch_s``)."""
    return [e["patches"] / e[key] for e in run["epochs"]]


def step_rows(table: Table, matrix: dict, rounds: int) -> None:
    table.note(
        "the step alone (SegModel.training_step + backward + AdamW on one augmented batch), "
        f"{'median of ' + str(rounds) if rounds > 1 else 'one step'} each, "
        "round-robin; baseline: segflow's fp32 step"
    )
    ref = matrix["variants"]["fp32"]["seconds"]
    for name, v in matrix["variants"].items():
        if name == "fp32":
            continue
        agree = (
            f"loss {100 * v['loss_rel']:.2f}% off, gradient cosine "
            f"{v['grad_cosine']:.4f}{'' if v['finite'] else ', NOT FINITE'}"
        )
        table.row(
            f"patches/s, step in {name} (vs fp32: {agree})",
            matrix["patches"] / med(v["seconds"]),
            matrix["patches"] / med(ref),
            "{:.2f}",
            noise=(spread(v["seconds"]), spread(ref)),
            pairs=by_pair(ref, v["seconds"]),
        )


def epoch_rows(table: Table, runs: dict[str, dict | None], epochs: int) -> None:
    """Whole epochs against the plain loop's, starvation (0 against 1 worker) and the test IoU."""
    table.note(
        "whole epochs of segflow.training.train (data loading and augmentation included), median "
        f"of {epochs - 1} after a warm-up one, "
        "each segflow epoch followed by one of the plain loop in the same process (the ratio: median "
        "of these epoch pairs)"
    )
    for key, r in runs.items():
        if r:
            table.compare(
                f"patches/s, {LABELS[key]} ({r['precision']}, {r['workers']} worker(s))",
                rates(r, "steps_s"),
                rates(r["plain"], "steps_s"),
            )
            seconds = ([e["epoch_s"] for e in x["epochs"]] for x in (r, r["plain"]))
            table.compare(
                f"  s/epoch, {LABELS[key]}, with train()'s checkpoints and log", *seconds, higher_better=False
            )
    r0, r1 = runs.get("shipped"), runs.get("w1")
    if r0 and r1:
        table.note(
            "starvation: the shipped 0 workers against 1 worker, each run as a multiple of its own "
            "plain epochs; and the time steps wait for their batch"
        )
        zero, one = (med(by_pair(rates(r, "steps_s"), rates(r["plain"], "steps_s"))) for r in (r0, r1))
        table.row("x plain loop, segflow as shipped: 0 workers vs 1 worker (baseline column)", zero, one, "{:.2f}")
    for run in filter(None, (r0, r1)):
        w, bw = [e["wait"] for e in run["epochs"]], [e["wait"] for e in run["plain"]["epochs"]]
        share = 100 * med(w) / med([e["steps_s"] for e in run["epochs"]])
        what = (
            f"  data wait s/epoch, segflow as shipped, {run['workers']} worker(s): {share:.0f}% "
            "of its epoch (baseline: the plain loop's, 0 workers)"
        )
        table.compare(what, w, bw, higher_better=False, paired=False)
    for key in ("shipped", "v010"):
        r = runs.get(key)
        if r and "iou" in r:
            what = f"synthetic test IoU after {epochs} epochs, {LABELS[key]} vs the plain loop (indicative: few steps)"
            table.row(what, r["iou"], r["plain"]["iou"], "{:.3f}", ratio=False)


def finding(ndim: int, runs: dict[str, dict | None], fast: str | None) -> str:
    """The section's line for the defaults: each run as a multiple of the plain loop."""
    x = {k: med(by_pair(rates(r, "steps_s"), rates(r["plain"], "steps_s"))) for k, r in runs.items() if r}
    shipped = runs["shipped"]
    line = (
        f"{ndim}D training: segflow as shipped ({shipped['precision']}, {shipped['workers']} "
        f"worker(s)) is {x['shipped']:.2f}x the plain loop"
    )
    if fast:
        line += f"; the fastest step within tolerance is {fast}"
    if "w1" in x:
        line += f"; with 1 worker {x['w1']:.2f}x"
    if "v010" in x:
        line += f"; v0.1.0's defaults {x['v010']:.2f}x"
    return line


def train_section(ctx: Context, ndim: int) -> None:
    """The step sweep, then the segflow runs of this mode, each paired with the plain loop; the first paired
    run saves the plain loop's weights for the prediction sections."""
    conf = SIZES[ctx.mode][ndim]
    epochs, rounds = conf["epochs"], conf["step_rounds"]
    common = dict(ndim=ndim, data=str(train_data(ctx, ndim)), epochs=epochs)
    matrix = ctx.runner.child(child_step_matrix, name="step sweep", rounds=rounds, **common) if rounds else None
    fast = None  # the fastest step that agrees with fp32: what the shipped defaults should be
    if matrix:
        ok = {
            k: med(v["seconds"])
            for k, v in matrix["variants"].items()
            if v["finite"] and v["loss_rel"] <= LOSS_RTOL and v["grad_cosine"] >= GRAD_COSINE_MIN
        }
        fast = min(ok, key=ok.get) if ok else "fp32"
    runs: dict[str, dict | None] = {}
    for key in conf["runs"]:
        save = {} if any(r and "plain" in r for r in runs.values()) else {"save": str(checkpoint_path(ctx, ndim))}
        runs[key] = ctx.runner.child(child_segflow_train, **PLANS[key], **save, **common)
    ctx.results[f"train{ndim}d"] = {"matrix": matrix, "fast_name": fast, **runs}
    some = next((r for r in runs.values() if r and r["epochs"]), None)
    ctx.table.section(
        f"training, {ndim}D U-Net 16-256, {BATCH[ndim]} x {'x'.join(map(str, PATCH[ndim]))} patches "
        f"a step, {some['epochs'][0]['patches'] if some else 0} patches an epoch, "
        f"flips + rotation{' + z flips' if ndim == 3 else ''}; baseline: plain PyTorch loop, default DataLoader, fp32"
    )
    if matrix:
        step_rows(ctx.table, matrix, rounds)
    epoch_rows(ctx.table, runs, epochs)
    if runs.get("shipped"):
        ctx.findings.append(finding(ndim, runs, fast))


SECTIONS = {"train2d": partial(train_section, ndim=2), "train3d": partial(train_section, ndim=3)}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
