"""Section ``lazy``: training data larger than RAM, read patch by patch (issue 12).

A synthetic uint8 3D volume and its mask, made by the benchmark as Zarr v3 stores chunked 64^3 (2048^3 = 8 GiB
each in the full suite, 1024^3 = 1 GiB with ``--quick``). On it: training's own patch dataset (random 64^3 patches,
normalised and encoded per patch) drained through a DataLoader with 0 and 2 reader processes (the mask check
skipped), then ``segflow.training.train`` itself with 0, 1 and 2 readers: the set-up time (with the whole-mask
check once, for 0 readers), patches/s and the data-wait share of each epoch from its own log, and the peak memory of
the process tree, sampled (``harness.TreePeak``: PSS summed over the processes, RSS beside it). Beside it, on a
512^3 volume that fits, the Zarr source read patch by patch against the same volume in memory (the loader alone,
in turn, and whole training epochs), and an LMDB of 2D 256x256 tiles (``segflow build-lmdb``) against the
in-memory folder of the same images, in turn.

    python -m bench.sections.lazy [--quick]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Context, TreePeak, by_pair, main, med, now, spread

EDGE = {"full": 2048, "quick": 1024}
CHUNK = 64
BATCHES = {"full": 40, "quick": 20}  # batches of 4 patches drained per measurement
TRAIN_PATCHES = 8  # patches a training epoch (REPLICATE of the one volume)


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
    """Patches/s from the large volume through the loader alone (``a["workers"]`` readers), the mask check skipped."""
    tree = _tree(a["x"], a["y"], 3, False, a["workers"])
    tree["DATA"]["TRAIN"]["CHECK_DATA"] = False
    with TreePeak() as peak:
        loader = _loader(tree)
        rate = _drain(loader, a["batches"])
        del loader
    return {"rate": rate, "pss": peak.pss, "rss": peak.rss}


def child_large_train(a: dict) -> dict:
    """``segflow.training.train`` from the large volume with ``a["workers"]`` readers: the set-up time (``load_data``:
    metadata, and with ``a["check"]`` the whole-mask value check), patches/s and the data-wait share of each epoch
    after the first (from its own epoch log), and the peak PSS and RSS of the process tree (readers included)."""
    from segflow.config.loader import build_config
    from segflow.training.datasets import load_data

    tree = _train_tree(_tree(a["x"], a["y"], 3, False, a["workers"]), a["epochs"])
    tree["DATA"]["TRAIN"]["CHECK_DATA"] = a["check"]
    with TreePeak() as peak:
        cfg = build_config(tree)[0]
        start = now()
        data = load_data(cfg)
        setup = now() - start
        rows = _train(cfg, Path(a["dir"]), data)
    return {"setup_s": setup, **rows, "pss": peak.pss, "rss": peak.rss}


def child_in_turn(a: dict) -> dict:
    """Two loaders of the same data, drained in turn three times: the lazy source and the in-memory one."""
    ours, theirs = _loader(a["lazy"]), _loader(a["memory"])
    rates: dict[str, list[float]] = {"lazy": [], "memory": []}
    for _ in range(3):
        rates["lazy"].append(_drain(ours, a["batches"]))
        rates["memory"].append(_drain(theirs, a["batches"]))
    return rates


def _train_tree(tree: dict, epochs: int) -> dict:
    """``tree`` with BiaPy's 3D template network (U-Net 16-256), 8 patches of 64^3 an epoch in batches of 4."""
    tree = {**tree, "MODEL": {"FEATURE_MAPS": [16, 32, 64, 128, 256]}}
    tree["DATA"] = {**tree["DATA"], "TRAIN": {**tree["DATA"]["TRAIN"], "REPLICATE": TRAIN_PATCHES}}
    tree["TRAIN"] = {"ENABLE": True, "EPOCHS": epochs, "BATCH_SIZE": 4, "OPTIMIZER": "ADAMW", "LR": 1e-3}
    return tree


def _train(cfg: Any, folder: Path, data: Any = None) -> dict:
    """``train`` as ``segflow run`` calls it; patches/s and data-wait share of each epoch after the first."""
    import csv

    from segflow.io.paths import RunPaths
    from segflow.report.charts import Charts
    from segflow.training.trainer import train

    paths = RunPaths(folder, "lazy", "1")
    train(cfg, paths, gpu="cpu", data=data, callbacks=[Charts(paths)])
    with open(paths.log_csv) as f:
        rows = list(csv.DictReader(f))[1:]
    return {"rates": [TRAIN_PATCHES / float(r["time"]) for r in rows], "wait": [float(r["data_wait"]) / float(r["time"]) for r in rows]}


def child_train(a: dict) -> dict:
    """``segflow.training.train`` on ``a["tree"]`` (BiaPy's 3D template network) for a few epochs: patches/s of each
    epoch after the first, from its own epoch log."""
    from segflow.config.loader import build_config

    return _train(build_config(_train_tree(a["tree"], a["epochs"]))[0], Path(a["dir"]))


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
    big_args = dict(x=str(big / "x.zarr"), y=str(big / "y.zarr"))
    for workers in (0, 2):
        r = ctx.runner.child(child_large, name=f"{workers} readers", workers=workers, batches=batches, **big_args)
        if r:
            ctx.table.row(f"patches/s, the loader alone, {workers} reader process(es) (peak RSS of the tree {r['rss']:.0f} MiB)", r["rate"], None, "{:.1f}")
    ctx.table.section(
        f"training (segflow.training.train, 3D U-Net 16-256, {TRAIN_PATCHES} random 64^3 patches an epoch, batches of 4) from the "
        f"{edge}^3 volume read patch by patch; median over the epochs after the first; baseline column: the size of the image"
    )
    for workers in (0, 1, 2):
        check = workers == 0  # the whole-mask check once: it does not depend on the readers
        r = ctx.runner.child(child_large_train, name=f"train {workers} readers", workers=workers, epochs=3 if ctx.quick else 5, check=check, **big_args)
        if not r:
            continue
        setup = f"set up in {r['setup_s']:.0f} s" + (", with the mask check" if check else ", no mask check")
        ctx.table.row(f"patches/s, {workers} reader(s) ({setup}); data-wait share of an epoch {med(r['wait']):.0%}", med(r["rates"]), None, "{:.2f}", noise=(spread(r["rates"]), None))
        ctx.table.row(f"  peak MiB of the process tree, {workers} reader(s): PSS (RSS sum {r['rss']:.0f})", r["pss"], gib * 1024, "{:.0f}", higher_better=False)
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
