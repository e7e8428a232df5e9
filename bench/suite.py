"""Speed suite: segflow against plain MONAI / PyTorch on the same work, in the same run, on this machine.

    python bench/suite.py [--quick] [--only SECTIONS] [--isbi-checkpoint PATH] [--keep DIR] [--json FILE]

Prints one table. Each row is one figure for segflow and for a baseline measured in this run, with their
ratio (> 1 means segflow is better: faster, or less memory) and the noise of each ((max - min) / median
over the repeats; the figure itself is the median):

- training: patches per second and seconds per epoch of 2D (6 x 256x256 patches a step) and 3D
  (4 x 64x64x64) U-Nets 16-256 (BiaPy's template sizes), data loading and augmentation included:
  segflow's ``make_datasets`` + ``SegModel`` + a Lightning ``Trainer`` (as ``segflow run`` builds them)
  against a plain PyTorch loop over a default ``torch.utils.data.DataLoader`` with the same MONAI network;
  fp32 / bf16 autocast and contiguous / channels_last; time the loop waits for data, with 0 and 1 worker;
- prediction: pixels (voxels) per second and peak RSS for a 2048x2048 image and a 64x512x512 stack,
  overlap 0.5, Gaussian blending: ``segflow.inference.Predictor`` against MONAI's
  ``sliding_window_inference(sw_batch_size=1)`` on the same weights; every fast path with its accuracy
  (largest probability difference and label agreement against fp32);
- data pipeline alone: patches per second from disk to tensor with augmentation;
- ISBI 2012 (when a trained checkpoint is there): test IoU of each prediction fast path.

Every measurement runs in its own child process (``--child``), so peak RSS (``VmHWM``) is its own and
one measurement cannot warm or pollute another. ``--only`` takes a comma list of: data, train2d,
train3d, predict2d, predict3d, isbi.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
ISBI_DATA = SHARED / "data" / "isbi2012_em_membranes"
ISBI_CHECKPOINT = HERE / "results" / "isbi" / "checkpoints" / "isbi_1-checkpoint-best.pth"
SECTIONS = ("data", "train2d", "train3d", "predict2d", "predict3d", "isbi")

FEATURE_MAPS = [16, 32, 64, 128, 256]
# BiaPy's templates: 2D patches of 256x256 in batches of 6; 3D batches of 4 (patches of 64^3 here).
BATCH = {2: 6, 3: 4}
PATCH = {2: (256, 256), 3: (64, 64, 64)}

SIZES = {
    "full": {
        "train_images": {2: (6, (512, 512)), 3: (2, (64, 128, 128))},  # 24 and 8 grid patches: 4 and 2 steps an epoch
        "train_epochs": {2: 4, 3: 3},  # the first epoch is warm-up, not counted
        "data_epochs": 4,
        "predict_shape": {2: (2048, 2048), 3: (64, 512, 512)},
        "predict_repeats": {2: 2, 3: 1},
    },
    "quick": {
        "train_images": {2: (3, (512, 512)), 3: (1, (64, 128, 128))},
        "train_epochs": {2: 3, 3: 3},
        "data_epochs": 3,
        "predict_shape": {2: (1024, 1024), 3: (64, 192, 192)},
        "predict_repeats": {2: 2, 3: 1},
    },
}
# Tolerance for a prediction fast path to be recommended as a default: labels against fp32.
LABEL_AGREEMENT_MIN = 0.995
ISBI_IOU_TOLERANCE = 0.005


# ----------------------------------------------------------------------------------------------- shared
def now() -> float:
    return time.perf_counter()


def memory_mib() -> dict[str, float]:
    """This process's current and peak resident memory (MiB), from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def memory_format(ndim: int):
    import torch

    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def train_tree(ndim: int, data: Path, precision: str = "auto", workers: int = -1, epochs: int = 4) -> dict:
    """The config of the training benchmark: BiaPy's template (U-Net 16-256, ADAMW + one-cycle, flips and
    free rotations; z flips in 3D), validation off so that an epoch is training alone."""
    aug = {"ENABLE": True, "RANDOM_ROT": True, "VFLIP": True, "HFLIP": True}
    if ndim == 3:
        aug["ZFLIP"] = True
    return {
        "SYSTEM": {"NUM_WORKERS": workers, "SEED": 0},
        "PROBLEM": {"NDIM": f"{ndim}D"},
        "DATA": {
            "PATCH_SIZE": str((*PATCH[ndim], 1)),
            "NORMALIZATION": {"TYPE": "div"},
            "TRAIN": {"PATH": str(data / "train" / "x"), "GT_PATH": str(data / "train" / "y")},
            "VAL": {"SPLIT_TRAIN": 0.0},
        },
        "AUGMENTOR": aug,
        "MODEL": {"ARCHITECTURE": "unet", "FEATURE_MAPS": FEATURE_MAPS, "N_CLASSES": 2},
        "LOSS": {"TYPE": "CE"},
        "TRAIN": {
            "ENABLE": True,
            "OPTIMIZER": "ADAMW",
            "LR": 1e-3,
            "BATCH_SIZE": BATCH[ndim],
            "EPOCHS": epochs,
            "PRECISION": precision,
            "LR_SCHEDULER": {"NAME": "onecycle"},
        },
    }


