"""Speed suite: segflow against plain MONAI / PyTorch on the same work, in the same run, on this machine.

    python bench/suite.py [--quick] [--only SECTIONS] [--isbi-checkpoint PATH] [--keep DIR] [--json FILE]

Prints one table. A row holds one figure for segflow and one for a baseline measured in this run, their
ratio (> 1: segflow is better, i.e. faster or smaller) and the noise of each figure, (max - min) / median
over its repeats (the figure is the median). Sections (``--only`` takes a comma list of them):

- ``data``: the data pipeline alone, patches per second from disk to tensor with augmentation: the
  DataLoader ``segflow.training.train`` builds (images decoded once and cached) against a plain Dataset
  that reads its TIFF on every access, with MONAI's stock transforms, in a default DataLoader.
- ``train2d`` / ``train3d``: 2D (6 x 256x256 patches a step) and 3D (4 x 64x64x64) U-Nets 16-256, BiaPy's
  template sizes, flips and free rotations. First the training step alone (``SegModel.training_step`` +
  backward + AdamW) in fp32 / bf16 autocast x contiguous / channels_last, round-robin in one process, with
  loss and gradient agreement against fp32. Then whole epochs, data loading and augmentation included:
  ``segflow.training.train`` itself (its Trainer, loader, checkpoints, log) as shipped, against a plain
  PyTorch loop over a default ``torch.utils.data.DataLoader`` with the same MONAI network, loss, optimiser
  and schedule in fp32; in 2D also the shipped run with 1 worker instead of 0 (how long each loop waits for
  data: starvation) and with v0.1.0's defaults (fp32, contiguous, 1 worker).
- ``predict2d`` / ``predict3d``: first every prediction path round-robin in one process on a mid-size image
  (segflow's ``Predictor`` as shipped, in fp32 / bf16 x contiguous / channels_last x window batch, and
  MONAI's ``sliding_window_inference(sw_batch_size=1)``), with probability and label agreement against
  fp32; then a 2048x2048 image and a 64x512x512 stack (overlap 0.5, Gaussian blend), each path in its own
  process for its peak RSS: MONAI, segflow as shipped, the fastest segflow path within tolerance and
  v0.1.0's defaults.
- ``isbi``: ISBI 2012 test IoU of each prediction path, when a trained checkpoint is there.

Every measurement runs in a child process (``--child``) so its peak RSS (``VmHWM``) is its own and one
measurement cannot warm up or pollute another. Other processes on the machine add noise to every figure;
the ratios come from the same run, and the round-robin sections from the same minutes.
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
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
ISBI_DATA = SHARED / "data" / "isbi2012_em_membranes"
ISBI_CHECKPOINT = HERE / "results" / "isbi" / "checkpoints" / "isbi_1-checkpoint-best.pth"
SECTIONS = ("data", "train2d", "train3d", "predict2d", "predict3d", "isbi")

FEATURE_MAPS = [16, 32, 64, 128, 256]
BATCH = {2: 6, 3: 4}  # BiaPy's 2D and 3D templates
PATCH = {2: (256, 256), 3: (64, 64, 64)}

SIZES = {
    "full": {
        "data_epochs": 4,
        "train": {
            # images, epochs (the first is a warm-up, not counted), rounds of the step sweep, segflow runs
            2: {"images": (6, (512, 512)), "epochs": 4, "step_rounds": 3, "runs": ("shipped", "w1", "v010")},
            3: {"images": (2, (64, 128, 128)), "epochs": 4, "step_rounds": 1, "runs": ("shipped",)},
        },
        "predict": {
            # sweep image and rounds; the issue's image and the passes of each path (one process each)
            2: {"sweep": (768, 768), "rounds": 4, "shape": (2048, 2048), "passes": {"monai": 3, "shipped": 3, "best": 3, "v0.1.0": 1}},
            3: {"sweep": (64, 128, 128), "rounds": 2, "shape": (64, 512, 512), "passes": {"monai": 1, "shipped": 1, "best": 1, "v0.1.0": 1}},
        },
    },
    "quick": {
        "data_epochs": 3,
        "train": {
            2: {"images": (3, (512, 512)), "epochs": 3, "step_rounds": 1, "runs": ("shipped", "w1")},
            3: {"images": (1, (64, 128, 128)), "epochs": 2, "step_rounds": 0, "runs": ("shipped",)},
        },
        "predict": {
            2: {"sweep": (512, 512), "rounds": 3, "shape": (1024, 1024), "passes": {"monai": 1, "shipped": 1, "best": 1}},
            3: {"sweep": (64, 128, 128), "rounds": 1, "shape": (64, 128, 128), "passes": {"monai": 1, "shipped": 1, "best": 1}},
        },
    },
}
# A prediction path is a candidate default only if its labels agree with fp32 on this share of pixels and
# its test IoU is within the issue's 0.005 of fp32's.
LABEL_AGREEMENT_MIN = 0.99
# ... and the training step only if its loss and gradient agree with fp32 this well.
LOSS_RTOL, GRAD_COSINE_MIN = 0.02, 0.99
ISBI_IOU_TOLERANCE = 0.005


# ----------------------------------------------------------------------------------------------- helpers
def now() -> float:
    return time.perf_counter()


def med(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def spread(values: list[float]) -> float | None:
    """(max - min) / median: the noise of a median of repeats."""
    return float((max(values) - min(values)) / np.median(values)) if len(values) > 1 else None


def memory_mib() -> dict[str, float]:
    """This process's resident memory now and at its peak, MiB (/proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def layout(ndim: int, channels_last: bool):
    import torch

    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def iou(labels: np.ndarray, mask: np.ndarray) -> float:
    """Foreground IoU (class 1)."""
    fg, gt = np.asarray(labels).astype(bool), np.asarray(mask).astype(bool)
    union = np.logical_or(fg, gt).sum()
    return float(np.logical_and(fg, gt).sum() / union) if union else float("nan")


