"""BiaPy keys that segflow does not implement but that a BiaPy config may carry harmlessly.

Such a key is accepted when its value means what segflow does anyway (BiaPy 3.5.10's default, or a value
with the same effect), when it only matters while a switch that segflow refuses is on, or when it
belongs to another of BiaPy's workflows. Anything else stays an error (``config._check_keys``).
"""

from __future__ import annotations

from typing import Any

# Values (compared case-insensitively, lists as tuples) that mean what segflow does anyway.
SAME_AS_SEGFLOW: dict[str, tuple[Any, ...]] = {
    "MODEL.UPSAMPLE_LAYER": ("convtranspose",),  # MONAI's U-Nets upsample with transposed convolutions
    "MODEL.SAVE_CKPT_FREQ": (-1,),  # no periodic checkpoints besides best and last
    "TRAIN.VERBOSE": (True, False),  # segflow always prints its progress; verbosity changes no result
    "TEST.VERBOSE": (True, False),
    "TRAIN.METRICS": ((), ("iou",)),  # IoU is the metric of semantic segmentation, in BiaPy as in segflow
    "TEST.METRICS": ((), ("iou",)),
    "TRAIN.CHECKPOINT_MONITOR": ("val_loss",),  # the best checkpoint has the lowest validation loss
    "TEST.AUGMENTATION_MODE": ("mean",),  # test-time augmentation averages the views
    "DATA.VAL.DIST_EVAL": (True,),  # in a multi-GPU run every GPU validates its share
    "PATHS.PROB_MAP_FILENAME": ("prob_map.npy",),
    # BiaPy's step after prediction by chunks; segflow's labels and median filters by chunks (with their halo) are
    # exactly those of the entire prediction, so both of its types give segflow's result
    "TEST.BY_CHUNKS.WORKFLOW_PROCESS.ENABLE": (True, False),
    "TEST.BY_CHUNKS.WORKFLOW_PROCESS.TYPE": ("chunk_by_chunk", "entire_pred"),
}

RESOLUTION_KEYS = ("DATA.TRAIN.RESOLUTION", "DATA.VAL.RESOLUTION", "DATA.TEST.RESOLUTION")

# Settings that only matter while their switch is on; segflow refuses the switch when it is on.
# (A setting inside a section with its own ENABLE key, e.g. DATA.PREPROCESS.CLAHE.*, is found by name.)
SWITCHES: dict[str, str] = {
    **{f"AUGMENTOR.{prefix}": f"AUGMENTOR.{switch}" for prefix, switch in (
        ("CBLUR_", "CUTBLUR"), ("CMIX_", "CUTMIX"), ("CNOISE_", "CUTNOISE"), ("COUT_", "CUTOUT"),
        ("DROP_RANGE", "DROPOUT"), ("GRID_", "GRIDMASK"), ("MB_KERNEL", "MEDIAN_BLUR"), ("MOTB_", "MOTION_BLUR"),
        ("MS_", "MISALIGNMENT"), ("MISSP_", "MISSING_SECTIONS"), ("PEPPER_", "PEPPER"), ("SALT_AMOUNT", "SALT"),
        ("SALT_AND_PEPPER_", "SALT_AND_PEPPER"),
    )},  # fmt: skip  # noqa: RUF028 (keeps the hand-laid table if a formatter is run)
    "DATA.VAL.CROSS_VAL_": "DATA.VAL.CROSS_VAL",
    "DATA.TEST.BINARY_MASKS": "TEST.POST_PROCESSING.APPLY_MASK",
    "DATA.FILTER_BY_IMAGE": "DATA.TRAIN.FILTER_SAMPLES.ENABLE",
    "MODEL.TORCHVISION_MODEL_NAME": "MODEL.SOURCE",
    # Settings of architectures segflow does not have (MODEL.ARCHITECTURE refuses them).
    **{f"MODEL.{prefix}": "MODEL.ARCHITECTURE" for prefix in ("CONVNEXT_", "VIT_", "UNETR_", "UNET_SR_", "MAE_")},
}

# Keys of BiaPy's instance segmentation, detection and self-supervised workflows outside PROBLEM.<workflow>.
OTHER_WORKFLOW_KEYS = (
    "TEST.DET_", "TEST.MATCHING_STATS", "TEST.POST_PROCESSING.VORONOI_", "TEST.POST_PROCESSING.REPARE_LARGE_BLOBS_SIZE",
    "TEST.POST_PROCESSING.CLEAR_BORDER", "TEST.POST_PROCESSING.REMOVE_CLOSE_POINTS", "TEST.POST_PROCESSING.DET_WATERSHED",
    "TEST.POST_PROCESSING.MEASURE_PROPERTIES.", "PATHS.WATERSHED_DIR", "PATHS.MAE_OUT_DIR", "PATHS.RESULT_DIR.DET_",
    "PATHS.RESULT_DIR.INST_",
    *(f"DATA.{p}.{k}" for p in ("TRAIN", "VAL", "TEST") for k in ("INSTANCE_CHANNELS_", "DETECTION_MASK_DIR", "SSL_SOURCE_DIR")),
    *(f"PATHS.{p}_INSTANCE_CHANNELS_CHECK" for p in ("TRAIN", "VAL", "TEST")),
)  # fmt: skip


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, (list, tuple)):
        return tuple(_normal(v) for v in value)
    return value


def means_what_segflow_does(key: str, value: Any) -> bool:
    """``value`` of BiaPy key ``key`` asks for what segflow does anyway: accept it without a word."""
    if key in RESOLUTION_KEYS:  # (-1,): unknown, or all 1: no scaling; segflow never rescales
        values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        return bool(values) and numbers and (set(values) <= {-1} or set(values) <= {1})
    allowed = SAME_AS_SEGFLOW.get(key)
    if allowed is None:
        return False
    normal = _normal(value)
    return any(normal == _normal(a) and type(normal) is type(_normal(a)) for a in allowed)


def ignored_because(key: str, biapy: frozenset[str], implemented: frozenset[str]) -> str | None:
    """Why BiaPy key ``key`` cannot change what segflow does, whatever its value; None when it could."""
    if key.startswith(OTHER_WORKFLOW_KEYS):
        return "it belongs to another BiaPy workflow"
    switch = next((s for prefix, s in SWITCHES.items() if key.startswith(prefix) and key != s), None)
    if switch is None:  # the nearest enclosing section with an ENABLE key that segflow lacks
        parts = key.split(".")
        enables = (".".join(parts[:i]) + ".ENABLE" for i in range(len(parts) - 1, 0, -1))
        switch = next((e for e in enables if e != key and e in biapy and e not in implemented), None)
    if switch is None:
        return None
    if switch.startswith("MODEL."):  # MODEL.SOURCE, MODEL.ARCHITECTURE: segflow refuses the values these serve
        return f"it only applies to a {switch} that segflow does not have"
    return f"it only matters when {switch} is on, which segflow refuses"
