"""The MODEL section: which network, its sizes, and where its weights start from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from segflow.config.bmz import BmzConfig
from segflow.config.section import Section


class ModelConfig(Section):
    ARCHITECTURE: Literal["unet", "resunet", "attention_unet", "segresnet"] = Field(
        "unet",
        description="'unet' (MONAI DynUNet: nnU-Net's U-Net, two convolutions per level, strided downsampling), "
        "'resunet' (MONAI DynUNet with residual blocks), 'attention_unet' (MONAI AttentionUnet) or 'segresnet' (MONAI "
        "SegResNet: residual blocks, channels doubling from FEATURE_MAPS[0], weight-free upsampling; 'none' "
        "normalisation is one group norm; no Z_DOWN).",
    )
    FEATURE_MAPS: list[int] = Field([16, 32, 64, 128, 256], min_length=3, description="Channels per level, from top to bottom (at least 3 levels); each level halves the resolution.")
    DROPOUT_VALUES: list[float] = Field(
        [0.0, 0.0, 0.0, 0.0, 0.0],
        description="Dropout per level (BiaPy). MONAI's networks take one rate, so segflow uses the largest value for every level.",
    )
    NORMALIZATION: Literal["bn", "in", "none"] = Field(
        "bn",
        description="Normalisation layers of unet and resunet: batch ('bn'), instance ('in') or 'none' (no "
        "normalisation layers). attention_unet always uses batch normalisation (MONAI's AttentionUnet has no other).",
    )
    KERNEL_SIZE: int = Field(3, description="Convolution kernel size.")
    N_CLASSES: int = Field(2, ge=2, description="Number of classes; 2 = binary (one sigmoid output), more = softmax over N_CLASSES outputs.")
    Z_DOWN: list[int] = Field([], description="3D: per level, 1 to keep z (no pooling along z), 2 to halve it; empty = halve at every level.")
    LOAD_CHECKPOINT: bool = Field(False, description="Start from a checkpoint: PATHS.CHECKPOINT_FILE, or this job's best checkpoint. Required to test without training.")
    LOAD_CHECKPOINT_EPOCH: Literal["best_on_val", "last_on_train"] = Field("best_on_val", description="Which of the job's checkpoints LOAD_CHECKPOINT and the test phase use.")
    SKIP_UNMATCHED_LAYERS: bool = Field(False, description="segflow key. (Later BiaPy versions have it.) With LOAD_CHECKPOINT: load only the checkpoint's tensors whose name and shape "
        "this network has, the others starting anew (a wider or deeper network from a smaller one's matching layers, the Crick's "
        "transfer_weights); the run says how many. Off: the checkpoint must be of this network (another N_CLASSES is fine).")
    BMZ: BmzConfig = BmzConfig()

    @model_validator(mode="after")
    def _sizes(self) -> ModelConfig:
        if any(f <= 0 for f in self.FEATURE_MAPS):
            raise ValueError(f"FEATURE_MAPS {self.FEATURE_MAPS}: every value must be positive")
        if any(not 0 <= d < 1 for d in self.DROPOUT_VALUES):
            raise ValueError(f"DROPOUT_VALUES {self.DROPOUT_VALUES}: every value must be in [0, 1)")
        if self.KERNEL_SIZE < 1 or self.KERNEL_SIZE % 2 == 0:
            raise ValueError(f"KERNEL_SIZE {self.KERNEL_SIZE}: must be a positive odd number")
        return self