def agreement(p: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {"max_diff": float(np.abs(p - ref).max()), "agreement": float(((p > 0.5) == (ref > 0.5)).mean())}


def train_tree(ndim: int, data: Path, precision: str = "auto", workers: int = -1, epochs: int = 4) -> dict:
    # precision 'auto' and workers -1 are segflow's defaults
    """The training benchmark's config: BiaPy's template (U-Net 16-256, ADAMW + one-cycle, flips and free
    rotations, z flips in 3D), validation off so that an epoch is training alone."""
    aug = {"ENABLE": True, "RANDOM_ROT": True, "VFLIP": True, "HFLIP": True, "AUG_SAMPLES": False}
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


# ----------------------------------------------------------------------------------------------- plain baseline
class PlainPatches:
    """What a plain PyTorch script does: a grid of patches, each read from its TIFF on every access,
    divided by 255 and augmented with MONAI's stock dictionary transforms."""

    def __init__(self, folder: Path, ndim: int, seed: int = 0) -> None:
        import tifffile
        from monai.transforms import Compose, RandFlipd, RandRotated

        self.patch = PATCH[ndim]
        self.items = []
        for image in sorted((folder / "x").iterdir()):
            shape = tifffile.imread(image).shape
            starts = [range(0, s - p + 1, p) for s, p in zip(shape, self.patch)]
            for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, ndim):
                self.items.append((image, folder / "y" / image.name, tuple(int(c) for c in corner)))
        keys = ("image", "label")
        flips = [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(ndim)]
        # A free rotation in the y-x plane (range_x; in 3D about the z axis), image bilinear, mask nearest.
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
        # MONAI hands back MetaTensors by default; the loop wants plain tensors.
        return torch.as_tensor(np.asarray(out["image"])), torch.as_tensor(np.asarray(out["label"]))


def plain_loader(folder: Path, ndim: int):
    import torch

    return torch.utils.data.DataLoader(PlainPatches(folder, ndim), batch_size=BATCH[ndim], shuffle=True)


class PlainLoop:
    """The training baseline: a plain PyTorch loop over a default DataLoader (0 workers), with the same MONAI
    network (``segflow.models.build_model``, in PyTorch's default layout), loss (binary cross-entropy), AdamW and one-cycle schedule."""

    def __init__(self, ndim: int, data: Path, epochs: int) -> None:
        import torch

        from segflow.config import build_config
        from segflow.models import build_model

        self.ndim, self.data = ndim, data
        self.cfg = build_config(train_tree(ndim, data, epochs=epochs))[0]
        with torch.random.fork_rng():  # leave the random state of a segflow run in the same process alone
            torch.manual_seed(0)
            self.net = build_model(self.cfg).to(memory_format=torch.contiguous_format)  # plain: PyTorch's default layout
        self.loader = plain_loader(data / "train", ndim)
        self.optimiser = torch.optim.AdamW(self.net.parameters(), lr=self.cfg.TRAIN.LR, weight_decay=self.cfg.TRAIN.W_DECAY)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimiser, max_lr=self.cfg.TRAIN.LR, total_steps=epochs * len(self.loader))
        self.criterion = torch.nn.BCEWithLogitsLoss()
        self.epochs: list[dict] = []

    def epoch(self) -> dict:
        self.net.train()
        start = last = now()
        wait, n = 0.0, 0
        for x, y in self.loader:
            wait += now() - last
            self.optimiser.zero_grad()
            loss = self.criterion(self.net(x), y)
            loss.backward()
            self.optimiser.step()
            self.schedule.step()
            n += len(x)
            last = now()
        result = {"steps_s": now() - start, "epoch_s": now() - start, "wait": wait, "patches": n}
        self.epochs.append(result)
        return result

    def finish(self, save: str | None) -> float:
        """Test IoU of the trained network; with ``save``, its weights as a segflow checkpoint."""
        import torch

        from segflow.training import SegModel

        self.net.eval()
        if save:
            model = SegModel(self.cfg.model_dump(mode="json"))
            model.net.load_state_dict(self.net.state_dict())
            torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, save)
        return evaluate(lambda img: monai_predict(self.net, img, self.ndim), self.data)


def plain_net(checkpoint: str):
    """The network of a segflow checkpoint as plain PyTorch: build_model + its weights."""
    from segflow.inference import load_checkpoint
    from segflow.models import build_model
    from segflow.schema import Config

    ckpt = load_checkpoint(checkpoint)
    cfg = Config.model_validate(ckpt["hyper_parameters"]["config"])
    net = build_model(cfg)
    net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.eval()


def monai_predict(net, image: np.ndarray, ndim: int, fast: bool = False) -> np.ndarray:
    """MONAI's sliding_window_inference, one window at a time, overlap 0.5, Gaussian: the prediction baseline.
    ``fast``: the same with bf16 autocast and channels_last (not a baseline: what the fast paths give MONAI)."""
    import torch
    from monai.inferers import sliding_window_inference

    net.to(memory_format=layout(ndim, fast))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
        x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]
        logits = sliding_window_inference(x, PATCH[ndim], 1, net, overlap=0.5, mode="gaussian")
        return torch.sigmoid(logits.float())[0, 0].numpy()


# ----------------------------------------------------------------------------------------------- children: training
def run_segflow_train(a: dict, on_fit) -> tuple[Any, Path]:
    """Run ``segflow.training.train`` as ``segflow run`` does; ``on_fit(trainer, model, loader)`` replaces or
    wraps ``Trainer.fit`` (the only thing patched, in this child process only)."""
    import lightning
    import lightning.pytorch

    import segflow.training as training
    from segflow.config import build_config
    from segflow.paths import RunPaths

    base = lightning.Trainer

    class BenchTrainer(base):
        def fit(self, model, train_dataloaders=None, *args, **kwargs):
            return on_fit(self, model, train_dataloaders, lambda: base.fit(self, model, train_dataloaders, *args, **kwargs))

    lightning.Trainer = lightning.pytorch.Trainer = BenchTrainer
    if hasattr(training, "Trainer"):
        training.Trainer = BenchTrainer
    cfg = build_config(train_tree(a["ndim"], Path(a["data"]), a.get("precision", "auto"), a.get("workers", -1), a["epochs"]))[0]
    paths = RunPaths(Path(a["out"]), "bench", "1")
    result = training.train(cfg, paths, gpu="cpu")
    return result, paths.checkpoint("last")


