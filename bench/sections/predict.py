"""Sections ``predict2d`` / ``predict3d``: segflow's prediction against MONAI's sliding_window_inference.

First every prediction path round-robin in one process on a mid-size image: segflow's ``Predictor`` as
shipped, in fp32 / bf16 x contiguous / channels-last x window batch, plain MONAI (``sw_batch_size=1``,
fp32, ``no_grad``), MONAI with the fast paths, and the tuned MONAI baseline (bf16 autocast where native,
channels-last, segflow's window batch, ``inference_mode``), with probability and label agreement against
fp32. Then a
2048x2048 image and a 64x512x512 stack (overlap 0.5, Gaussian blend), each path in its own process for its
peak RSS: plain and tuned MONAI, segflow as shipped, the fastest segflow path within tolerance and v0.1.0's
defaults. The weights: the training section's plain loop, or an untrained network when it did not run.

    python -m bench.sections.predict [--quick] [--only predict2d]
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from bench.baselines import MONAI_FAST_PATHS, PLAIN_MONAI, monai_predict, plain_net, tuned_monai
from bench.harness import Context, Table, agreement, by_pair, iou, layout, main, med, memory_mib, now, spread
from bench.workload import PATCH, model_checkpoint, mosaic

SIZES = {
    # sweep image and rounds; the issue's image and the passes of each path (one process each)
    "full": {
        2: {
            "sweep": (768, 768),
            "rounds": 4,
            "shape": (2048, 2048),
            "passes": {"monai": 3, "monai tuned": 3, "shipped": 3, "best": 3, "v0.1.0": 1},
        },
        3: {
            "sweep": (64, 128, 128),
            "rounds": 2,
            "shape": (64, 512, 512),
            "passes": {"monai": 1, "monai tuned": 1, "shipped": 1, "best": 1, "v0.1.0": 1},
        },
    },
    "quick": {
        2: {
            "sweep": (512, 512),
            "rounds": 3,
            "shape": (1024, 1024),
            "passes": {"monai": 1, "monai tuned": 1, "shipped": 1, "best": 1},
        },
        3: {
            "sweep": (64, 128, 128),
            "rounds": 1,
            "shape": (64, 128, 128),
            "passes": {"monai": 1, "monai tuned": 1, "shipped": 1, "best": 1},
        },
    },
}
# A prediction path is a candidate default only if its labels agree with fp32 on this share of pixels and
# its test IoU is within the issue's 0.005 of fp32's.
LABEL_AGREEMENT_MIN, IOU_TOLERANCE = 0.99, 0.005
VARIANTS = {
    # name: (precision, channels_last, window batch); None = as segflow ships it (the precision of the
    # checkpoint's TRAIN.PRECISION, channels-last, inference.window_batch); "train2" = 2 x TRAIN.BATCH_SIZE
    "shipped": (None, None, None),
    "v0.1.0": ("fp32", False, "train2"),  # the previous release's defaults on the CPU
    "fp32 b1": ("fp32", False, 1),
    "fp32+cl": ("fp32", True, None),
    "bf16": ("bf16", False, None),
    "bf16+cl b1": ("bf16", True, 1),
    "bf16+cl batch 2x train": ("bf16", True, "train2"),
}
MONAI_SETUPS = ("monai", "monai bf16+cl", "monai tuned")
TUNED = "the tuned MONAI baseline"

Run = tuple[Callable[[np.ndarray], np.ndarray], dict]  # image -> foreground probabilities, and how


# ----------------------------------------------------------------------------------------------- children
def warm_up(fn: Callable, image_shape: tuple[int, ...], ndim: int, batch: int) -> None:
    """Run ``fn`` (windows in, scores out) once on every batch shape a pass over ``image_shape`` uses: oneDNN
    builds its kernels for each new input shape on first use, which takes seconds on a CPU. The figures are
    for a warm process (a folder of same-size images pays this once)."""
    import torch

    from segflow.data.patches import axis_starts

    n = int(np.prod([len(axis_starts(s, p, 0.5)) for s, p in zip(image_shape, PATCH[ndim])]))
    with torch.inference_mode():
        for b in sorted({min(batch, n), n % batch} - {0}):
            fn(torch.zeros((b, 1, *PATCH[ndim])))


def segflow_run(checkpoint: str, ndim: int, variant: str, image_shape: tuple[int, ...]) -> Run:
    """segflow's Predictor set up for a path (precision, layout, window batch), warmed up."""
    import torch

    from segflow.inference.predictor import Predictor
    from segflow.inference.windows import window_batch

    precision, cl, batch = VARIANTS[variant]
    p = Predictor.from_checkpoint(checkpoint, "cpu")
    if precision is not None:
        p.autocast = torch.bfloat16 if precision == "bf16" else None
    if cl is not None:
        p.net.to(memory_format=layout(ndim, cl))
    if batch == "train2":
        batch = 2 * p.cfg.TRAIN.BATCH_SIZE
    used = batch or window_batch(p.cfg, p.device)
    warm_up(p.window_fn(), image_shape, ndim, used)
    fn = lambda img: p.predict(img, overlap=[0.5] * ndim, batch_size=batch)[..., 0]  # noqa: E731
    return fn, {"batch": used, "autocast": str(p.autocast).replace("torch.", "")}


