"""Section ``export``: the ONNX export run by ONNX Runtime on the CPU against segflow's own predictor (issue 15).

The prediction sections' 2D U-Net 16-256 (its trained weights when the training section ran, else untrained),
exported with ``segflow export --format onnx``, on one 1024x1024 uint8 image, in turn, median of the passes:
ONNX Runtime on the whole normalised image in one pass (what a user of the .onnx file does; fp32, its default
CPU threads) against segflow's ``Predictor`` on the same image as shipped (256x256 windows, overlap 0.5, Gaussian
blend, bf16 autocast where native) and in one fp32 pass of the whole image (``full_image``: the same work as
ONNX Runtime's). The largest probability difference of each against segflow's fp32 pass says they agree.

    python -m bench.sections.export [--quick]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.harness import Context, by_pair, main, med, now, spread
from bench.workload import model_checkpoint, mosaic

SHAPE = (1024, 1024)
PASSES = {"full": 3, "quick": 1}


def child_export(a: dict) -> dict:
    """Export, then the three paths in turn on the image; Mpx/s of each pass and the differences."""
    import onnxruntime

    from segflow.app.export import export_model
    from segflow.inference.predictor import Predictor

    onnx_path, _ = export_model(a["checkpoint"], "onnx", Path(a["dir"]) / "m.onnx", say=lambda s: None)
    image = np.load(a["image"])
    predictor = Predictor.from_checkpoint(a["checkpoint"])
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def ort() -> np.ndarray:
        x = predictor.normalizer(image[..., None])
        return np.moveaxis(session.run(None, {"input": np.ascontiguousarray(np.moveaxis(x, -1, 0)[None])})[0][0], 0, -1)

    def fp32_full() -> np.ndarray:
        predictor.autocast = None
        return predictor.predict(image, full_image=True)

    def shipped() -> np.ndarray:
        predictor.autocast = Predictor.from_checkpoint(a["checkpoint"]).autocast
        return predictor.predict(image)

    paths = {"ort": ort, "fp32 full": fp32_full, "shipped": shipped}
    rates: dict[str, list[float]] = {k: [] for k in paths}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(a["passes"]):
        for name, fn in paths.items():
            start = now()
            outputs[name] = fn()
            rates[name].append(image.size / 1e6 / (now() - start))
    reference = outputs["fp32 full"]
    return {"rates": rates, "diff": {k: float(np.abs(v - reference).max()) for k, v in outputs.items()}}


def export_section(ctx: Context) -> None:
    checkpoint = model_checkpoint(ctx, 2)
    image, _ = mosaic(ctx, "export", 2, SHAPE, seed=7)
    ctx.table.section(
        f"the ONNX export on ONNX Runtime (CPU, fp32, whole image in one pass) against segflow's predictor, a {SHAPE[0]}x{SHAPE[1]} "
        f"uint8 image, in turn, median of {PASSES[ctx.mode]} pass(es); baseline column: ONNX Runtime"
    )
    r = ctx.runner.child(child_export, name="onnx", checkpoint=checkpoint, image=image, passes=PASSES[ctx.mode])
    if not r:
        return
    ort = r["rates"]["ort"]
    for name, what in (("shipped", "segflow shipped (windows 256, overlap 0.5, autocast where native)"), ("fp32 full", "segflow fp32, whole image in one pass")):
        ours = r["rates"][name]
        ctx.table.row(f"Mpx/s, {what}: max |dp| vs segflow fp32 {r['diff'][name]:.1e}", med(ours), med(ort), "{:.3f}",
                      noise=(spread(ours), spread(ort)), pairs=by_pair(ours, ort))  # fmt: skip
    ctx.table.note(f"ONNX Runtime's max |dp| against segflow's fp32 whole-image pass: {r['diff']['ort']:.1e}")


SECTIONS = {"export": export_section}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
