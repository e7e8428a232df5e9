"""The MODEL section: which network, its sizes, and where its weights start from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from segflow.config.bmz import BmzConfig
from segflow.config.section import Section


class ModelConfig(Section):
    ARCHITECTURE: Literal["unet", "resunet", "attention_unet", "segresnet", "seunet", "multiresunet", "resunet++", "unetr", "swinunetr", "flexible_unet"] = Field(
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
    LOAD_CHECKPOINT_ONLY_WEIGHTS: bool = Field(True, description="With LOAD_CHECKPOINT and training: start from the checkpoint's "
        "weights alone (true), or also from its optimizer's state (false: Adam's moments, SGD's momentum, for the tensors this "
        "network shares with the checkpoint's; TRAIN.OPTIMIZER must be the checkpoint's). The learning rate and schedule are "
        "this config's, and the epochs count from 0 (to continue a run itself, run it again: it resumes).")
    LOAD_CHECKPOINT_EPOCH: Literal["best_on_val", "last_on_train"] = Field("best_on_val", description="Which of the job's checkpoints LOAD_CHECKPOINT and the test phase use.")
    SKIP_UNMATCHED_LAYERS: bool = Field(False, description="segflow key. (Later BiaPy versions have it.) With LOAD_CHECKPOINT: load only the checkpoint's tensors whose name and shape "
        "this network has, the others starting anew (a wider or deeper network from a smaller one's matching layers, the Crick's "
        "transfer_weights); the run says how many. Off: the checkpoint must be of this network (another N_CLASSES is fine).")
    SOURCE: Literal["biapy", "bmz"] = Field("biapy", description="Where the network comes from: 'biapy' (built from the keys "
        "of this section) or 'bmz' (the BioImage Model Zoo package MODEL.BMZ.SOURCE_MODEL_ID, which segflow exported: its network, "
        "patch size and normalisation are taken for every such key this config does not set, and its weights as with "
        "MODEL.LOAD_CHECKPOINT: tested and predicted with as it is, or fine-tuned when TRAIN.ENABLE). BiaPy's 'torchvision' "
        "is not available (torchvision does not work with segflow's torch).")
    BMZ: BmzConfig = BmzConfig()

    @field_validator("SOURCE", mode="before")
    @classmethod
    def _source_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value  # BiaPy files write 'BiaPy' too

    @model_validator(mode="after")
    def _sizes(self) -> ModelConfig:
        if any(f <= 0 for f in self.FEATURE_MAPS):
            raise ValueError(f"FEATURE_MAPS {self.FEATURE_MAPS}: every value must be positive")
        if any(not 0 <= d < 1 for d in self.DROPOUT_VALUES):
            raise ValueError(f"DROPOUT_VALUES {self.DROPOUT_VALUES}: every value must be in [0, 1)")
        if self.KERNEL_SIZE < 1 or self.KERNEL_SIZE % 2 == 0:
            raise ValueError(f"KERNEL_SIZE {self.KERNEL_SIZE}: must be a positive odd number")
        return self


# MODEL.* keys that do not change the network's tensors (the others describe a checkpoint's network, NETWORK_KEYS).
NOT_NETWORK = {"DROPOUT_VALUES", "LOAD_CHECKPOINT", "LOAD_CHECKPOINT_ONLY_WEIGHTS", "LOAD_CHECKPOINT_EPOCH", "SKIP_UNMATCHED_LAYERS",
               "SOURCE", "BMZ", "PRETRAINED_WEIGHTS"}  # fmt: skip


def network_keys() -> tuple[str, ...]:
    """The keys a network is built from: a config must agree on them with a checkpoint to take its weights."""
    model = tuple(f"MODEL.{k}" for k in ModelConfig.model_fields if k not in NOT_NETWORK)
    return ("PROBLEM.NDIM", "PROBLEM.SEMANTIC_SEG.ENCODING", *model)