def monai_run(checkpoint: str, ndim: int, setup: str, image_shape: tuple[int, ...]) -> Run:
    """MONAI's sliding_window_inference on the checkpoint's network, as ``setup`` (MONAI_SETUPS) says, warmed up."""
    import torch

    from segflow.inference.windows import window_batch

    net, cfg = plain_net(checkpoint)
    if setup == "monai tuned":
        how = tuned_monai(window_batch(cfg, torch.device("cpu")))  # segflow's own window batch for this network
    else:
        how = {"monai": PLAIN_MONAI, "monai bf16+cl": MONAI_FAST_PATHS}[setup]
    net.to(memory_format=layout(ndim, how.channels_last))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=how.bf16):
        warm_up(net, image_shape, ndim, how.sw_batch_size)
    return (lambda img: monai_predict(net, img, ndim, how)), {
        "batch": how.sw_batch_size,
        "autocast": "bfloat16" if how.bf16 else "None",
    }


def child_predict_sweep(a: dict) -> dict:
    """Every prediction path on one image, round-robin in this process; agreement against segflow fp32."""
    ndim = a["ndim"]
    image, mask = np.load(a["image"]), np.load(a["mask"])
    runs: dict[str, Run] = {name: monai_run(a["checkpoint"], ndim, name, image.shape) for name in MONAI_SETUPS}
    runs.update({name: segflow_run(a["checkpoint"], ndim, name, image.shape) for name in a["variants"]})
    out: dict[str, Any] = {
        "voxels": int(image.size),
        "variants": {name: dict(info, seconds=[]) for name, (_, info) in runs.items()},
    }
    probs = {}
    for r in range(a["rounds"]):
        for name, (fn, _) in list(runs.items())[:: 1 if r % 2 == 0 else -1]:  # alternate the order
            start = now()
            result = fn(image)
            out["variants"][name]["seconds"].append(now() - start)
            probs.setdefault(name, result)
    ref = probs.get("fp32 b1", probs.get("shipped"))
    for name, p in probs.items():
        out["variants"][name].update(agreement(p, ref), iou=iou(p > 0.5, mask))
    out["monai_vs_segflow"] = agreement(probs["monai"], ref)
    return out


def child_predict(a: dict) -> dict:
    """One prediction path on one (large) image, in its own process: time after a warm-up, and peak RSS."""
    ndim = a["ndim"]
    image = np.load(a["image"])
    if a["variant"] in MONAI_SETUPS:
        import segflow.training.trainer  # noqa: F401  (the same libraries in memory as in segflow's child)

        run, info = monai_run(a["checkpoint"], ndim, a["variant"], image.shape)
    else:
        run, info = segflow_run(a["checkpoint"], ndim, a["variant"], image.shape)
    before = memory_mib()["VmRSS"]
    seconds = []
    for _ in range(a["repeats"]):
        start = now()
        probs = run(image)
        seconds.append(now() - start)
    out = dict(
        info, seconds=seconds, voxels=int(image.size), rss_before=before, iou=iou(probs > 0.5, np.load(a["mask"]))
    )
    out.update(memory_mib())
    return out


