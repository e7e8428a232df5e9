"""Section ``lazy``: training data larger than RAM, read patch by patch (issue 12).

A synthetic uint8 3D volume and its mask, made by the benchmark as Zarr v3 stores chunked 64^3 (2048^3 = 8 GiB
each in the full suite, 1024^3 = 1 GiB with ``--quick``): training's own patch dataset (random 64^3 patches,
normalised and encoded per patch) drained through a DataLoader with 0 and 2 reader processes, with the peak
RSS of the whole process tree (the main process plus the largest reader, times the readers). Beside it, on a
512^3 volume that fits, the Zarr source read patch by patch against the same volume in memory (the loader alone,
in turn, and whole training epochs), and an LMDB of 2D 256x256 tiles (``segflow build-lmdb``) against the
in-memory folder of the same images, in turn.

    python -m bench.sections.lazy [--quick]
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Context, by_pair, main, med, memory_mib, now, spread

EDGE = {"full": 2048, "quick": 1024}
CHUNK = 64
BATCHES = {"full": 40, "quick": 20}  # batches of 4 patches drained per measurement


def make_volume(root: Path, edge: int) -> Path:
    """``root/x.zarr`` (blocky blobs plus noise, uint8) and ``root/y.zarr`` (the brighter blobs), made slab by slab."""
    import zarr

    if (root / "done").is_file():
        return root
    rng = np.random.default_rng(0)
    spec = dict(shape=(edge,) * 3, chunks=(CHUNK,) * 3, dtype="uint8")
    image = zarr.create_array(str(root / "x.zarr"), overwrite=True, **spec)
    mask = zarr.create_array(str(root / "y.zarr"), overwrite=True, **spec)
    for z in range(0, edge, CHUNK):
        low = rng.integers(0, 256, (CHUNK // 16, edge // 16, edge // 16), dtype=np.uint8)
        blobs = low.repeat(16, 0).repeat(16, 1).repeat(16, 2)
        image[z : z + CHUNK] = blobs // 2 + rng.integers(0, 64, blobs.shape, dtype=np.uint8)
        mask[z : z + CHUNK] = (blobs > 180).astype(np.uint8)
    (root / "done").write_text("")
    return root


def _tree(x: str, y: str, ndim: int, in_memory: bool, workers: int) -> dict:
    patch = "(64, 64, 64, 1)" if ndim == 3 else "(256, 256, 1)"
    return {
        "SYSTEM": {"NUM_WORKERS": workers, "SEED": 0},
        "PROBLEM": {"NDIM": f"{ndim}D"},
        "DATA": {
            "PATCH_SIZE": patch, "EXTRACT_RANDOM_PATCH": True, "NORMALIZATION": {"TYPE": "div"},
            "TRAIN": {"PATH": x, "GT_PATH": y, "IN_MEMORY": in_memory, "REPLICATE": 400},
            "VAL": {"SPLIT_TRAIN": 0.0},
        },
        "AUGMENTOR": {"ENABLE": True, "VFLIP": True, "HFLIP": True},
        "MODEL": {"FEATURE_MAPS": [16, 32, 64]},
    }  # fmt: skip


def _loader(tree: dict):
    import torch

    from segflow.config.loader import build_config
    from segflow.training.datasets import load_data, make_datasets

    cfg = build_config(tree)[0]
    train, _ = make_datasets(cfg, load_data(cfg))
    workers = cfg.SYSTEM.NUM_WORKERS
    return torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


def _drain(loader, batches: int) -> float:
    """Patches per second over ``batches`` batches (after one to start the readers)."""
    it = iter(loader)
    next(it)
    start, n = now(), 0
    for _ in range(batches):
        n += len(next(it)["image"])
    return n / (now() - start)


def child_large(a: dict) -> dict:
    """Patches/s from the large volume read patch by patch, and the peak RSS of the process tree."""
    setup = now()
    loader = _loader(_tree(a["x"], a["y"], 3, False, a["workers"]))
    setup = now() - setup
    rate = _drain(loader, a["batches"])
    main_peak = memory_mib()["VmHWM"]
    del loader  # its readers exit, so their peak is counted
    reader_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rate": rate, "setup_s": setup, "main_mib": main_peak, "reader_mib": reader_peak}


def child_in_turn(a: dict) -> dict:
    """Two loaders of the same data, drained in turn three times: the lazy source and the in-memory one."""
    ours, theirs = _loader(a["lazy"]), _loader(a["memory"])
    rates: dict[str, list[float]] = {"lazy": [], "memory": []}
    for _ in range(3):
        rates["lazy"].append(_drain(ours, a["batches"]))
        rates["memory"].append(_drain(theirs, a["batches"]))
    return rates


def child_train(a: dict) -> dict:
    """``segflow.training.train`` on ``a["tree"]`` (BiaPy's 3D template network) for a few epochs: patches/s of each
    epoch after the first, from its own epoch log."""
    import csv

    from segflow.config.loader import build_config
    from segflow.io.paths import RunPaths
    from segflow.report.charts import Charts
    from segflow.training.trainer import train

    tree = {**a["tree"], "MODEL": {"FEATURE_MAPS": [16, 32, 64, 128, 256]}}
    tree["DATA"] = {**tree["DATA"], "TRAIN": {**tree["DATA"]["TRAIN"], "REPLICATE": 8}}
    tree["TRAIN"] = {"ENABLE": True, "EPOCHS": a["epochs"], "BATCH_SIZE": 4, "OPTIMIZER": "ADAMW", "LR": 1e-3}
    cfg = build_config(tree)[0]
    paths = RunPaths(Path(a["dir"]), "lazy", "1")
    train(cfg, paths, gpu="cpu", callbacks=[Charts(paths)])
    with open(paths.log_csv) as f:
        seconds = [float(r["time"]) for r in csv.DictReader(f)][1:]
    return {"rates": [8 / s for s in seconds]}


def _lmdb(ctx: Context) -> tuple[Path, Path]:
    from segflow.app.build_lmdb import build_lmdb
    from segflow.data.synthetic import make_dataset

    root = ctx.work / "lmdb2d"
    if not (root / "db" / "T-train.lmdb").is_dir():
        make_dataset(root, ndim=2, n_train=24, n_test=1, shape=(512, 512), seed=5)
        build_lmdb(str(root / "train/x"), str(root / "train/y"), str(root / "db"), "T", use_tiling=True, tile_size=256, train_fraction=0.9)
    return root, root / "db" / "T-train.lmdb"


def lazy_section(ctx: Context) -> None:
    """The large volume with 0 and 2 readers, then the two comparisons on data that fits."""
    edge, batches = EDGE[ctx.mode], BATCHES[ctx.mode]
    start = now()
    big = make_volume(ctx.work / f"volume{edge}", edge)
    made = now() - start
    gib = edge**3 / 2**30
    ctx.table.section(
        f"training data read patch by patch: a {edge}^3 uint8 Zarr volume ({gib:.0f} GiB image + {gib:.0f} GiB mask, "
        f"chunks {CHUNK}^3, made in {made:.0f} s), random 64^3 patches, batches of 4, {batches} batches after one; "
        "baseline column: the size of the image"
    )
    for workers in (0, 2):
        r = ctx.runner.child(child_large, name=f"{workers} readers", x=str(big / "x.zarr"), y=str(big / "y.zarr"), workers=workers, batches=batches)
        if not r:
            continue
        tree = r["main_mib"] + workers * r["reader_mib"]
        ctx.table.row(f"patches/s, {workers} reader process(es) (set up in {r['setup_s']:.0f} s: metadata, mask check)", r["rate"], None, "{:.1f}")
        ctx.table.row(f"  peak RSS MiB of the process tree, {workers} reader(s) (main {r['main_mib']:.0f} + readers)", tree, gib * 1024, "{:.0f}", higher_better=False)
    small = make_volume(ctx.work / "volume512", 512)
    ctx.table.section("read patch by patch against in memory, in turn, median of 3 drains; baseline column: in memory")
    common = dict(batches=batches)
    x, y = str(small / "x.zarr"), str(small / "y.zarr")
    r = ctx.runner.child(child_in_turn, name="zarr", lazy=_tree(x, y, 3, False, 0), memory=_tree(x, y, 3, True, 0), **common)
    _rows(ctx, r, "patches/s, a 512^3 Zarr volume read patch by patch (0 readers)")
    root, db = _lmdb(ctx)
    folder = (str(root / "train/x"), str(root / "train/y"))
    r = ctx.runner.child(child_in_turn, name="lmdb", lazy=_tree(str(db), str(db), 2, False, 0), memory=_tree(*folder, 2, True, 0), **common)
    _rows(ctx, r, "patches/s, an LMDB of 256x256 tiles read record by record vs the folder of their 512x512 images in memory")
    ctx.table.section(
        "training (segflow.training.train, 3D U-Net 16-256, 8 patches of 64^3 an epoch, batches of 4) on the 512^3 volume; "
        "median epoch after the first; baseline column: the volume in memory"
    )
    runs = {k: ctx.runner.child(child_train, name=k, tree=_tree(x, y, 3, k == "memory", 0), epochs=4 if ctx.quick else 6) for k in ("lazy", "memory")}
    if all(runs.values()):
        lazy, memory = runs["lazy"]["rates"], runs["memory"]["rates"]
        ctx.table.row("patches/s, training from the Zarr volume read patch by patch (0 readers)", med(lazy), med(memory), "{:.2f}", noise=(spread(lazy), spread(memory)))


def _rows(ctx: Context, r: dict[str, Any] | None, what: str) -> None:
    if r:
        ctx.table.row(what, med(r["lazy"]), med(r["memory"]), "{:.1f}", noise=(spread(r["lazy"]), spread(r["memory"])), pairs=by_pair(r["lazy"], r["memory"]))


SECTIONS = {"lazy": lazy_section}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])
