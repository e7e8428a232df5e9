"""Section ``chunked``: volumes predicted chunk by chunk into Zarr on dask (issue 13).

On a 256^3 uint8 volume that fits, in one child process and in turn: segflow's in-memory ``Predictor.predict`` of
the whole volume, and ``inference.chunked.predict_volume`` of the same volume stored as Zarr (chunks 128^3, 8
tasks) with 1 and 2 worker threads (2: the default on 2 cores), BiaPy's 3D template network (U-Net 16-256, untrained: timing only), voxels per
second. Then the large volume of the ``lazy`` section (2048^3 = 8 GiB, 1024^3 with ``--quick``) predicted into Zarr
with the default workers by a small network (U-Net 4-16, so that the run takes minutes, not hours, on a CPU: the memory does not depend on
the network's width) with the peak PSS and RSS of the process, sampled.

    python -m bench.sections.chunked [--quick] [--only chunked|chunked_large]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.harness import Context, TreePeak, by_pair, main, med, now, spread
from bench.sections.lazy import EDGE, make_volume

SMALL = 256
CHUNK = 128


def _checkpoint(path: Path, features: list[int]) -> str:
    """An untrained 3D U-Net with 64^3 windows, saved as segflow saves a checkpoint."""
    import torch

    from segflow.config.loader import build_config
    from segflow.training.module import SegModel

    if not path.is_file():
        tree = {"PROBLEM": {"NDIM": "3D"}, "DATA": {"PATCH_SIZE": "(64, 64, 64, 1)", "NORMALIZATION": {"TYPE": "div"}},
                "MODEL": {"FEATURE_MAPS": features}, "TRAIN": {"ENABLE": False}}  # fmt: skip
        cfg = build_config(tree)[0]
        torch.manual_seed(0)
        model = SegModel(cfg.model_dump(mode="json"))
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return str(path)


def _job(checkpoint: str, store: str, output: str, chunk: tuple[int, ...], fmt: str = "zarr"):
    from segflow.data.sources import ZarrSource
    from segflow.inference.chunked import Job, cached_predictor

    predictor = cached_predictor(checkpoint, "cpu")
    lazy = ZarrSource().lazy_array(predictor.cfg, Path(store), None, "TZCYX", "--axes", True)
    return Job(checkpoint, lazy, output, chunk, predictor.normalizer.stats(lazy), None, None, False, "float16", True, store=fmt)


def child_in_turn(a: dict) -> dict:
    """The whole volume in memory, then chunked with 1 and 2 workers, in turn, ``a["rounds"]`` times: voxels/s."""
    from segflow.inference.chunked import cached_predictor, predict_volume

    job = _job(a["checkpoint"], a["store"], "", (CHUNK,) * 3)
    image = np.asarray(job.image)
    predictor = cached_predictor(a["checkpoint"], "cpu")
    predictor.predict(image[:64, :64, :64])  # warm-up: oneDNN's kernels for the window batch
    rates: dict[str, list[float]] = {"memory": [], "chunked 1": [], "chunked 2": []}  # 2: the default on 2 cores
    for r in range(a["rounds"]):
        start = now()
        predictor.predict(image)
        rates["memory"].append(image[..., 0].size / (now() - start))
        for workers in (1, 2):
            start = now()
            job = _job(a["checkpoint"], a["store"], f"{a['dir']}/out{r}_{workers}.zarr", (CHUNK,) * 3)
            predict_volume(job, workers=workers, overwrite=True, say=lambda s: None)  # a kept folder holds earlier runs
            rates[f"chunked {workers}"].append(image[..., 0].size / (now() - start))
    return rates


def child_large(a: dict) -> dict:
    """The large volume into OME-Zarr (the default workers): voxels/s, the seconds of the multiscale levels built after
    the last chunk, and the peak memory of the process."""
    from segflow.inference.chunked import predict_volume

    last: list[float] = []

    def say(line: str) -> None:
        print(line, flush=True)
        last[:] = [now()]

    with TreePeak() as peak:
        job = _job(a["checkpoint"], a["store"], f"{a['dir']}/large.ome.zarr", (a["chunk"],) * 3, "ome-zarr")
        start = now()
        predict_volume(job, overwrite=True, say=say)
        seconds = now() - start
    return {"rate": job.image.size / seconds, "seconds": seconds, "levels": now() - last[0] if last else 0.0, "pss": peak.pss, "rss": peak.rss}


def chunked_section(ctx: Context) -> None:
    """Chunked against in memory on a volume that fits."""
    small = make_volume(ctx.work / f"volume{SMALL}", SMALL)
    template = _checkpoint(ctx.work / "chunked-unet16.pth", [16, 32, 64, 128, 256])
    rounds = 1 if ctx.quick else 2
    ctx.table.section(
        f"prediction of a {SMALL}^3 uint8 volume, 3D U-Net 16-256 (64^3 windows), in turn, {rounds} round(s): chunked into Zarr "
        f"({CHUNK}^3 chunks, dask threads) against the in-memory predictor; baseline column: in memory"
    )
    r = ctx.runner.child(child_in_turn, name="in turn", checkpoint=template, store=str(small / "x.zarr"), rounds=rounds)
    if r:
        for workers in (1, 2):
            ours, theirs = r[f"chunked {workers}"], r["memory"]
            ctx.table.row(f"Mvoxels/s, chunked with {workers} worker thread(s)", med(ours) / 1e6, med(theirs) / 1e6, "{:.3f}",
                          noise=(spread(ours), spread(theirs)), pairs=by_pair(ours, theirs))  # fmt: skip


def large_section(ctx: Context) -> None:
    """The large volume's peak memory, predicted into Zarr."""
    edge = EDGE[ctx.mode]
    big = make_volume(ctx.work / f"volume{edge}", edge)
    small_net = _checkpoint(ctx.work / "chunked-unet4.pth", [4, 8, 16])
    gib = edge**3 / 2**30
    ctx.table.section(
        f"a {edge}^3 uint8 Zarr volume ({gib:.0f} GiB) predicted into OME-Zarr (float16 probabilities, uint8 labels, multiscale), 256^3 chunks, "
        "the default workers, U-Net 4-16; baseline column: the size of the input"
    )
    r = ctx.runner.child(child_large, name="large", checkpoint=small_net, store=str(big / "x.zarr"), chunk=256)
    if r:
        ctx.table.row(f"peak MiB of the process, PSS (RSS {r['rss']:.0f}); {r['rate'] / 1e6:.2f} Mvoxels/s, {r['seconds']:.0f} s "
                      f"({r['levels']:.0f} s of it the coarser levels)",
                      r["pss"], gib * 1024, "{:.0f}", higher_better=False)  # fmt: skip


SECTIONS = {"chunked": chunked_section, "chunked_large": large_section}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