# ----------------------------------------------------------------------------------------------- the section
def sweep_rows(table: Table, sweep: dict, unit: str, rounds: int, shape: tuple[int, ...]) -> str:
    """The sweep's rows; returns the fastest segflow path within tolerance of fp32."""
    v = sweep["variants"]
    base = v["monai"]["seconds"]
    table.note(
        f"every path on a {'x'.join(map(str, shape))} image, round-robin in one process, "
        f"{'median of ' + str(rounds) if rounds > 1 else 'one pass'} each; "
        "|dp| and labels against segflow fp32 (batch 1)"
    )
    labels = {
        "monai bf16+cl": "MONAI itself + bf16 autocast + channels_last (not segflow: the fast paths in any loop)",
        "monai tuned": f"{TUNED} (MONAI, autocast {v['monai tuned']['autocast']}, channels_last, "
        f"batch {v['monai tuned']['batch']}, inference_mode; not segflow)",
    }
    for name, r in v.items():
        if name != "monai":
            what = labels.get(name) or f"segflow {name} (autocast {r['autocast']}, batch {r['batch']})"
            table.row(
                f"{unit}, {what}: max |dp| {r['max_diff']:.4f}, labels agree {100 * r['agreement']:.2f}%",
                sweep["voxels"] / med(r["seconds"]) / 1e6,
                sweep["voxels"] / med(base) / 1e6,
                "{:.3f}",
                noise=(spread(r["seconds"]), spread(base)),
                pairs=by_pair(base, r["seconds"]),
            )
    tuned, shipped = v["monai tuned"]["seconds"], v["shipped"]["seconds"]
    table.row(
        f"{unit}, segflow shipped against {TUNED} (baseline column)",
        sweep["voxels"] / med(shipped) / 1e6,
        sweep["voxels"] / med(tuned) / 1e6,
        "{:.3f}",
        noise=(spread(shipped), spread(tuned)),
        pairs=by_pair(tuned, shipped),
    )
    m, ref_iou = sweep["monai_vs_segflow"], v.get("fp32 b1", v["shipped"])["iou"]
    what = (
        f"  synthetic test IoU, segflow fp32 vs MONAI on the same weights (max |dp| {m['max_diff']:.4f}, "
        f"labels agree {100 * m['agreement']:.2f}%)"
    )
    table.row(what, ref_iou, v["monai"]["iou"], "{:.4f}", ratio=False)
    ok = {
        k: med(r["seconds"])
        for k, r in v.items()
        if k not in MONAI_SETUPS and r["agreement"] >= LABEL_AGREEMENT_MIN and abs(r["iou"] - ref_iou) <= IOU_TOLERANCE
    }
    return min(ok, key=ok.get) if ok else "shipped"


def e2e_runs(ctx: Context, ndim: int, checkpoint: str, best: str) -> dict[str, dict | None]:
    """The issue's image, one process per path (its own peak RSS), the paths in turn pass by pass."""
    conf = SIZES[ctx.mode][ndim]
    image, mask = mosaic(ctx, "predict", ndim, conf["shape"], seed=2)
    passes = {best if k == "best" else k: n for k, n in conf["passes"].items()}
    e2e: dict[str, Any] = {name: None for name in passes}
    for i in range(max(passes.values())):
        for name, n in passes.items():
            if i >= n:
                continue
            r = ctx.runner.child(
                child_predict,
                name=name,
                ndim=ndim,
                image=image,
                mask=mask,
                checkpoint=checkpoint,
                repeats=1,
                variant=name,
            )
            if r and e2e[name]:
                e2e[name]["seconds"] += r["seconds"]
                e2e[name]["VmHWM"] = max(e2e[name]["VmHWM"], r["VmHWM"])
            elif r:
                e2e[name] = r
    return e2e