def iou(labels: np.ndarray, mask: np.ndarray) -> float:
    """Foreground IoU (class 1)."""
    fg, gt = labels.astype(bool), mask.astype(bool)
    union = np.logical_or(fg, gt).sum()
    return float(np.logical_and(fg, gt).sum() / union) if union else float("nan")


# ----------------------------------------------------------------------------------------------- plain baseline
class PlainPatches:
    """What a plain PyTorch script does: a grid of patches, each read from its file on every access,
    divided by 255 and augmented with MONAI's stock dictionary transforms."""

    def __init__(self, folder: Path, ndim: int, seed: int = 0) -> None:
        import tifffile
        from monai.transforms import Compose, RandFlipd, RandRotated

        self.ndim = ndim
        self.patch = PATCH[ndim]
        self.items = []
        for image in sorted((folder / "x").iterdir()):
            shape = tifffile.imread(image).shape
            starts = [range(0, s - p + 1, p) for s, p in zip(shape, self.patch)]
            for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, ndim):
                self.items.append((image, folder / "y" / image.name, tuple(int(c) for c in corner)))
        keys = ("image", "label")
        flips = [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(ndim)]  # y, x (and z)
        # A free rotation in the y-x plane, image bilinear and mask nearest, as segflow's RANDOM_ROT.
        rotation = RandRotated(keys, range_x=np.pi, prob=0.5, mode=("bilinear", "nearest"), padding_mode="reflection")
        self.transform = Compose([*flips, rotation])
        self.transform.set_random_state(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        import tifffile
        import torch

        image_path, mask_path, corner = self.items[k]
        region = tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        image = tifffile.imread(image_path)[region].astype(np.float32)[None] / 255.0
        mask = tifffile.imread(mask_path)[region].astype(np.float32)[None]
        out = self.transform({"image": image, "label": mask})
        return torch.as_tensor(out["image"]), torch.as_tensor(out["label"])


def plain_loader(folder: Path, ndim: int):
    import torch
    from monai.data import set_track_meta

    set_track_meta(False)  # plain tensors out of MONAI's transforms, as a plain script would want
    return torch.utils.data.DataLoader(PlainPatches(folder, ndim), batch_size=BATCH[ndim], shuffle=True)


# ----------------------------------------------------------------------------------------------- children
def segflow_datasets(a: dict):
    import lightning as L

    from segflow.config import build_config
    from segflow.data import load_train_data
    from segflow.training import make_datasets

    cfg = build_config(train_tree(a["ndim"], Path(a["data"]), a.get("precision", "auto"), a.get("workers", -1), a.get("epochs", 4)))[0]
    L.seed_everything(0, workers=True, verbose=False)
    start = now()
    data = load_train_data(cfg)  # every image decoded and normalised once, kept in memory
    decode = now() - start
    train_ds, _ = make_datasets(cfg, data)
    return cfg, data, train_ds, decode


def segflow_loader(cfg, train_ds):
    from monai.data import DataLoader

    from segflow.training import num_workers

    workers = num_workers(cfg.SYSTEM.NUM_WORKERS)
    # As segflow.training.train builds it on the CPU (pinned memory only for a GPU).
    loader = DataLoader(
        train_ds, batch_size=cfg.TRAIN.BATCH_SIZE, shuffle=cfg.AUGMENTOR.SHUFFLE_TRAIN_DATA_EACH_EPOCH, num_workers=workers, pin_memory=False, persistent_workers=workers > 0
    )
    return loader, workers


def child_data(a: dict) -> dict:
    """Patches per second from the data pipeline alone (no model)."""
    ndim, epochs = a["ndim"], a["epochs"]
    if a["impl"] == "segflow":
        cfg, _, train_ds, decode = segflow_datasets(a)
        loader, workers = segflow_loader(cfg, train_ds)
    else:
        decode, workers = 0.0, 0
        loader = plain_loader(Path(a["data"]) / "train", ndim)
    rates = []
    for _ in range(epochs):
        start, n = now(), 0
        for batch in loader:
            n += len(batch["image"] if isinstance(batch, dict) else batch[0])
        rates.append(n / (now() - start))
    return {"rates": rates[1:], "decode_s": decode, "workers": workers, "patches": n}


def evaluate(net, cfg, data: Path) -> float:
    """Foreground IoU of ``net`` on the synthetic test images (segflow's Predictor, fp32)."""
    import tifffile
    import torch

    from segflow.data import Normalizer
    from segflow.inference import Predictor

    net = net.to(memory_format=torch.contiguous_format).float().eval()
    p = Predictor(net=net, cfg=cfg, normalizer=Normalizer(cfg.DATA.NORMALIZATION), device=torch.device("cpu"))
    scores = []
    for image in sorted((data / "test" / "x").iterdir()):
        labels = p.predict_labels(tifffile.imread(image))
        scores.append(iou(labels, tifffile.imread(data / "test" / "y" / image.name)))
    return float(np.mean(scores))


def child_train_segflow(a: dict) -> dict:
    """segflow's training path: make_datasets + SegModel + Lightning Trainer, timed per epoch and per wait."""
    import lightning as L
    import torch

    from segflow.training import SegModel, precision

    ndim = a["ndim"]
    cfg, data, train_ds, decode = segflow_datasets(a)
    loader, workers = segflow_loader(cfg, train_ds)
    model = SegModel(cfg.model_dump(mode="json"), data.class_counts.tolist(), data.normalizer.state())
    if a["channels_last"]:
        model.net.to(memory_format=memory_format(ndim))

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.epochs: list[dict] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = self.last = now()
            self.wait, self.n = 0.0, 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            t = now()
            self.wait += t - self.last  # fetching the batch (and Lightning's bookkeeping) since the last step
            self.n += len(batch["image"])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.last = now()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.epochs.append({"time": now() - self.start, "wait": self.wait, "patches": self.n})

    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision(cfg.TRAIN.PRECISION, "cpu"),
        max_epochs=cfg.TRAIN.EPOCHS,
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loader)
    out = {"epochs": clock.epochs[1:], "decode_s": decode, "workers": workers, "precision": precision(cfg.TRAIN.PRECISION, "cpu")}
    if a.get("save"):
        model.net.to(memory_format=torch.contiguous_format)
        trainer.save_checkpoint(a["save"])
    out["iou"] = evaluate(model.net, cfg, Path(a["data"]))
    out.update(memory_mib())
    return out


