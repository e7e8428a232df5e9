"""Section ``isbi``: ISBI 2012 test IoU of each prediction path, with the checkpoint ``bench/isbi.py`` trains.

Merge patches with the checkpoint's own overlap, no TTA; every path against fp32 (probability and label
agreement, IoU, throughput). Skipped, with a note, when the checkpoint or the data is not there.

    python -m bench.sections.isbi [--isbi-checkpoint PATH]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.harness import ROOT, Context, iou, layout, main, now

ISBI_DATA = ROOT.parent / "shared" / "data" / "isbi2012_em_membranes"
# A test IoU within this of fp32's is "unchanged" (the issue's tolerance).
IOU_TOLERANCE = 0.005


def child_isbi(a: dict) -> dict:
    """ISBI 2012 test IoU (merge patches, no TTA, the checkpoint's own overlap) of each prediction path."""
    import imageio.v3 as iio
    import torch

    from segflow.inference.predictor import Predictor
    from segflow.inference.windows import window_batch

    p = Predictor.from_checkpoint(a["checkpoint"], "cpu")
    out: dict[str, Any] = {
        "shipped_autocast": str(p.autocast).replace("torch.", ""),
        "default_batch": window_batch(p.cfg, p.device),
        "variants": {},
    }
    files = sorted((ISBI_DATA / "test" / "x").iterdir())
    pairs = [(iio.imread(f), iio.imread(ISBI_DATA / "test" / "y" / f.name)) for f in files]
    bf16 = torch.bfloat16
    paths = {
        "fp32": (None, False, None),
        "fp32+cl": (None, True, None),
        "bf16": (bf16, False, None),
        "bf16+cl": (bf16, True, None),
        "bf16+cl b1": (bf16, True, 1),
    }
    probs = {}
    for name, (dtype, cl, batch) in paths.items():
        p.autocast = dtype
        p.net.to(memory_format=layout(2, cl))
        p.predict(pairs[0][0][:512, :512], batch_size=batch)  # warm-up
        start = now()
        probs[name] = [p.predict(x, batch_size=batch)[..., 0] for x, _ in pairs]
        seconds = now() - start
        scores = [iou(q > 0.5, y) for q, (_, y) in zip(probs[name], pairs)]
        out["variants"][name] = {
            "seconds": seconds,
            "pixels": sum(x.size for x, _ in pairs),
            "iou": float(np.mean(scores)),
        }
    for name, v in out["variants"].items():
        v["max_diff"] = max(float(np.abs(q - r).max()) for q, r in zip(probs[name], probs["fp32"]))
        v["agreement"] = float(np.mean([((q > 0.5) == (r > 0.5)).mean() for q, r in zip(probs[name], probs["fp32"])]))
    return out


def isbi_section(ctx: Context) -> None:
    """One child with every path, or a note when there is no checkpoint or data."""
    ckpt = ctx.isbi_checkpoint
    ctx.table.section(
        "ISBI 2012 test set, 10 x 512x512, merge patches (the checkpoint's overlap), no TTA; baseline column: fp32"
    )
    if not ckpt.is_file() or not ISBI_DATA.is_dir():
        ctx.table.note(
            f"skipped: no checkpoint at {ckpt}; `python bench/isbi.py` trains one, or give --isbi-checkpoint"
        )
        return
    r = ctx.results["isbi"] = ctx.runner.child(child_isbi, checkpoint=str(ckpt))
    if not r:
        return
    v, ref = r["variants"], r["variants"]["fp32"]
    ctx.table.note(
        f"checkpoint {ckpt}; Predictor's own choice for it: autocast {r['shipped_autocast']}, batch "
        f"{r['default_batch']}"
    )
    for name, x in v.items():
        speeds = f"{x['pixels'] / x['seconds'] / 1e6:.2f} vs {ref['pixels'] / ref['seconds'] / 1e6:.2f} Mpx/s"
        what = (
            f"foreground IoU, {name}: max |dp| {x['max_diff']:.4f}, labels agree {100 * x['agreement']:.3f}%, {speeds}"
        )
        ctx.table.row(what, x["iou"], ref["iou"], "{:.4f}", ratio=False)
    within = [k for k in v if abs(v[k]["iou"] - ref["iou"]) <= IOU_TOLERANCE]
    ctx.findings.append(f"ISBI: prediction paths with test IoU within {IOU_TOLERANCE} of fp32: {', '.join(within)}")


SECTIONS = {"isbi": isbi_section}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
