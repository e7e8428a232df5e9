"""The LightningModule: the network, its loss, IoU metrics, optimiser and learning-rate schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torchmetrics
from monai.optimizers import WarmupCosineSchedule

from segflow import __version__
from segflow.config.schema import Config
from segflow.encodings import get_encoding
from segflow.errors import SegflowError
from segflow.models.losses import SegmentationLoss
from segflow.models.networks import build_model


class SegModel(L.LightningModule):
    """The network, its loss and IoU metrics; the checkpoint carries the full config and normaliser."""

    def __init__(self, config: dict, class_counts: list[int] | None = None, normalizer: dict | None = None, n_valid: int | None = None) -> None:
        super().__init__()
        # Stored in every checkpoint: enough to rebuild the network and normalise new images.
        self.save_hyperparameters()
        self.cfg = Config.model_validate(config)
        self.encoding = get_encoding(self.cfg)
        self.net = build_model(self.cfg)
        self.loss_fn = SegmentationLoss(self.cfg, None if class_counts is None else np.asarray(class_counts), n_valid)
        self.train_iou, self.val_iou = self._iou_metric(), self._iou_metric()
        # Losses averaged over every patch of the epoch, summed over the ranks of a distributed run: exact where
        # the ranks' shares differ in size (validation), unlike a mean of the ranks' means.
        self.train_loss, self.val_loss = torchmetrics.MeanMetric(), torchmetrics.MeanMetric()
        # What ReduceLROnPlateau watches; train() sets "val_loss" when there is validation. Not decided in
        # configure_optimizers: Lightning calls it before the validation loader exists.
        self.monitor = "loss"

    def _iou_metric(self) -> torchmetrics.Metric | None:
        """IoU as the encoding defines it: per class, per bit, or of the predicted foreground (distance)."""
        return self.encoding.iou_metric()

    def _metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoding.metric_inputs(logits, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw network outputs for a batch ``(B, C, ...)``."""
        return self.net(x)

    def _step(self, batch: dict, metric: torchmetrics.Metric | None, prefix: str) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        logits = self(x)
        loss = self.loss_fn(logits, y)
        mean = self.val_loss if prefix else self.train_loss
        mean.update(loss.detach().float(), weight=x.shape[0])
        self.log(f"{prefix}loss", mean, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        if metric is not None:
            with torch.no_grad():
                metric.update(*self._metric_inputs(logits.float(), y))
            self.log(f"{prefix}IoU", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One optimisation step."""
        loss = self._step(batch, self.train_iou, "")
        if not torch.isfinite(loss):
            raise SegflowError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}; lower TRAIN.LR or check the images for extreme values"
            )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Validation loss and IoU on one batch of the fixed validation patch grid."""
        self._step(batch, self.val_iou, "val_")

    def configure_optimizers(self) -> dict:
        """``TRAIN.OPTIMIZER`` and ``TRAIN.LR_SCHEDULER``."""
        t = self.cfg.TRAIN
        params = self.net.parameters()
        if t.OPTIMIZER == "SGD":
            opt = torch.optim.SGD(params, lr=t.LR, momentum=0.9, weight_decay=t.W_DECAY)
        elif t.OPTIMIZER == "ADAM":
            opt = torch.optim.Adam(params, lr=t.LR, betas=t.OPT_BETAS, weight_decay=t.W_DECAY)
        else:
            opt = torch.optim.AdamW(params, lr=t.LR, betas=t.OPT_BETAS, weight_decay=t.W_DECAY)
        s = t.LR_SCHEDULER
        if not s.NAME:
            return {"optimizer": opt}
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        min_lr = s.MIN_LR if s.MIN_LR >= 0 else t.LR / 100
        if s.NAME == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.LR, total_steps=steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if s.NAME == "warmupcosine":
            warm_epochs = s.WARMUP_COSINE_DECAY_EPOCHS if s.WARMUP_COSINE_DECAY_EPOCHS >= 0 else max(1, t.EPOCHS // 10)
            warm = min(steps - 1, int(steps * warm_epochs / t.EPOCHS))
            sched = WarmupCosineSchedule(opt, warmup_steps=warm, t_total=steps, end_lr=min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        patience = s.REDUCEONPLATEAU_PATIENCE if s.REDUCEONPLATEAU_PATIENCE >= 0 else max(1, t.PATIENCE // 2) if t.PATIENCE > 0 else 10
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=s.REDUCEONPLATEAU_FACTOR, patience=patience, min_lr=min_lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "monitor": self.monitor}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step a scheduler when Lightning says, except ReduceLROnPlateau: that one steps in on_train_epoch_end."""
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            super().lr_scheduler_step(scheduler, metric)

    def on_train_epoch_end(self) -> None:
        """Step ReduceLROnPlateau on this epoch's monitored loss.

        Lightning would step it after the epoch's checkpoints are written, and skips that step for the epoch
        a run resumes after; stepped here (after EpochLog logged the epoch's lr, before the checkpoints),
        each checkpoint holds the state after its epoch and a resumed run continues exactly.
        """
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step(float(self.trainer.callback_metrics[self.monitor]))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Mark the file as segflow's, with the version that wrote it."""
        checkpoint["segflow_version"] = __version__