def child_train_shipped(a: dict) -> dict:
    """``segflow.training.train`` itself, as ``segflow run`` calls it: epoch-to-epoch wall time, which also
    holds its two checkpoint writes, the CSV log, the charts and TensorBoard."""
    import segflow.training as training
    from segflow.config import build_config
    from segflow.paths import RunPaths

    stamps: list[float] = []

    class StampedLog(training.EpochLog):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            super().on_train_epoch_end(trainer, pl_module)
            stamps.append(now())

    training.EpochLog = StampedLog  # the benchmark's own process only: time stamps at each epoch's end
    cfg = build_config(train_tree(a["ndim"], Path(a["data"]), epochs=a["epochs"]))[0]
    paths = RunPaths(Path(a["out"]), "bench", "1")
    start = now()
    training.train(cfg, paths, gpu="cpu")
    total = now() - start
    return {"epoch_s": list(np.diff(stamps)), "total_s": total, "first_epoch_end_s": stamps[0] - start}


def child_train_plain(a: dict) -> dict:
    """The baseline: a plain PyTorch loop over a default DataLoader, same network, loss, optimiser, schedule."""
    import torch

    from segflow.config import build_config
    from segflow.models import build_model

    ndim, epochs = a["ndim"], a["epochs"]
    cfg = build_config(train_tree(ndim, Path(a["data"]), epochs=epochs))[0]
    torch.manual_seed(0)
    net = build_model(cfg)
    loader = plain_loader(Path(a["data"]) / "train", ndim)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.02)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=epochs * len(loader))
    criterion = torch.nn.BCEWithLogitsLoss()
    results = []
    for _ in range(epochs):
        net.train()
        start = last = now()
        wait, n = 0.0, 0
        for x, y in loader:
            wait += now() - last
            optimiser.zero_grad()
            loss = criterion(net(x), y)
            loss.backward()
            optimiser.step()
            schedule.step()
            n += len(x)
            last = now()
        results.append({"time": now() - start, "wait": wait, "patches": n})
    out = {"epochs": results[1:], "workers": 0, "precision": "32-true", "iou": evaluate(net, cfg, Path(a["data"]))}
    out.update(memory_mib())
    return out