def e2e_rows(table: Table, e2e: dict[str, dict | None], unit: str, best: str) -> None:
    """The issue's image: each segflow path against plain MONAI (speed, peak RSS, RSS growth, IoU), shipped
    also against the tuned MONAI baseline."""
    base, tuned = e2e.get("monai"), e2e.get("monai tuned")
    if base:
        table.row(
            "  (baseline) MONAI peak RSS MiB / growth while predicting MiB",
            base["VmHWM"],
            base["VmHWM"] - base["rss_before"],
            "{:.0f}",
            ratio=False,
        )

    def speed(what: str, r: dict, b: dict, indent: str = "") -> None:
        rate = lambda x: x["voxels"] / med(x["seconds"]) / 1e6  # noqa: E731
        what = f"{indent}{unit}, {what}, {len(r['seconds'])} vs {len(b['seconds'])} pass(es)"
        table.row(
            what,
            rate(r),
            rate(b),
            "{:.3f}",
            noise=(spread(r["seconds"]), spread(b["seconds"])),
            pairs=by_pair(b["seconds"], r["seconds"]),
        )

    for name, r in e2e.items():
        if name in MONAI_SETUPS or not (r and base):
            continue
        label = f"segflow {name} (autocast {r['autocast']}, batch {r['batch']})" + (
            ", the fastest path within tolerance" if name == best else ""
        )
        speed(label + (" (fp32, contiguous, 2 x train batch)" if name == "v0.1.0" else ""), r, base)
        if name == "shipped" and tuned:
            what = f"segflow shipped against {TUNED} (autocast {tuned['autocast']}, batch {tuned['batch']}; baseline)"
            speed(what, r, tuned, indent="  ")
        table.row(f"  peak RSS MiB, segflow {name}", r["VmHWM"], base["VmHWM"], "{:.0f}", higher_better=False)
        table.row(
            f"  RSS growth while predicting MiB, segflow {name}",
            r["VmHWM"] - r["rss_before"],
            base["VmHWM"] - base["rss_before"],
            "{:.0f}",
            higher_better=False,
        )
        table.row(f"  synthetic test IoU, segflow {name}", r["iou"], base["iou"], "{:.4f}", ratio=False)


def findings(ndim: int, sweep: dict, best: str, e2e: dict[str, dict | None]) -> list[str]:
    """The section's lines for the defaults: the fastest path within tolerance against MONAI and as shipped."""
    v = sweep["variants"]

    def x(a: str, b: str) -> float:
        return med(by_pair(v[b]["seconds"], v[a]["seconds"]))

    out = [
        f"{ndim}D prediction: fastest path within tolerance (labels agree >= {100 * LABEL_AGREEMENT_MIN:.0f}% "
        f"with fp32, IoU within {IOU_TOLERANCE}) is {best}: "
        f"{x(best, 'monai'):.2f}x MONAI, {x(best, 'monai tuned'):.2f}x {TUNED}, {x(best, 'shipped'):.2f}x "
        f"segflow as shipped ({x('shipped', 'monai'):.2f}x MONAI)"
    ]
    if e2e.get("shipped") and e2e.get(best) and best != "shipped":
        grow = {k: e2e[k]["VmHWM"] - e2e[k]["rss_before"] for k in ("shipped", best)}
        out.append(
            f"{ndim}D prediction memory: RSS growth while predicting {grow['shipped']:.0f} MiB as "
            f"shipped (batch {e2e['shipped']['batch']}), {grow[best]:.0f} MiB for {best}"
        )
    return out


def predict_section(ctx: Context, ndim: int) -> None:
    """The sweep on a mid-size image, then the issue's image with the paths the sweep picked."""
    conf = SIZES[ctx.mode][ndim]
    checkpoint = model_checkpoint(ctx, ndim)
    unit = "Mpx/s" if ndim == 2 else "Mvox/s"
    image, mask = mosaic(ctx, "sweep", ndim, conf["sweep"], seed=1)
    sweep = ctx.runner.child(
        child_predict_sweep,
        name="sweep",
        ndim=ndim,
        image=image,
        mask=mask,
        checkpoint=checkpoint,
        rounds=conf["rounds"],
        variants=list(VARIANTS),
    )
    ctx.table.section(
        f"prediction, {ndim}D, windows {'x'.join(map(str, PATCH[ndim]))}, overlap 0.5, Gaussian "
        "blend, the plain loop's trained weights; "
        "baseline: MONAI sliding_window_inference, sw_batch_size=1, fp32, no_grad"
    )
    best = sweep_rows(ctx.table, sweep, unit, conf["rounds"], conf["sweep"]) if sweep else "shipped"
    e2e = e2e_runs(ctx, ndim, checkpoint, best)
    ctx.results[f"predict{ndim}d"] = {"sweep": sweep, "best": best, "e2e": e2e}
    ctx.table.note(
        f"a {'x'.join(map(str, conf['shape']))} uint8 {'image' if ndim == 2 else 'stack'}, each path "
        "in its own process (median of its passes)"
    )
    e2e_rows(ctx.table, e2e, unit, best)
    if sweep:
        ctx.findings.extend(findings(ndim, sweep, best, e2e))


SECTIONS = {"predict2d": partial(predict_section, ndim=2), "predict3d": partial(predict_section, ndim=3)}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