def child_segflow_train(a: dict) -> dict:
    """Whole epochs of segflow.training.train, timed per epoch and per wait for data; with ``pair``, one epoch
    of the plain loop after each of segflow's, in this process, so that both see the same machine load."""
    import lightning

    from segflow.inference import Predictor

    ndim = a["ndim"]
    plain = PlainLoop(ndim, Path(a["data"]), a["epochs"]) if a.get("pair") else None
    state: dict[str, Any] = {"epochs": [], "cur": None, "t0": now()}

    class Clock(lightning.Callback):
        def _close(self, t: float) -> None:
            if state["cur"] is not None:
                cur = state["cur"]
                cur["epoch_s"] = t - cur.pop("start") - cur.pop("plain_s", 0.0)
                state["epochs"].append(cur)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            t = now()
            self._close(t)  # an epoch runs from its start to the next one's: checkpoints and log included
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

    def on_fit(trainer, model, loader, fit):
        trainer.callbacks.append(Clock())
        state["setup_s"] = now() - state["t0"]
        state["workers"] = loader.num_workers
        state["precision"] = str(trainer.precision)
        if a.get("channels_last") is not None:  # else as segflow builds it (channels-last)
            model.net.to(memory_format=layout(ndim, a["channels_last"]))
        return fit()

    _, last = run_segflow_train(a, on_fit)
    out = {k: state[k] for k in ("setup_s", "workers", "precision")}
    out["epochs"] = state["epochs"][1:]
    out.update(memory_mib())
    if a.get("evaluate"):
        p = Predictor.from_checkpoint(last, "cpu")
        p.autocast = None
        out["iou"] = evaluate(lambda img: p.predict(img)[..., 0], Path(a["data"]))
    if plain is not None:
        out["plain"] = {"epochs": plain.epochs[1:], "workers": 0, "precision": "32-true", "iou": plain.finish(a.get("save"))}
    return out


def evaluate(predict, data: Path) -> float:
    """Mean foreground IoU over the synthetic test images."""
    import tifffile

    scores = [iou(predict(tifffile.imread(f)) > 0.5, tifffile.imread(data / "test" / "y" / f.name)) for f in sorted((data / "test" / "x").iterdir())]
    return float(np.mean(scores))


def child_step_matrix(a: dict) -> dict:
    """segflow's training step (SegModel.training_step, backward, AdamW) on one real augmented batch from
    train()'s own loader, in each precision x layout, round-robin; and its agreement with fp32."""
    import torch

    warnings.filterwarnings("ignore", message=".*self.log.*")
    ndim, rounds = a["ndim"], a["rounds"]
    variants = {"fp32": (False, False), "fp32+cl": (False, True), "bf16": (True, False), "bf16+cl": (True, True)}
    out: dict[str, Any] = {"variants": {}}

    def on_fit(trainer, model, loader, fit):
        batch = next(iter(loader))
        hparams = dict(model.hparams)

        def fresh(cl: bool):
            torch.manual_seed(0)
            m = type(model)(**hparams)
            m.net.to(memory_format=layout(ndim, cl))
            m.train()
            return m, torch.optim.AdamW(m.parameters(), lr=1e-3)

        def step(m, opt, bf16: bool) -> torch.Tensor:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as Lightning's bf16-mixed does
                loss = m.training_step(batch, 0)
            loss.backward()
            return loss.detach().float()

        # Agreement: the first step of identical models on the same batch (which also warms each path up).
        ref, models = None, {}
        for name, (bf16, cl) in variants.items():
            m, opt = models[name] = fresh(cl)
            loss = float(step(m, opt, bf16))
            grad = torch.cat([p.grad.reshape(-1).float() for p in m.parameters() if p.grad is not None])
            if ref is None:
                ref = (loss, grad)
            out["variants"][name] = {
                "loss": loss,
                "loss_rel": abs(loss - ref[0]) / abs(ref[0]),
                "grad_cosine": float(torch.nn.functional.cosine_similarity(grad, ref[1], dim=0)),
                "finite": bool(torch.isfinite(grad).all()),
                "seconds": [],
            }
        # Speed: the same models, round-robin.
        for r in range(rounds):
            for name, (bf16, _) in list(variants.items())[:: 1 if r % 2 == 0 else -1]:  # alternate the order
                m, opt = models[name]
                start = now()
                step(m, opt, bf16)
                opt.step()
                out["variants"][name]["seconds"].append(now() - start)
        out["patches"] = len(batch["image"])
        return None

    run_segflow_train(a, on_fit)
    return out


def child_data(a: dict) -> dict:
    """Patches per second from the data pipeline alone (no model): train()'s own loader and the plain one,
    epoch by epoch in turn."""
    plain = plain_loader(Path(a["data"]) / "train", a["ndim"])
    state: dict[str, Any] = {"t0": now(), "rates": [], "plain": []}

    def drain(loader) -> float:
        start, n = now(), 0
        for batch in loader:
            n += len(batch["image"] if isinstance(batch, dict) else batch[0])
        return n / (now() - start)

    def on_fit(trainer, model, loader, fit):
        state["setup_s"] = now() - state["t0"]
        state["workers"] = loader.num_workers
        for e in range(a["epochs"]):
            ours, theirs = drain(loader), drain(plain)
            if e:  # the first is a warm-up
                state["rates"].append(ours)
                state["plain"].append(theirs)
        return None

    run_segflow_train(a, on_fit)
    return state