def child_predict(a: dict) -> dict:
    """Predict one image; time it (after a warm-up on a small crop) and report peak memory."""
    import torch

    ndim = a["ndim"]
    image = np.load(a["image"])
    overlap = [0.5] * ndim
    if a["impl"] == "monai":
        from monai.inferers import sliding_window_inference

        from segflow.inference import load_checkpoint
        from segflow.models import build_model
        from segflow.schema import Config
        import segflow.training  # noqa: F401  (the same libraries in memory as segflow's child)

        ckpt = load_checkpoint(a["checkpoint"])
        cfg = Config.model_validate(ckpt["hyper_parameters"]["config"])
        net = build_model(cfg)
        net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
        net.eval()

        def run(img: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                x = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None]
                logits = sliding_window_inference(x, PATCH[ndim], 1, net, overlap=0.5, mode="gaussian")
                return torch.sigmoid(logits)[0, 0].numpy()

    else:
        from segflow.inference import Predictor

        p = Predictor.from_checkpoint(a["checkpoint"], "cpu")
        if a["precision"] == "bf16":
            p.autocast = torch.bfloat16
        elif a["precision"] == "fp32":
            p.autocast = None
        if a["channels_last"]:
            p.net.to(memory_format=memory_format(ndim))
        batch = a.get("batch")

        def run(img: np.ndarray) -> np.ndarray:
            return p.predict(img, overlap=overlap, batch_size=batch)[..., 0]

        a["batch_used"] = batch or (p.cfg.TEST.BATCH_SIZE if p.cfg.TEST.BATCH_SIZE > 0 else 2 * p.cfg.TRAIN.BATCH_SIZE)
        a["autocast"] = str(p.autocast)
    run(image[tuple(slice(0, 2 * s) for s in PATCH[ndim])])  # warm-up: oneDNN builds its kernels on first use
    before = memory_mib()["VmRSS"]
    seconds = []
    for r in range(a["repeats"]):
        start = now()
        probs = run(image)
        seconds.append(now() - start)
        if r == 0:
            np.save(a["out"], probs.astype(np.float32))
    out = {"seconds": seconds, "voxels": int(image.size), "rss_before": before, "batch": a.get("batch_used", 1), "autocast": a.get("autocast", "None")}
    out.update(memory_mib())
    return out


def child_isbi(a: dict) -> dict:
    """ISBI 2012 test IoU (merge patches, no TTA, the checkpoint's own overlap) of each prediction fast path."""
    import imageio.v3 as iio
    import torch

    from segflow.inference import Predictor

    p = Predictor.from_checkpoint(a["checkpoint"], "cpu")
    shipped = p.autocast
    images = sorted((ISBI_DATA / "test" / "x").iterdir())
    pairs = [(iio.imread(f), iio.imread(ISBI_DATA / "test" / "y" / f.name)) for f in images]
    p.predict(pairs[0][0][:256, :256])  # warm-up
    out = {"shipped_autocast": str(shipped), "variants": {}}
    for name, dtype, cl in (("fp32", None, False), ("fp32+cl", None, True), ("bf16", torch.bfloat16, False), ("bf16+cl", torch.bfloat16, True)):
        p.autocast = dtype
        p.net.to(memory_format=memory_format(2) if cl else torch.contiguous_format)
        p.predict(pairs[0][0][:256, :256])
        start = now()
        probs = [p.predict(x)[..., 0] for x, _ in pairs]
        seconds = now() - start
        scores = [iou(pr > 0.5, y) for pr, (_, y) in zip(probs, pairs)]
        out["variants"][name] = {"seconds": seconds, "pixels": sum(x.size for x, _ in pairs), "iou": float(np.mean(scores)), "probs": probs}
    ref = out["variants"]["fp32"]["probs"]
    for v in out["variants"].values():
        diffs = [float(np.abs(a_ - b_).max()) for a_, b_ in zip(v["probs"], ref)]
        agree = np.mean([((a_ > 0.5) == (b_ > 0.5)).mean() for a_, b_ in zip(v["probs"], ref)])
        v.update(max_diff=max(diffs), agreement=float(agree))
        del v["probs"]
    return out


CHILDREN = {
    "data": child_data,
    "train_segflow": child_train_segflow,
    "train_shipped": child_train_shipped,
    "train_plain": child_train_plain,
    "predict": child_predict,
    "isbi": child_isbi,
}


