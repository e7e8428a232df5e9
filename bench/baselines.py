"""The baselines segflow is measured against, in the same run on the same machine.

- Training: ``PlainLoop``, a plain PyTorch loop over a default DataLoader (``PlainPatches``: the TIFF read
  per patch, MONAI's stock transforms) with the same MONAI network, loss, AdamW and schedule, in fp32.
- Prediction: MONAI's ``sliding_window_inference`` on the network of a segflow checkpoint (``plain_net``),
  set up by a ``SlidingWindow``: ``PLAIN_MONAI`` (one window at a time, fp32, ``no_grad``: what a script
  does), ``MONAI_FAST_PATHS`` (bf16 autocast + channels-last, one window: not a baseline, what segflow's fast
  paths give any loop) and ``tuned_monai`` (bf16 autocast where native, channels-last, batched windows under
  ``inference_mode``: what a performance engineer would write, the real bar).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness import layout, now
from bench.workload import BATCH, PATCH, evaluate, train_tree


class PlainPatches:
    """What a plain PyTorch script does: a grid of patches, each read from its TIFF on every access,
    divided by 255 and augmented with MONAI's stock dictionary transforms. Items: (1, *patch) float32
    image and mask tensors."""

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
    """A default DataLoader (0 workers, shuffled) of ``PlainPatches``, BiaPy's batch size."""
    import torch

    return torch.utils.data.DataLoader(PlainPatches(folder, ndim), batch_size=BATCH[ndim], shuffle=True)


class PlainLoop:
    """The training baseline: a plain PyTorch loop over a default DataLoader (0 workers), with the same MONAI
    network (``segflow.models.build_model``, in PyTorch's default layout), loss (binary cross-entropy), AdamW
    and one-cycle schedule."""

    def __init__(self, ndim: int, data: Path, epochs: int) -> None:
        import torch

        from segflow.config.loader import build_config
        from segflow.models.networks import build_model

        self.ndim, self.data = ndim, data
        self.cfg = build_config(train_tree(ndim, data, epochs=epochs))[0]
        with torch.random.fork_rng():  # leave the random state of a segflow run in the same process alone
            torch.manual_seed(0)
            self.net = build_model(self.cfg).to(
                memory_format=torch.contiguous_format
            )  # plain: PyTorch's default layout
        self.loader = plain_loader(data / "train", ndim)
        self.optimiser = torch.optim.AdamW(
            self.net.parameters(), lr=self.cfg.TRAIN.LR, weight_decay=self.cfg.TRAIN.W_DECAY
        )
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimiser, max_lr=self.cfg.TRAIN.LR, total_steps=epochs * len(self.loader)
        )
        self.criterion = torch.nn.BCEWithLogitsLoss()
        self.epochs: list[dict] = []

    def epoch(self) -> dict:
        """One epoch: its seconds (``steps_s`` = ``epoch_s``: the loop has no checkpoints or log), its wait for
        data and its patches."""
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

        from segflow.training.module import SegModel

        self.net.eval()
        if save:
            model = SegModel(self.cfg.model_dump(mode="json"))
            model.net.load_state_dict(self.net.state_dict())
            torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, save)
        return evaluate(lambda img: monai_predict(self.net, img, self.ndim, PLAIN_MONAI), self.data)


def plain_net(checkpoint: str):
    """The network of a segflow checkpoint as plain PyTorch (build_model + its weights, in eval mode) and its config."""
    from segflow.checkpoint import load_checkpoint
    from segflow.config.schema import Config
    from segflow.models.networks import build_model

    ckpt = load_checkpoint(checkpoint)
    cfg = Config.model_validate(ckpt["hyper_parameters"]["config"])
    net = build_model(cfg)
    net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.eval(), cfg


@dataclass(frozen=True)
class SlidingWindow:
    """How MONAI's ``sliding_window_inference`` is run: precision, layout, windows per batch, grad mode."""

    bf16: bool = False
    channels_last: bool = False
    sw_batch_size: int = 1
    inference_mode: bool = False  # else no_grad


PLAIN_MONAI = SlidingWindow()
MONAI_FAST_PATHS = SlidingWindow(bf16=True, channels_last=True)


def tuned_monai(sw_batch_size: int) -> SlidingWindow:
    """The tuned baseline: bf16 autocast where the CPU computes bf16 natively (elsewhere emulated bf16 is
    slower than fp32, and a performance engineer would not use it), channels-last, ``sw_batch_size`` windows
    a batch (segflow's own window batch, for a like-for-like batch), under ``inference_mode``."""
    from segflow.runtime import cpu_bf16_native

    return SlidingWindow(bf16=cpu_bf16_native(), channels_last=True, sw_batch_size=sw_batch_size, inference_mode=True)


def monai_predict(net, image: np.ndarray, ndim: int, how: SlidingWindow) -> np.ndarray:
    """Foreground probabilities of a uint8 ``(y, x)`` / ``(z, y, x)`` image by MONAI's sliding_window_inference,
    windows of the training patch, overlap 0.5, Gaussian blending, set up as ``how`` says."""
    import torch
    from monai.inferers import sliding_window_inference

    net.to(memory_format=layout(ndim, how.channels_last))
    grad = torch.inference_mode() if how.inference_mode else torch.no_grad()
    with grad, torch.autocast("cpu", dtype=torch.bfloat16, enabled=how.bf16):
        x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]
        logits = sliding_window_inference(x, PATCH[ndim], how.sw_batch_size, net, overlap=0.5, mode="gaussian")
        return torch.sigmoid(logits.float())[0, 0].numpy()