# ----------------------------------------------------------------------------------------------- children: prediction
PREDICT_VARIANTS = {
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


def segflow_predictor(checkpoint: str, ndim: int, variant: str):
    """segflow's Predictor set up for a path: precision (Predictor.autocast), layout, window batch."""
    import torch

    from segflow.inference import Predictor, window_batch

    precision, cl, batch = PREDICT_VARIANTS[variant]
    p = Predictor.from_checkpoint(checkpoint, "cpu")
    if precision is not None:
        p.autocast = torch.bfloat16 if precision == "bf16" else None
    if cl is not None:
        p.net.to(memory_format=layout(ndim, cl))
    if batch == "train2":
        batch = 2 * p.cfg.TRAIN.BATCH_SIZE
    used = batch or window_batch(p.cfg, p.device)
    return p, batch, {"batch": used, "autocast": str(p.autocast).replace("torch.", "")}


def warm_up(fn, image_shape: tuple[int, ...], ndim: int, batch: int) -> None:
    """Run ``fn`` (windows in, scores out) once on every batch shape a pass over ``image_shape`` uses: oneDNN
    builds its kernels for each new input shape on first use, which takes seconds on a CPU. The figures are
    for a warm process (a folder of same-size images pays this once)."""
    import torch

    from segflow.patches import axis_starts

    n = int(np.prod([len(axis_starts(s, p, 0.5)) for s, p in zip(image_shape, PATCH[ndim])]))
    with torch.inference_mode():
        for b in sorted({min(batch, n), n % batch} - {0}):
            fn(torch.zeros((b, 1, *PATCH[ndim])))


def child_predict_sweep(a: dict) -> dict:
    """Every prediction path on one image, round-robin in this process; agreement against segflow fp32."""
    ndim = a["ndim"]
    image, mask = np.load(a["image"]), np.load(a["mask"])
    overlap = [0.5] * ndim
    runs: dict[str, Any] = {}
    monai_net = plain_net(a["checkpoint"])
    runs["monai"] = (lambda img: monai_predict(monai_net, img, ndim), {"batch": 1, "autocast": "None"})
    runs["monai bf16+cl"] = (lambda img: monai_predict(monai_net, img, ndim, fast=True), {"batch": 1, "autocast": "bfloat16"})
    for name in a["variants"]:
        p, batch, info = segflow_predictor(a["checkpoint"], ndim, name)
        runs[name] = ((lambda img, p=p, batch=batch: p.predict(img, overlap=overlap, batch_size=batch)[..., 0]), info)
        warm_up(p.window_fn(), image.shape, ndim, info["batch"])
    out: dict[str, Any] = {"voxels": int(image.size), "variants": {name: dict(info, seconds=[]) for name, (_, info) in runs.items()}}
    probs = {}
    for name in ("monai", "monai bf16+cl"):
        monai_predict(monai_net, image[tuple(slice(0, s) for s in PATCH[ndim])], ndim, fast=name != "monai")
    for r in range(a["rounds"]):
        for name, (fn, info) in list(runs.items())[:: 1 if r % 2 == 0 else -1]:  # alternate the order
            start = now()
            result = fn(image)
            out["variants"][name]["seconds"].append(now() - start)
            if name not in probs:
                probs[name] = result
    ref = probs.get("fp32 b1", probs.get("shipped"))
    for name, p in probs.items():
        out["variants"][name].update(agreement(p, ref), iou=iou(p > 0.5, mask))
    out["monai_vs_segflow"] = agreement(probs["monai"], ref)
    return out


def child_predict(a: dict) -> dict:
    """One prediction path on one (large) image, in its own process: time after a warm-up, and peak RSS."""
    ndim = a["ndim"]
    image = np.load(a["image"])
    if a["variant"] == "monai":
        import segflow.training  # noqa: F401  (the same libraries in memory as in segflow's child)

        net = plain_net(a["checkpoint"])
        run, info = (lambda img: monai_predict(net, img, ndim)), {"batch": 1, "autocast": "None"}
        run(image[tuple(slice(0, s) for s in PATCH[ndim])])  # warm-up: one window is one batch
    else:
        p, batch, info = segflow_predictor(a["checkpoint"], ndim, a["variant"])
        run = lambda img: p.predict(img, overlap=[0.5] * ndim, batch_size=batch)[..., 0]  # noqa: E731
        warm_up(p.window_fn(), image.shape, ndim, info["batch"])
    before = memory_mib()["VmRSS"]
    seconds = []
    for r in range(a["repeats"]):
        start = now()
        probs = run(image)
        seconds.append(now() - start)
    out = dict(info, seconds=seconds, voxels=int(image.size), rss_before=before, iou=iou(probs > 0.5, np.load(a["mask"])))
    np.save(a["out"], probs.astype(np.float32))
    out.update(memory_mib())
    return out


def child_isbi(a: dict) -> dict:
    """ISBI 2012 test IoU (merge patches, no TTA, the checkpoint's own overlap) of each prediction path."""
    import imageio.v3 as iio
    import torch

    from segflow.inference import Predictor, window_batch

    p = Predictor.from_checkpoint(a["checkpoint"], "cpu")
    shipped = str(p.autocast).replace("torch.", "")
    default_batch = window_batch(p.cfg, p.device)
    files = sorted((ISBI_DATA / "test" / "x").iterdir())
    pairs = [(iio.imread(f), iio.imread(ISBI_DATA / "test" / "y" / f.name)) for f in files]
    paths = {"fp32": (None, False, None), "fp32+cl": (None, True, None), "bf16": (torch.bfloat16, False, None), "bf16+cl": (torch.bfloat16, True, None), "bf16+cl b1": (torch.bfloat16, True, 1)}
    out: dict[str, Any] = {"shipped_autocast": shipped, "default_batch": default_batch, "variants": {}}
    probs = {}
    for name, (dtype, cl, batch) in paths.items():
        p.autocast = dtype
        p.net.to(memory_format=layout(2, cl))
        p.predict(pairs[0][0][:512, :512], batch_size=batch)  # warm-up
        start = now()
        probs[name] = [p.predict(x, batch_size=batch)[..., 0] for x, _ in pairs]
        seconds = now() - start
        out["variants"][name] = {"seconds": seconds, "pixels": sum(x.size for x, _ in pairs), "iou": float(np.mean([iou(q > 0.5, y) for q, (_, y) in zip(probs[name], pairs)]))}
    for name, v in out["variants"].items():
        v["max_diff"] = max(float(np.abs(q - r).max()) for q, r in zip(probs[name], probs["fp32"]))
        v["agreement"] = float(np.mean([((q > 0.5) == (r > 0.5)).mean() for q, r in zip(probs[name], probs["fp32"])]))
    return out


CHILDREN = {
    "data": child_data,
    "segflow_train": child_segflow_train,
    "step_matrix": child_step_matrix,
    "predict_sweep": child_predict_sweep,
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
        self.n = 0
        self.loads: list[float] = []

    def child(self, kind: str, **a: Any) -> dict | None:
        """One measurement in a fresh process; None (and a note) when it fails."""
        self.n += 1
        a["kind"] = kind
        if kind in ("segflow_train", "step_matrix", "data"):
            a.setdefault("out", str(self.work / f"run{self.n}"))
        start = now()
        self.loads.append(os.getloadavg()[0])
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(a)], capture_output=True, text=True)
        self.loads.append(os.getloadavg()[0])
        self.log.write(f"### {json.dumps(a)}\n{proc.stdout}\n{proc.stderr}\n")
        self.log.flush()
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("SUITE-RESULT "):
                result = json.loads(line[len("SUITE-RESULT ") :])
                result["wall_s"] = now() - start
                print(f"  {kind} {a.get('name', a.get('impl', ''))}: {result['wall_s']:.0f} s", flush=True)
                return result
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  ! {kind} {a.get('name', '')} failed: {' | '.join(tail)}", flush=True)
        return None

    def section(self, title: str) -> None:
        self.rows.append(("section", title))

    def compare(self, what: str, ours: list[float], base: list[float], fmt: str = "{:.2f}", higher_better: bool = True, paired: bool = True) -> None:
        """A row from two lists of measurements: medians, noise and, when they were taken in turn, the median pair ratio."""
        pairs = (by_pair(ours, base) if higher_better else by_pair(base, ours)) if paired else None
        self.row(what, med(ours), med(base), fmt, higher_better=higher_better, noise=(spread(ours), spread(base)), pairs=pairs)

    def note(self, text: str) -> None:
        self.rows.append(("note", text))

    def row(
        self, what: str, ours: Any, base: Any, fmt: str = "{:.2f}", higher_better: bool = True, noise: tuple = (None, None), ratio: bool = True, pairs: list[float] | None = None
    ) -> None:
        """``pairs``: segflow-over-baseline ratios of measurements taken back to back; the ratio shown is then
        their median (robust to the machine's load changing between pairs), else the ratio of the medians."""

        def show(v: Any) -> str:
            return "-" if v is None else v if isinstance(v, str) else fmt.format(v)

        r = "-"
        if pairs:
            r = f"{med(pairs):.2f}x"
        elif ratio and isinstance(ours, (int, float)) and isinstance(base, (int, float)) and ours and base:
            r = f"{(ours / base if higher_better else base / ours):.2f}x"
        n = "/".join("-" if v is None else f"{100 * v:.0f}%" for v in noise)
        self.rows.append(("row", what, show(ours), show(base), r, n))

    # ------------------------------------------------------------------ data
    def make_data(self) -> None:
        from segflow.synthetic import make_dataset, synthetic_pair

        for ndim in (2, 3):
            n, shape = self.sizes["train"][ndim]["images"]
            make_dataset(self.work / f"data{ndim}d", ndim=ndim, n_train=n, n_test=2, shape=shape, seed=ndim)
        # Prediction images: mosaics of training-sized synthetic images, so objects have the training scale.
        rng = np.random.default_rng(7)
        for ndim in (2, 3):
            tile = self.sizes["train"][ndim]["images"][1]
            for kind, key in (("sweep", "sweep"), ("predict", "shape")):
                shape = self.sizes["predict"][ndim][key]
                image, mask = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
                for corner in np.ndindex(*[-(-s // t) for s, t in zip(shape, tile)]):
                    region = tuple(slice(c * t, min((c + 1) * t, s)) for c, t, s in zip(corner, tile, shape))
                    x, y = synthetic_pair(tile, rng)
                    crop = tuple(slice(0, r.stop - r.start) for r in region)
                    image[region], mask[region] = x[crop], y[crop]
                np.save(self.work / f"{kind}{ndim}d.npy", image)
                np.save(self.work / f"{kind}{ndim}d_mask.npy", mask)

    def data_section(self) -> None:
        epochs = self.sizes["data_epochs"]
        for ndim in (2, 3):
            common = dict(ndim=ndim, data=str(self.work / f"data{ndim}d"), epochs=epochs)
            runs = {"shipped": self.child("data", name="segflow + plain", **common)}
            if self.mode == "full":
                runs["w1"] = self.child("data", name="segflow 1 worker + plain", workers=1, **common)
            self.results[f"data{ndim}d"] = runs
            self.section(
                f"data pipeline alone, {ndim}D {'x'.join(map(str, PATCH[ndim]))} patches, disk to tensor with flips + rotation, median of {epochs - 1} epochs, "
                "in turn with the baseline: TIFF read per patch, MONAI's transforms, default DataLoader"
            )
            for key, label in (("shipped", "as shipped"), ("w1", "with 1 worker")):
                r = runs.get(key)
                if r:
                    self.row(f"patches/s, segflow train()'s loader {label} ({r['workers']} worker(s))", med(r["rates"]), med(r["plain"]), "{:.1f}", noise=(spread(r["rates"]), spread(r["plain"])), pairs=by_pair(r["rates"], r["plain"]))

    # ------------------------------------------------------------------ training
    def train_section(self, ndim: int) -> None:
        conf = self.sizes["train"][ndim]
        data = str(self.work / f"data{ndim}d")
        epochs = conf["epochs"]
        common = dict(ndim=ndim, data=data, epochs=epochs)
        ckpt = str(self.work / f"model{ndim}d.ckpt")
        matrix = self.child("step_matrix", name="step sweep", rounds=conf["step_rounds"], **common) if conf["step_rounds"] else None
        # The fastest step that agrees with fp32: what the shipped defaults should be.
        fast = None
        if matrix:
            ok = {k: med(v["seconds"]) for k, v in matrix["variants"].items() if v["finite"] and v["loss_rel"] <= LOSS_RTOL and v["grad_cosine"] >= GRAD_COSINE_MIN}
            fast = min(ok, key=ok.get) if ok else "fp32"
        plans = {
            "shipped": dict(name="as shipped + plain loop", evaluate=True, pair=True),
            "w1": dict(name="as shipped but 1 worker + plain loop", workers=1, pair=True),
            "v010": dict(name="v0.1.0 defaults + plain loop", precision="32", channels_last=False, workers=1, pair=True, evaluate=True),
        }
        runs = {}
        for key in conf["runs"]:
            # The first paired run also saves the plain loop's weights for the prediction sections.
            save = {"save": ckpt} if plans[key].get("pair") and not any(r and "plain" in r for r in runs.values()) else {}
            runs[key] = self.child("segflow_train", **plans[key], **save, **common)
        self.results[f"train{ndim}d"] = {"matrix": matrix, "fast_name": fast, **runs}
        some = next((r for r in runs.values() if r and r["epochs"]), None)
        patches = some["epochs"][0]["patches"] if some else 0
        self.section(
            f"training, {ndim}D U-Net 16-256, {BATCH[ndim]} x {'x'.join(map(str, PATCH[ndim]))} patches a step, {patches} patches an epoch, "
            f"flips + rotation{' + z flips' if ndim == 3 else ''}; baseline: plain PyTorch loop, default DataLoader, fp32"
        )
        if matrix:
            rounds = conf["step_rounds"]
            self.note(f"the step alone (SegModel.training_step + backward + AdamW on one augmented batch), {'median of ' + str(rounds) if rounds > 1 else 'one step'} each, round-robin; baseline: segflow's fp32 step")
            ref = matrix["variants"]["fp32"]["seconds"]
            for name, v in matrix["variants"].items():
                if name == "fp32":
                    continue
                self.row(
                    f"patches/s, step in {name} (vs fp32: loss {100 * v['loss_rel']:.2f}% off, gradient cosine {v['grad_cosine']:.4f}{'' if v['finite'] else ', NOT FINITE'})",
                    matrix["patches"] / med(v["seconds"]),
                    matrix["patches"] / med(ref),
                    "{:.2f}",
                    noise=(spread(v["seconds"]), spread(ref)),
                    pairs=by_pair(ref, v["seconds"]),
                )
        self.note(
            f"whole epochs of segflow.training.train (data loading and augmentation included), median of {epochs - 1} after a warm-up one, "
            "each segflow epoch followed by one of the plain loop in the same process (the ratio: median of these epoch pairs)"
        )
        labels = {"shipped": "segflow as shipped", "w1": "segflow as shipped but 1 worker", "v010": "segflow v0.1.0 defaults (fp32, contiguous, 1 worker)"}
        for key in ("shipped", "w1", "v010"):
            r = runs.get(key)
            if not r:
                continue
            self.compare(f"patches/s, {labels[key]} ({r['precision']}, {r['workers']} worker(s))", rates(r, "steps_s"), rates(r["plain"], "steps_s"))
            self.compare(f"  s/epoch, {labels[key]}, with train()'s checkpoints and log", *([e["epoch_s"] for e in x["epochs"]] for x in (r, r["plain"])), higher_better=False)
        r0, r1 = runs.get("shipped"), runs.get("w1")
        if r0 and r1:
            self.note("starvation: the shipped 0 workers against 1 worker, each run as a multiple of its own plain epochs; and the time steps wait for their batch")
            zero = med(by_pair(rates(r0, "steps_s"), rates(r0["plain"], "steps_s")))
            one = med(by_pair(rates(r1, "steps_s"), rates(r1["plain"], "steps_s")))
            self.row("x plain loop, segflow as shipped: 0 workers vs 1 worker (baseline column)", zero, one, "{:.2f}")
        for run in (r0, r1):
            if run:
                w, bw = [e["wait"] for e in run["epochs"]], [e["wait"] for e in run["plain"]["epochs"]]
                share = 100 * med(w) / med([e["steps_s"] for e in run["epochs"]])
                what = f"  data wait s/epoch, segflow as shipped, {run['workers']} worker(s): {share:.0f}% of its epoch (baseline: the plain loop's, 0 workers)"
                self.compare(what, w, bw, higher_better=False, paired=False)
        for key in ("shipped", "v010"):
            r = runs.get(key)
            if r and "iou" in r:
                self.row(f"synthetic test IoU after {epochs} epochs, {labels[key]} vs the plain loop (indicative: few steps)", r["iou"], r["plain"]["iou"], "{:.3f}", ratio=False)
        if not Path(ckpt).is_file():
            self.untrained_checkpoint(ndim, ckpt)

    def untrained_checkpoint(self, ndim: int, path: str) -> None:
        """When the plain run was skipped or failed: a checkpoint of the untrained network (timing only)."""
        import torch

        from segflow.config import build_config
        from segflow.training import SegModel

        cfg = build_config(train_tree(ndim, self.work / f"data{ndim}d"))[0]
        torch.manual_seed(0)
        model = SegModel(cfg.model_dump(mode="json"))
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)

    # ------------------------------------------------------------------ prediction
    def predict_section(self, ndim: int) -> None:
        conf = self.sizes["predict"][ndim]
        ckpt = self.work / f"model{ndim}d.ckpt"
        if not ckpt.is_file():
            self.untrained_checkpoint(ndim, str(ckpt))
        unit = "Mpx/s" if ndim == 2 else "Mvox/s"
        variants = list(PREDICT_VARIANTS)
        rounds = conf["rounds"]
        sweep = self.child(
            "predict_sweep", name="sweep", ndim=ndim, image=str(self.work / f"sweep{ndim}d.npy"), mask=str(self.work / f"sweep{ndim}d_mask.npy"), checkpoint=str(ckpt), rounds=rounds, variants=variants
        )
        self.section(
            f"prediction, {ndim}D, windows {'x'.join(map(str, PATCH[ndim]))}, overlap 0.5, Gaussian blend, the plain loop's trained weights; "
            "baseline: MONAI sliding_window_inference, sw_batch_size=1, fp32, no_grad"
        )
        best = "shipped"
        if sweep:
            v = sweep["variants"]
            base = v["monai"]["seconds"]
            self.note(
                f"every path on a {'x'.join(map(str, conf['sweep']))} image, round-robin in one process, {'median of ' + str(rounds) if rounds > 1 else 'one pass'} each; "
                "|dp| and labels against segflow fp32 (batch 1)"
            )
            for name, r in v.items():
                if name == "monai":
                    continue
                what = "MONAI itself + bf16 autocast + channels_last (not segflow: the fast paths in any loop)" if name == "monai bf16+cl" else f"segflow {name} (autocast {r['autocast']}, batch {r['batch']})"
                self.row(
                    f"{unit}, {what}: max |dp| {r['max_diff']:.4f}, labels agree {100 * r['agreement']:.2f}%",
                    sweep["voxels"] / med(r["seconds"]) / 1e6,
                    sweep["voxels"] / med(base) / 1e6,
                    "{:.3f}",
                    noise=(spread(r["seconds"]), spread(base)),
                    pairs=by_pair(base, r["seconds"]),
                )
            m = sweep["monai_vs_segflow"]
            self.row(
                f"  synthetic test IoU, segflow fp32 vs MONAI on the same weights (max |dp| {m['max_diff']:.4f}, labels agree {100 * m['agreement']:.2f}%)",
                v.get("fp32 b1", v["shipped"])["iou"],
                v["monai"]["iou"],
                "{:.4f}",
                ratio=False,
            )
            ref_iou = v.get("fp32 b1", v["shipped"])["iou"]
            ok = {k: med(r["seconds"]) for k, r in v.items() if not k.startswith("monai") and r["agreement"] >= LABEL_AGREEMENT_MIN and abs(r["iou"] - ref_iou) <= ISBI_IOU_TOLERANCE}
            best = min(ok, key=ok.get) if ok else "shipped"
        self.results[f"predict{ndim}d"] = {"sweep": sweep, "best": best}
        # The issue's sizes, one process per path (its own peak RSS), the paths in turn pass by pass.
        image, mask = str(self.work / f"predict{ndim}d.npy"), str(self.work / f"predict{ndim}d_mask.npy")
        passes = {best if k == "best" else k: n for k, n in conf["passes"].items()}
        e2e: dict[str, Any] = {name: None for name in passes}
        for i in range(max(passes.values())):
            for name, n in passes.items():
                if i >= n:
                    continue
                r = self.child("predict", name=name, ndim=ndim, image=image, mask=mask, checkpoint=str(ckpt), repeats=1, variant=name, out=str(self.work / f"p{ndim}_{name.replace(' ', '_')}.npy"))
                if r and e2e[name]:
                    e2e[name]["seconds"] += r["seconds"]
                    e2e[name]["VmHWM"] = max(e2e[name]["VmHWM"], r["VmHWM"])
                elif r:
                    e2e[name] = r
        self.results[f"predict{ndim}d"]["e2e"] = e2e
        base = e2e.get("monai")
        self.note(f"a {'x'.join(map(str, conf['shape']))} uint8 {'image' if ndim == 2 else 'stack'}, each path in its own process (median of its passes)")
        if base:
            self.row("  (baseline) MONAI peak RSS MiB / growth while predicting MiB", base["VmHWM"], base["VmHWM"] - base["rss_before"], "{:.0f}", ratio=False)
        for name, r in e2e.items():
            if name == "monai" or not (r and base):
                continue
            label = f"segflow {name} (autocast {r['autocast']}, batch {r['batch']})" + (", the fastest path within tolerance" if name == best else "") + (" (fp32, contiguous, 2 x train batch)" if name == "v0.1.0" else "")
            self.row(
                f"{unit}, {label}, {len(r['seconds'])} vs {len(base['seconds'])} pass(es)",
                r["voxels"] / med(r["seconds"]) / 1e6,
                base["voxels"] / med(base["seconds"]) / 1e6,
                "{:.3f}",
                noise=(spread(r["seconds"]), spread(base["seconds"])),
                pairs=by_pair(base["seconds"], r["seconds"]),
            )
            self.row(f"  peak RSS MiB, segflow {name}", r["VmHWM"], base["VmHWM"], "{:.0f}", higher_better=False)
            self.row(f"  RSS growth while predicting MiB, segflow {name}", r["VmHWM"] - r["rss_before"], base["VmHWM"] - base["rss_before"], "{:.0f}", higher_better=False)
            self.row(f"  synthetic test IoU, segflow {name}", r["iou"], base["iou"], "{:.4f}", ratio=False)


    # ------------------------------------------------------------------ ISBI
    def isbi_section(self) -> None:
        ckpt = Path(self.args.isbi_checkpoint)
        self.section("ISBI 2012 test set, 10 x 512x512, merge patches (the checkpoint's overlap), no TTA; baseline column: fp32")
        if not ckpt.is_file() or not ISBI_DATA.is_dir():
            self.note(f"skipped: no checkpoint at {ckpt}; `python bench/isbi.py` trains one, or give --isbi-checkpoint")
            return
        r = self.child("isbi", checkpoint=str(ckpt))
        self.results["isbi"] = r
        if not r:
            return
        ref = r["variants"]["fp32"]
        self.note(f"checkpoint {ckpt}; Predictor's own choice for it: autocast {r['shipped_autocast']}, batch {r['default_batch']}")
        for name, v in r["variants"].items():
            self.row(
                f"foreground IoU, {name}: max |dp| {v['max_diff']:.4f}, labels agree {100 * v['agreement']:.3f}%, {v['pixels'] / v['seconds'] / 1e6:.2f} vs {ref['pixels'] / ref['seconds'] / 1e6:.2f} Mpx/s",
                v["iou"],
                ref["iou"],
                "{:.4f}",
                ratio=False,
            )

    # ------------------------------------------------------------------ report
    def recommendations(self) -> list[str]:
        out = []
        for ndim in (2, 3):
            t = self.results.get(f"train{ndim}d")
            if t and t.get("shipped"):
                x = {k: med(by_pair(rates(t[k], "steps_s"), rates(t[k]["plain"], "steps_s"))) for k in ("shipped", "w1", "v010") if t.get(k)}
                line = f"{ndim}D training: segflow as shipped ({t['shipped']['precision']}, {t['shipped']['workers']} worker(s)) is {x['shipped']:.2f}x the plain loop"
                if t.get("fast_name"):
                    line += f"; the fastest step within tolerance is {t['fast_name']}"
                if "w1" in x:
                    line += f"; with 1 worker {x['w1']:.2f}x"
                if "v010" in x:
                    line += f"; v0.1.0's defaults {x['v010']:.2f}x"
                out.append(line)
        for ndim in (2, 3):
            pr = self.results.get(f"predict{ndim}d")
            if not pr or not pr.get("sweep"):
                continue
            v = pr["sweep"]["variants"]
            best = pr["best"]

            def x(a: str, b: str) -> float:
                return med(by_pair(v[b]["seconds"], v[a]["seconds"]))

            out.append(
                f"{ndim}D prediction: fastest path within tolerance (labels agree >= {100 * LABEL_AGREEMENT_MIN:.0f}% with fp32, IoU within {ISBI_IOU_TOLERANCE}) is {best}: "
                f"{x(best, 'monai'):.2f}x MONAI, {x(best, 'shipped'):.2f}x segflow as shipped ({x('shipped', 'monai'):.2f}x MONAI)"
            )
            e2e = pr.get("e2e") or {}
            if e2e.get("shipped") and e2e.get(best) and best != "shipped":
                grow = {k: e2e[k]["VmHWM"] - e2e[k]["rss_before"] for k in ("shipped", best)}
                out.append(f"{ndim}D prediction memory: RSS growth while predicting {grow['shipped']:.0f} MiB as shipped (batch {e2e['shipped']['batch']}), {grow[best]:.0f} MiB for {best}")
        isbi = self.results.get("isbi")
        if isbi:
            v = isbi["variants"]
            within = [k for k in v if abs(v[k]["iou"] - v["fp32"]["iou"]) <= ISBI_IOU_TOLERANCE]
            out.append(f"ISBI: prediction paths with test IoU within {ISBI_IOU_TOLERANCE} of fp32: {', '.join(within)}")
        return out

    def table(self, header: str) -> str:
        width = max([len(r[1]) for r in self.rows if r[0] == "row"] + [80])
        lines = [
            header,
            "ratio: segflow over baseline, > 1 = segflow better (faster, smaller); where the two were measured in turn, the median of the "
            "back-to-back pairs. noise s/b: (max - min) / median of the segflow / baseline figure.",
            f"{'what':<{width}}  {'segflow':>9}  {'baseline':>9}  {'ratio':>7}  {'noise s/b':>9}",
        ]
        for r in self.rows:
            if r[0] == "section":
                lines.append(f"== {r[1]}")
            elif r[0] == "note":
                lines.append(f"-- {r[1]}")
            else:
                _, what, ours, base, ratio, noise = r
                lines.append(f"{what:<{width}}  {ours:>9}  {base:>9}  {ratio:>7}  {noise:>9}")
        return "\n".join(lines)


def by_pair(ours: list[float], base: list[float]) -> list[float]:
    """Ratios of measurements taken back to back (pass i of one path against pass i of the other)."""
    return [o / b for o, b in zip(ours, base) if b]


def rates(run: dict, key: str) -> list[float]:
    return [e["patches"] / e[key] for e in run["epochs"]]


def machine() -> str:
    import torch

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (StopIteration, OSError):
        model = platform.processor() or "unknown CPU"
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() if hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported") else "?"
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads, oneDNN bf16: {bf16})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats: a smoke run")
    ap.add_argument("--only", default="", help=f"comma list of sections: {','.join(SECTIONS)}")
    ap.add_argument("--isbi-checkpoint", default=str(ISBI_CHECKPOINT), help="a trained ISBI checkpoint (bench/isbi.py writes one)")
    ap.add_argument("--keep", default="", help="work in this folder and keep it (data, outputs, children.log)")
    ap.add_argument("--json", default="", help="also write every measurement to this JSON file")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        a = json.loads(args.child)
        result = CHILDREN[a.pop("kind")](a)
        print("SUITE-RESULT " + json.dumps(result, default=float))
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
    steps = {
        "data": suite.data_section,
        "train2d": lambda: suite.train_section(2),
        "train3d": lambda: suite.train_section(3),
        "predict2d": lambda: suite.predict_section(2),
        "predict3d": lambda: suite.predict_section(3),
        "isbi": suite.isbi_section,
    }
    for name, step in steps.items():
        if name in suite.sections:
            t = now()
            print(f"[{name}]", flush=True)
            suite.loads = []
            step()
            if suite.loads:
                suite.note(f"machine load (1-minute load average, {os.cpu_count()} cores) during this section: {min(suite.loads):.1f} to {max(suite.loads):.1f}")
            print(f"[{name}] {now() - t:.0f} s", flush=True)
    print("\n" + suite.table(header))
    recs = suite.recommendations()
    if recs:
        print("\nMeasured, for the defaults:\n" + "\n".join(f"- {r}" for r in recs))
    print(f"\nwall time {now() - start:.0f} s" + ("" if tmp else f"; data, outputs and children.log in {work}"))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": suite.results, "rows": suite.rows, "recommendations": recs}, indent=1, default=float))
    suite.log.close()
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