# ----------------------------------------------------------------------------------------------- parent
class Suite:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.mode = "quick" if args.quick else "full"
        self.sizes = SIZES[self.mode]
        self.work = work
        self.rows: list[tuple] = []
        self.results: dict[str, Any] = {}
        self.sections = set(args.only.split(",")) if args.only else set(SECTIONS)
        self.log = open(work / "children.log", "a")

    def child(self, kind: str, **a: Any) -> dict | None:
        """Run one measurement in a fresh process; None (and a note) when it fails."""
        a["kind"] = kind
        start = now()
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(a)], capture_output=True, text=True)
        self.log.write(f"### {json.dumps(a)}\n{proc.stdout}\n{proc.stderr}\n")
        self.log.flush()
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("SUITE-RESULT "):
                result = json.loads(line[len("SUITE-RESULT ") :])
                result["wall_s"] = now() - start
                return result
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  ! {kind} {a.get('name', '')} failed: {' | '.join(tail)}", flush=True)
        return None

    def section(self, title: str) -> None:
        self.rows.append(("section", title))

    def row(self, what: str, ours: Any, base: Any, fmt: str = "{:.2f}", higher_better: bool = True, noise: tuple = (None, None), ratio: bool = True) -> None:
        def show(v: Any) -> str:
            if v is None:
                return "-"
            return v if isinstance(v, str) else fmt.format(v)

        r = "-"
        if ratio and isinstance(ours, (int, float)) and isinstance(base, (int, float)) and ours and base:
            r = f"{(ours / base if higher_better else base / ours):.2f}x"
        n = "/".join("-" if v is None else f"{100 * v:.0f}%" for v in noise)
        self.rows.append(("row", what, show(ours), show(base), r, n))

    # ------------------------------------------------------------------ data
    def make_data(self) -> None:
        from segflow.synthetic import make_dataset, synthetic_pair

        for ndim in (2, 3):
            n, shape = self.sizes["train_images"][ndim]
            make_dataset(self.work / f"data{ndim}d", ndim=ndim, n_train=n, n_test=2, shape=shape, seed=ndim)
        # Prediction images: a mosaic of training-sized synthetic images, so objects have the training scale.
        rng = np.random.default_rng(7)
        for ndim in (2, 3):
            shape = self.sizes["predict_shape"][ndim]
            tile = self.sizes["train_images"][ndim][1]
            image = np.zeros(shape, np.uint8)
            mask = np.zeros(shape, np.uint8)
            for corner in np.ndindex(*[-(-s // t) for s, t in zip(shape, tile)]):
                region = tuple(slice(c * t, min((c + 1) * t, s)) for c, t, s in zip(corner, tile, shape))
                x, y = synthetic_pair(tile, rng)
                crop = tuple(slice(0, r.stop - r.start) for r in region)
                image[region], mask[region] = x[crop], y[crop]
            np.save(self.work / f"predict{ndim}d.npy", image)
            np.save(self.work / f"predict{ndim}d_mask.npy", mask)

    def data_section(self) -> None:
        epochs = self.sizes["data_epochs"]
        for ndim in (2, 3):
            data = str(self.work / f"data{ndim}d")
            ours = self.child("data", impl="segflow", ndim=ndim, data=data, epochs=epochs)
            ours0 = self.child("data", impl="segflow", ndim=ndim, data=data, epochs=epochs, workers=0)
            base = self.child("data", impl="plain", ndim=ndim, data=data, epochs=epochs)
            self.results[f"data{ndim}d"] = {"segflow": ours, "segflow_0": ours0, "plain": base}
            self.section(f"data pipeline alone, {ndim}D {'x'.join(map(str, PATCH[ndim]))} patches, disk to tensor with augmentation (baseline: per-item TIFF read, default DataLoader)")
            if ours and base:
                self.row(f"patches/s, segflow as shipped ({ours['workers']} worker) vs default DataLoader", med(ours["rates"]), med(base["rates"]), "{:.1f}", noise=(spread(ours["rates"]), spread(base["rates"])))
            if ours0 and base:
                self.row("patches/s, segflow with 0 workers vs default DataLoader (0 workers)", med(ours0["rates"]), med(base["rates"]), "{:.1f}", noise=(spread(ours0["rates"]), spread(base["rates"])))
            if ours:
                self.row("  decode + normalise every training image once (segflow caches them), s", ours["decode_s"], None, "{:.2f}")

    # ------------------------------------------------------------------ training
    def train_section(self, ndim: int) -> dict:
        data = str(self.work / f"data{ndim}d")
        epochs = self.sizes["train_epochs"][ndim]
        common = dict(ndim=ndim, data=data, epochs=epochs)
        ckpt = str(self.work / f"model{ndim}d.ckpt")
        runs = {
            "plain": self.child("train_plain", **common),
            "shipped": self.child("train_segflow", name="fp32", precision="auto", channels_last=False, save=ckpt, **common),
            "fp32_w0": self.child("train_segflow", name="fp32 w0", precision="auto", channels_last=False, workers=0, **common),
            "fp32+cl": self.child("train_segflow", name="fp32+cl", precision="32", channels_last=True, **common),
            "bf16": self.child("train_segflow", name="bf16", precision="bf16", channels_last=False, **common),
            "bf16+cl": self.child("train_segflow", name="bf16+cl", precision="bf16", channels_last=True, **common),
            "bf16+cl_w0": self.child("train_segflow", name="bf16+cl w0", precision="bf16", channels_last=True, workers=0, **common),
        }
        if ndim == 2 and self.mode == "full":
            runs["train()"] = self.child("train_shipped", out=str(self.work / "shipped2d"), **common)
        self.results[f"train{ndim}d"] = runs
        if not Path(ckpt).is_file():
            self.untrained_checkpoint(ndim, ckpt)
        base = runs["plain"]
        n, _ = self.sizes["train_images"][ndim]
        steps = (base or runs["shipped"] or {}).get("epochs", [{}])[0].get("patches", 0) // BATCH[ndim]
        self.section(
            f"training, {ndim}D U-Net 16-256, {BATCH[ndim]} x {'x'.join(map(str, PATCH[ndim]))} patches a step, {steps} steps an epoch, "
            f"median of {epochs - 1} epochs after a warm-up one (baseline: plain PyTorch loop, default DataLoader, fp32)"
        )
        labels = {
            "shipped": "segflow as shipped (fp32 on the CPU, 1 worker)",
            "fp32+cl": "segflow fp32 + channels_last",
            "bf16": "segflow bf16 autocast",
            "bf16+cl": "segflow bf16 autocast + channels_last",
            "fp32_w0": "segflow as shipped but 0 workers",
            "bf16+cl_w0": "segflow bf16 + channels_last, 0 workers",
        }
        for key, label in labels.items():
            r = runs.get(key)
            if not r or not base:
                continue
            ours_rate, base_rate = rates(r), rates(base)
            self.row(f"patches/s, {label}", med(ours_rate), med(base_rate), "{:.2f}", noise=(spread(ours_rate), spread(base_rate)))
        if runs["shipped"] and base:
            ours_t = [e["time"] for e in runs["shipped"]["epochs"]]
            base_t = [e["time"] for e in base["epochs"]]
            self.row("s/epoch, segflow as shipped", med(ours_t), med(base_t), "{:.2f}", higher_better=False, noise=(spread(ours_t), spread(base_t)))
            if runs["bf16+cl"]:
                fast_t = [e["time"] for e in runs["bf16+cl"]["epochs"]]
                self.row("s/epoch, segflow bf16 + channels_last", med(fast_t), med(base_t), "{:.2f}", higher_better=False, noise=(spread(fast_t), spread(base_t)))
        shipped = runs.get("train()")
        if shipped and base:
            base_t = [e["time"] for e in base["epochs"]]
            ep = shipped["epoch_s"][1:] or shipped["epoch_s"]
            self.row("s/epoch, segflow.training.train() as `segflow run` (+ 2 checkpoints, log, charts a epoch)", med(ep), med(base_t), "{:.2f}", higher_better=False, noise=(spread(ep), spread(base_t)))
        # Starvation: how long the loop waits for data each epoch.
        for key, label in (("fp32_w0", "fp32, 0 workers"), ("shipped", "fp32, 1 worker (as shipped)"), ("bf16+cl_w0", "bf16+cl, 0 workers"), ("bf16+cl", "bf16+cl, 1 worker")):
            r = runs.get(key)
            if r and base:
                w = [e["wait"] for e in r["epochs"]]
                t = med([e["time"] for e in r["epochs"]])
                bw = [e["wait"] for e in base["epochs"]]
                self.row(f"data wait s/epoch, segflow {label} ({100 * med(w) / t:.0f}% of the epoch)", med(w), med(bw), "{:.2f}", higher_better=False, noise=(spread(w), spread(bw)))
        # Accuracy after the same steps (indicative: few steps on synthetic data).
        if base:
            for key in ("shipped", "fp32+cl", "bf16", "bf16+cl"):
                r = runs.get(key)
                if r:
                    self.row(f"test IoU after {epochs} epochs (synthetic), segflow {key}", r["iou"], base["iou"], "{:.3f}", ratio=False)
        return runs

    def untrained_checkpoint(self, ndim: int, path: str) -> None:
        """When training was skipped or failed: a checkpoint of the untrained network (for timing only)."""
        import torch

        from segflow.config import build_config
        from segflow.training import SegModel

        cfg = build_config(train_tree(ndim, self.work / f"data{ndim}d"))[0]
        torch.manual_seed(0)
        model = SegModel(cfg.model_dump(mode="json"), [1, 1], {"mean": None, "std": None})
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)

    # ------------------------------------------------------------------ prediction
    def predict_section(self, ndim: int) -> None:
        ckpt = self.work / f"model{ndim}d.ckpt"
        if not ckpt.is_file():
            self.untrained_checkpoint(ndim, str(ckpt))
        image = str(self.work / f"predict{ndim}d.npy")
        repeats = self.sizes["predict_repeats"][ndim]
        common = dict(ndim=ndim, image=image, checkpoint=str(ckpt), repeats=repeats)
        variants = {
            "shipped": dict(precision="shipped", channels_last=False),
            "fp32 b1": dict(precision="fp32", channels_last=False, batch=1),
            "fp32+cl": dict(precision="fp32", channels_last=True),
            "bf16": dict(precision="bf16", channels_last=False),
            "bf16+cl": dict(precision="bf16", channels_last=True),
            "bf16+cl b1": dict(precision="bf16", channels_last=True, batch=1),
        }
        if ndim == 3 and self.mode == "full":  # each 3D pass is minutes: the sweep keeps what decides the defaults
            variants = {k: v for k, v in variants.items() if k in ("shipped", "bf16+cl", "bf16+cl b1")}
        out = {"monai": self.child("predict", impl="monai", name="monai", out=str(self.work / f"p{ndim}_monai.npy"), **common)}
        for name, v in variants.items():
            out[name] = self.child("predict", impl="segflow", name=name, out=str(self.work / f"p{ndim}_{name.replace(' ', '_')}.npy"), **v, **common)
        self.results[f"predict{ndim}d"] = out
        shape = self.sizes["predict_shape"][ndim]
        base = out["monai"]
        self.section(
            f"prediction, {ndim}D {'x'.join(map(str, shape))} uint8, windows {'x'.join(map(str, PATCH[ndim]))}, overlap 0.5, Gaussian blend, "
            f"median of {repeats} (baseline: MONAI sliding_window_inference, sw_batch_size=1, fp32, no_grad)"
        )
        unit = "px/s" if ndim == 2 else "vox/s"
        for name, r in out.items():
            if name == "monai" or not r or not base:
                continue
            label = f"segflow {name}" + (f" (autocast {r['autocast'].replace('torch.', '')}, batch {r['batch']})" if name == "shipped" else f" (batch {r['batch']})")
            self.row(f"M{unit}, {label}", r["voxels"] / med(r["seconds"]) / 1e6, base["voxels"] / med(base["seconds"]) / 1e6, "{:.3f}", noise=(spread(r["seconds"]), spread(base["seconds"])))
        for name in ("shipped", "bf16+cl"):
            r = out.get(name)
            if r and base:
                self.row(f"peak RSS MiB, segflow {name}", r["VmHWM"], base["VmHWM"], "{:.0f}", higher_better=False)
                self.row(f"  RSS growth while predicting MiB, segflow {name}", r["VmHWM"] - r["rss_before"], base["VmHWM"] - base["rss_before"], "{:.0f}", higher_better=False)
        # Accuracy of each path against segflow fp32 (the plain path) and against MONAI.
        mask = np.load(self.work / f"predict{ndim}d_mask.npy")
        ref_name = "fp32 b1" if out.get("fp32 b1") else "shipped"
        ref_file = self.work / f"p{ndim}_{ref_name.replace(' ', '_')}.npy"
        if not ref_file.is_file():
            return
        ref = np.load(ref_file)
        accuracy = {}
        for name, r in out.items():
            f = self.work / f"p{ndim}_{name.replace(' ', '_')}.npy"
            if not r or not f.is_file():
                continue
            p = np.load(f)
            accuracy[name] = {
                "max_diff": float(np.abs(p - ref).max()),
                "agreement": float(((p > 0.5) == (ref > 0.5)).mean()),
                "iou": iou(p > 0.5, mask),
            }
        self.results[f"predict{ndim}d"]["accuracy"] = accuracy
        for name, acc in accuracy.items():
            if name == ref_name:
                continue
            who = "MONAI baseline" if name == "monai" else f"segflow {name}"
            self.row(f"vs segflow {ref_name}: {who}: max |dp| {acc['max_diff']:.4f}, labels agree {100 * acc['agreement']:.3f}%", acc["iou"], accuracy[ref_name]["iou"], "{:.4f}", ratio=False)
        if "monai" in accuracy:
            self.row("  (the two rows above: test IoU of the path / of the reference, synthetic mask)", None, None, ratio=False)

    # ------------------------------------------------------------------ ISBI
    def isbi_section(self) -> None:
        ckpt = Path(self.args.isbi_checkpoint)
        self.section(f"ISBI 2012 test set (10 x 512x512, merge patches, no TTA), checkpoint {ckpt}")
        if not ckpt.is_file() or not ISBI_DATA.is_dir():
            self.row("skipped: train it with `python bench/isbi.py` or give --isbi-checkpoint", None, None, ratio=False)
            return
        r = self.child("isbi", checkpoint=str(ckpt))
        self.results["isbi"] = r
        if not r:
            return
        ref = r["variants"]["fp32"]
        for name, v in r["variants"].items():
            self.row(
                f"foreground IoU, {name} (vs fp32: max |dp| {v['max_diff']:.4f}, labels agree {100 * v['agreement']:.3f}%, {v['pixels'] / v['seconds'] / 1e6:.2f} Mpx/s)",
                v["iou"],
                ref["iou"],
                "{:.4f}",
                ratio=False,
            )
        self.row(f"  (checkpoint's own precision, i.e. what Predictor uses: autocast {r['shipped_autocast']})", None, None, ratio=False)

    # ------------------------------------------------------------------ report
    def recommendations(self) -> list[str]:
        out = []
        for ndim in (2, 3):
            pred = self.results.get(f"predict{ndim}d")
            if not pred or not pred.get("monai") or "accuracy" not in pred:
                continue
            base = pred["monai"]["voxels"] / med(pred["monai"]["seconds"])
            ok = {
                k: v["voxels"] / med(v["seconds"])
                for k, v in pred.items()
                if k not in ("monai", "accuracy") and v and pred["accuracy"].get(k, {}).get("agreement", 0) >= LABEL_AGREEMENT_MIN
            }
            if ok:
                best = max(ok, key=ok.get)
                shipped = pred["shipped"]["voxels"] / med(pred["shipped"]["seconds"]) if pred.get("shipped") else float("nan")
                out.append(
                    f"{ndim}D prediction: fastest path within tolerance (labels agree >= {100 * LABEL_AGREEMENT_MIN:.1f}% with fp32) is "
                    f"'{best}': {ok[best] / base:.2f}x the MONAI baseline, {ok[best] / shipped:.2f}x segflow as shipped"
                )
        for ndim in (2, 3):
            runs = self.results.get(f"train{ndim}d")
            if not runs or not runs.get("plain"):
                continue
            base = med(rates(runs["plain"]))
            ok = {k: med(rates(v)) for k, v in runs.items() if k in ("shipped", "fp32+cl", "bf16", "bf16+cl", "fp32_w0", "bf16+cl_w0") and v}
            if ok:
                best = max(ok, key=ok.get)
                out.append(f"{ndim}D training: fastest is '{best}': {ok[best] / base:.2f}x the plain loop, {ok[best] / ok.get('shipped', float('nan')):.2f}x segflow as shipped")
        isbi = self.results.get("isbi")
        if isbi:
            v = isbi["variants"]
            within = [k for k in v if abs(v[k]["iou"] - v["fp32"]["iou"]) <= ISBI_IOU_TOLERANCE]
            out.append(f"ISBI: paths with test IoU within {ISBI_IOU_TOLERANCE} of fp32: {', '.join(within)}")
        return out

    def print_table(self, header: str) -> str:
        width = max([len(r[1]) for r in self.rows if r[0] == "row"] + [60])
        lines = [header, f"{'what':<{width}}  {'segflow':>10}  {'baseline':>10}  {'ratio':>7}  {'noise s/b':>9}"]
        for r in self.rows:
            if r[0] == "section":
                lines.append(f"-- {r[1]}")
            else:
                _, what, ours, base, ratio, noise = r
                lines.append(f"{what:<{width}}  {ours:>10}  {base:>10}  {ratio:>7}  {noise:>9}")
        return "\n".join(lines)


def med(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def spread(values: list[float]) -> float | None:
    """(max - min) / median: the noise of a median."""
    if len(values) < 2:
        return None
    return float((max(values) - min(values)) / np.median(values))


def rates(run: dict) -> list[float]:
    return [e["patches"] / e["time"] for e in run["epochs"]]


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (StopIteration, OSError):
        model = platform.processor() or "unknown CPU"
    import torch

    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() if hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported") else "?"
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads, oneDNN bf16: {bf16})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats: a ~3-minute smoke run")
    ap.add_argument("--only", default="", help=f"comma list of sections: {','.join(SECTIONS)}")
    ap.add_argument("--isbi-checkpoint", default=str(ISBI_CHECKPOINT), help="a trained ISBI checkpoint (bench/isbi.py writes one)")
    ap.add_argument("--keep", default="", help="work in this folder and keep it (data, outputs, children.log)")
    ap.add_argument("--json", default="", help="also write every measurement to this JSON file")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        a = json.loads(args.child)
        result = CHILDREN[a.pop("kind")](a)
        print("SUITE-RESULT " + json.dumps(result))
        return

    start = now()
    tmp = None
    if args.keep:
        work = Path(args.keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="segflow-bench-")
        work = Path(tmp.name)
    suite = Suite(args, work)
    header = f"segflow speed suite ({suite.mode}), {datetime.datetime.now():%Y-%m-%d %H:%M}, {machine()}"
    print(header, flush=True)
    suite.make_data()
    steps = [
        ("data", suite.data_section),
        ("train2d", lambda: suite.train_section(2)),
        ("train3d", lambda: suite.train_section(3)),
        ("predict2d", lambda: suite.predict_section(2)),
        ("predict3d", lambda: suite.predict_section(3)),
        ("isbi", suite.isbi_section),
    ]
    for name, step in steps:
        if name in suite.sections:
            t = now()
            print(f"[{name}] ...", flush=True)
            step()
            print(f"[{name}] {now() - t:.0f} s", flush=True)
    table = suite.print_table(header)
    print("\n" + table)
    recs = suite.recommendations()
    if recs:
        print("\nMeasured, for the defaults:\n" + "\n".join(f"- {r}" for r in recs))
    print(f"\nwall time {now() - start:.0f} s; per-child output in {work / 'children.log'}" + (" (removed)" if tmp else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": suite.results, "rows": suite.rows, "recommendations": recs}, indent=1, default=str))
    if tmp:
        suite.log.close()
        tmp.cleanup()


if __name__ == "__main__":
    main()
