"""The configuration schema: every key segflow reads, with its type, default and meaning.

Key names, sections and defaults follow BiaPy's semantic segmentation workflow, so a BiaPy YAML
file loads. The field descriptions are the documentation: ``segflow reference`` renders them into
``docs/config-reference.md`` and ``segflow init`` uses them as comments.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from segflow.config.model_keys import ModelConfig
from segflow.config.section import Overlap, Section
from segflow.config.test_phase_keys import TestConfig


# --------------------------------------------------------------------------------------------- SYSTEM
class SystemConfig(Section):
    NUM_CPUS: int = Field(-1, description="CPU threads torch may use; -1 = all cores.")
    NUM_WORKERS: int = Field(
        -1,
        ge=-1,
        description="Data-loading worker processes; 0 = load in the main process; -1 = when training on a GPU one per core "
        "left after the main process (at most 4), on the CPU 0 (the network uses every core: with 1 worker 2D epochs ran 1.79x the plain baseline loop instead of 2.19x, bench/README.md). "
        "The epoch log's data_wait column and a warning tell when training waits for data.",
    )
    SEED: int = Field(0, description="Seed for every random generator (python, numpy, torch, workers); runs with the same seed repeat.")
    PIN_MEM: bool = Field(True, description="Pin host memory for faster copies to the GPU (ignored on the CPU).")
    NUM_PROCESSES: int = Field(1, ge=1, description="segflow key. Training processes on the CPU (--gpu cpu, or no GPU): more than 1 "
        "runs DDP with gloo on this machine, each process with TRAIN.BATCH_SIZE patches a step (on GPUs the processes are those of "
        "--gpu 0,1; under torchrun or srun, the launcher's).")
    NUM_NODES: int = Field(1, ge=1, description="segflow key. Machines of a run that segflow starts itself: the same command on each, "
        "with MASTER_ADDR (the first machine's address), MASTER_PORT (a free port) and NODE_RANK (0, 1, ...) set; each starts its "
        "processes (--gpu 0,1 or SYSTEM.NUM_PROCESSES). Under torchrun or srun: the launcher's count.")
    DIST_TIMEOUT: int = Field(1800, ge=1, description="segflow key. Seconds the processes of a distributed run wait for each "
        "other, to meet at the start (every process of every machine) and at each step, before the run stops with a line "
        "saying who did not come; torch's default, 30 minutes.")
    DEVICE: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run when --gpu is not given: 'auto' (CUDA if present, else CPU), 'cpu' or 'cuda'.")


# --------------------------------------------------------------------------------------------- PROBLEM
class SemanticSegConfig(Section):
    IGNORE_CLASS_ID: int = Field(
        -1,
        ge=-1,
        description="Mask value (0 or more) left out of loss and every metric (e.g. 255, VOC's 'void' border); "
        "-1 = none, and then a negative mask value is an error like any value that is not a class.",
    )
    ENCODING: Literal["categorical", "bitmask", "double_membrane", "region", "linear", "distance"] = Field(
        "categorical",
        description="segflow key. How masks become training targets. 'categorical': one class id per pixel (softmax; sigmoid for 2 classes). "
        "'bitmask': bit i of the mask value is class i, classes may overlap (sigmoid per class; MODEL.N_CLASSES = number of bits). "
        "'double_membrane': bitmask with each class dilated by one pixel in y-x. 'region': non-zero pixels are membrane (class 0), each connected "
        "region of zeros in a y-x plane is a class 1..N_CLASSES-1 (extra regions join the last one). 'linear': the mask value itself is a "
        "regression target (float or >8-bit masks, e.g. a distance transform). 'distance': segflow computes the distance transform of the "
        "binary mask (mask > 0) and regresses it. The test phase scores every encoding against the target the "
        "network learns: 'double_membrane' against the dilated bitmask, 'region' against the region classes, "
        "'distance' as predicted distance > 0.5 against mask > 0.",
    )
    OUTPUT_ACTIVATION: Literal["relu", "linear"] = Field("relu", description="segflow key. Output activation of the regression encodings ('linear', 'distance').")


class ProblemConfig(Section):
    TYPE: Literal["SEMANTIC_SEG"] = Field("SEMANTIC_SEG", description="Workflow. segflow does semantic segmentation only.")
    NDIM: Literal["2D", "3D"] = Field("2D", description="2D images (y, x, c) or 3D stacks (z, y, x, c).")
    SEMANTIC_SEG: SemanticSegConfig = SemanticSegConfig()


# --------------------------------------------------------------------------------------------- DATA
class NormalizationConfig(Section):
    TYPE: Literal["div", "scale_range", "zero_mean_unit_variance", "custom"] = Field(
        "div",
        description="'div': divide by the dtype's range (255 for uint8, 65535 for uint16; floats unchanged), never by the "
        "data's max. Integer images wider than 16 bits (int32, int64, uint32) are taken as 8- or 16-bit data saved "
        "wide: divided by 255 when the training images' values all fit 0..255, else by 65535 (stored in the "
        "checkpoint, so prediction divides the same way); values outside 0..65535 are an error (use 'scale_range' "
        "or 'zero_mean_unit_variance' for them). 'scale_range': per image to [0, 1] from its min and max. "
        "'zero_mean_unit_variance': per image. "
        "'custom': subtract CUSTOM_MEAN and divide by CUSTOM_STD (computed on the training images when -1 and stored "
        "in the checkpoint).",
    )
    CUSTOM_MEAN: float = Field(-1.0, description="Mean for TYPE 'custom'; -1 = computed from the training images.")
    CUSTOM_STD: float = Field(-1.0, description="Standard deviation for TYPE 'custom'; -1 = computed from the training images.")
    PERC_CLIP: bool = Field(False, description="Clip each image to its PERC_LOWER and PERC_UPPER percentiles before normalising.")
    PERC_LOWER: float = Field(0.1, ge=0, le=100, description="Lower percentile for PERC_CLIP.")
    PERC_UPPER: float = Field(99.9, ge=0, le=100, description="Upper percentile for PERC_CLIP.")

    @model_validator(mode="after")
    def _percentiles_ordered(self) -> NormalizationConfig:
        if self.PERC_CLIP and self.PERC_LOWER >= self.PERC_UPPER:
            raise ValueError("PERC_LOWER must be below PERC_UPPER")
        return self


class ArraysConfig(Section):
    """How Zarr and HDF5 arrays are laid out (BiaPy's keys), shared by DATA.TRAIN and DATA.VAL."""

    INPUT_IMG_AXES_ORDER: str = Field(
        "TZCYX",
        description="Axis order of images stored in Zarr or HDF5 files, with BiaPy's letters T, Z, C, Y, X (one T and, in 2D, one Z "
        "are used). With the default, an array of fewer axes is read as (Z)YX, or (Z)YXC when it has one axis more.",
    )
    INPUT_MASK_AXES_ORDER: str = Field("TZCYX", description="Axis order of masks stored in Zarr or HDF5 files, as INPUT_IMG_AXES_ORDER; a C axis must hold one channel.")
    INPUT_ZARR_MULTIPLE_DATA: bool = Field(
        False,
        description="Each Zarr or HDF5 file of PATH holds both the image (at INPUT_ZARR_MULTIPLE_DATA_RAW_PATH) and its mask (at "
        "INPUT_ZARR_MULTIPLE_DATA_GT_PATH); GT_PATH is not read. Off: each file holds one array, images in PATH and masks in GT_PATH paired by name.",
    )
    INPUT_ZARR_MULTIPLE_DATA_RAW_PATH: str = Field("", description="With INPUT_ZARR_MULTIPLE_DATA: the image array's path inside each file, e.g. volumes/raw.")
    INPUT_ZARR_MULTIPLE_DATA_GT_PATH: str = Field("", description="With INPUT_ZARR_MULTIPLE_DATA: the mask array's path inside each file, e.g. volumes/labels.")


class TrainDataConfig(ArraysConfig):
    PATH: str = Field("user_data/train/x", description="Folder of training images (relative paths resolve against the config file's folder).")
    GT_PATH: str = Field("user_data/train/y", description="Folder of training masks, paired with the images by sorted file name.")
    IN_MEMORY: bool = Field(
        True,
        description="Zarr and HDF5 arrays, and folders of TIFF files: read each whole into memory (true) or one patch at a time "
        "(false: data larger than RAM; a TIFF is memory-mapped, or only the pages or tiles a patch touches are decoded). "
        "Folders holding other image files (PNG, JPEG, NumPy) are always decoded into memory.",
    )
    REPLICATE: int = Field(0, ge=0, description="With EXTRACT_RANDOM_PATCH: repeat the image list this many times per epoch (0 or 1 = once).")
    OVERLAP: Overlap = Field((0, 0), description="Without EXTRACT_RANDOM_PATCH: minimum overlap of the training patch grid, fraction per axis in [0, 1).")
    PADDING: tuple[int, ...] = Field((0, 0), description="Accepted for BiaPy files; segflow cuts training patches without padding.")
    CHECK_DATA: bool = Field(True, description="Check every mask's values against MODEL.N_CLASSES before training.")


class ValDataConfig(ArraysConfig):
    FROM_TRAIN: bool = Field(True, description="Take the validation set from the training images (SPLIT_TRAIN) instead of PATH/GT_PATH.")
    SPLIT_TRAIN: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction of training images held out for validation. With a single training image, the last fraction of "
        "it along its first axis (z in 3D, y in 2D) is held out instead.",
    )
    RANDOM: bool = Field(True, description="Shuffle the images (with SYSTEM.SEED) before the split.")
    PATH: str = Field("user_data/val/x", description="Folder of validation images when FROM_TRAIN is false.")
    GT_PATH: str = Field("user_data/val/y", description="Folder of validation masks when FROM_TRAIN is false.")
    IN_MEMORY: bool = Field(True, description="As DATA.TRAIN.IN_MEMORY, for validation images read from PATH.")
    OVERLAP: Overlap = Field((0, 0), description="Overlap of the validation patch grid, fraction per axis in [0, 1).")
    PADDING: tuple[int, ...] = Field((0, 0), description="Accepted for BiaPy files; validation patches are cut without padding.")


class TestDataConfig(Section):
    PATH: str = Field("user_data/test/x", description="Folder of test images.")
    GT_PATH: str = Field("user_data/test/y", description="Folder of test masks (read when LOAD_GT is true).")
    LOAD_GT: bool = Field(True, description="Read test masks and report IoU.")
    IN_MEMORY: bool = Field(False, description="Accepted for BiaPy files; test images are read one at a time.")
    OVERLAP: Overlap = Field((0, 0), description="Overlap between prediction windows, fraction per axis in [0, 1); 0 = the minimum that covers the image.")
    PADDING: tuple[int, ...] = Field((0, 0), description="Pixels per axis discarded at each window border when merging (BiaPy's PADDING); raises the effective overlap.")
    CHECK_DATA: bool = Field(True, description="Check test mask values against MODEL.N_CLASSES.")
    ARGMAX_TO_OUTPUT: bool = Field(True, description="Write class label images (argmax) instead of one probability channel per class (N_CLASSES > 2).")


class DataConfig(Section):
    PATCH_SIZE: tuple[int, ...] = Field(
        (256, 256, 1),
        description="Patch shape with channels last: (y, x, c) in 2D, (z, y, x, c) in 3D. c is the number of image channels.",
    )
    EXTRACT_RANDOM_PATCH: bool = Field(False, description="Train on one random patch per image per epoch instead of a fixed grid of patches.")
    PROBABILITY_MAP: bool = Field(False, description="With EXTRACT_RANDOM_PATCH: draw patch centres from a map that favours foreground (W_FOREGROUND / W_BACKGROUND).")
    CLASS_BALANCED_SAMPLING: bool = Field(
        False,
        description="segflow key. With EXTRACT_RANDOM_PATCH: draw a class uniformly among the mask values present, then a patch centred on a "
        "pixel of that class (NIST's balancing), so rare classes are seen as often as common ones.",
    )
    W_FOREGROUND: float = Field(0.94, ge=0, description="Share of patch centres drawn on foreground pixels (PROBABILITY_MAP).")
    W_BACKGROUND: float = Field(0.06, ge=0, description="Share of patch centres drawn on background pixels (PROBABILITY_MAP).")
    REFLECT_TO_COMPLETE_SHAPE: bool = Field(False, description="Pad images smaller than PATCH_SIZE by reflection; when false such an image is an error.")
    NORMALIZATION: NormalizationConfig = NormalizationConfig()
    TRAIN: TrainDataConfig = TrainDataConfig()
    VAL: ValDataConfig = ValDataConfig()
    TEST: TestDataConfig = TestDataConfig()

    @model_validator(mode="after")
    def _patch_positive(self) -> DataConfig:
        if any(int(s) <= 0 for s in self.PATCH_SIZE):
            raise ValueError(f"PATCH_SIZE {self.PATCH_SIZE}: every size must be positive")
        if self.W_FOREGROUND + self.W_BACKGROUND <= 0:
            raise ValueError("W_FOREGROUND + W_BACKGROUND must be positive")
        return self


# --------------------------------------------------------------------------------------------- AUGMENTOR
class AugmentorConfig(Section):
    ENABLE: bool = Field(False, description="Augment training patches (validation and test data are never augmented).")
    DA_PROB: float = Field(0.5, ge=0, le=1, description="Probability that each enabled transform is applied to a patch.")
    AUG_SAMPLES: bool = Field(True, description="Write a few augmented image/mask pairs to results/<job>/aug/ for a person to check.")
    AUG_NUM_SAMPLES: int = Field(10, ge=0, description="How many augmented pairs AUG_SAMPLES writes.")
    DRAW_GRID: bool = Field(True, description="Draw a grid on the AUG_SAMPLES images so geometric transforms are visible.")
    SHUFFLE_TRAIN_DATA_EACH_EPOCH: bool = Field(True, description="Shuffle training patches every epoch.")
    SHUFFLE_VAL_DATA_EACH_EPOCH: bool = Field(False, description="Accepted for BiaPy files; validation order does not change results.")
    ROT90: bool = Field(False, description="Random rotation by a multiple of 90 degrees in the y-x plane.")
    RANDOM_ROT: bool = Field(False, description="Random rotation by an angle from RANDOM_ROT_RANGE in the y-x plane.")
    RANDOM_ROT_RANGE: tuple[float, float] = Field((-180, 180), description="Angle range in degrees for RANDOM_ROT.")
    SHEAR: bool = Field(False, description="Random shear (a real shear, not a rotation) in the y-x plane.")
    SHEAR_RANGE: tuple[float, float] = Field((-20, 20), description="Shear angle range in degrees.")
    ZOOM: bool = Field(False, description="Random zoom.")
    ZOOM_RANGE: tuple[float, float] = Field((0.8, 1.2), description="Zoom factor range.")
    ZOOM_IN_Z: bool = Field(False, description="Also zoom along z (3D).")
    SHIFT: bool = Field(False, description="Random translation.")
    SHIFT_RANGE: tuple[float, float] = Field((0.1, 0.2), description="Translation range as a fraction of the patch size.")
    AFFINE_MODE: Literal["constant", "reflect", "wrap", "symmetric", "edge"] = Field(
        "reflect", description="How rotations, shears, zooms and shifts fill pixels from outside the patch."
    )
    VFLIP: bool = Field(False, description="Random vertical flip (along y).")
    HFLIP: bool = Field(False, description="Random horizontal flip (along x).")
    ZFLIP: bool = Field(False, description="Random flip along z (3D).")
    ELASTIC: bool = Field(False, description="Random elastic deformation.")
    E_ALPHA: tuple[float, float] = Field((12, 16), description="Elastic displacement magnitude range in pixels.")
    E_SIGMA: float = Field(4, gt=0, description="Smoothness (Gaussian sigma, pixels) of the elastic displacement field.")
    E_MODE: Literal["constant", "reflect", "wrap", "symmetric", "edge"] = Field("constant", description="How the elastic deformation fills pixels from outside the patch.")
    G_BLUR: bool = Field(False, description="Random Gaussian blur of the image.")
    G_SIGMA: tuple[float, float] = Field((1.0, 2.0), description="Gaussian blur sigma range in pixels.")
    GAUSSIAN_NOISE: bool = Field(False, description="Add random Gaussian noise to the image.")
    GAUSSIAN_NOISE_MEAN: float = Field(0.0, description="Mean of the added noise.")
    GAUSSIAN_NOISE_VAR: float = Field(0.05, ge=0, description="Variance of the added noise (on normalised intensities).")
    BRIGHTNESS: bool = Field(False, description="Random brightness: add a value from BRIGHTNESS_FACTOR.")
    BRIGHTNESS_FACTOR: tuple[float, float] = Field((-0.1, 0.1), description="Range of the added brightness offset.")
    BRIGHTNESS_MODE: Literal["2D", "3D"] = Field("3D", description="3D: one offset per patch; 2D: one per z-slice.")
    CONTRAST: bool = Field(False, description="Random contrast: multiply by 1 + a value from CONTRAST_FACTOR.")
    CONTRAST_FACTOR: tuple[float, float] = Field((-0.1, 0.1), description="Range of the contrast change.")
    CONTRAST_MODE: Literal["2D", "3D"] = Field("3D", description="3D: one factor per patch; 2D: one per z-slice.")
    GAMMA_CONTRAST: bool = Field(False, description="Random gamma correction.")
    GC_GAMMA: tuple[float, float] = Field((1.25, 1.75), description="Gamma range.")


# --------------------------------------------------------------------------------------------- LOSS
class LossConfig(Section):
    TYPE: Literal["CE", "DICE", "W_CE_DICE", "MSE", "LOGMSE"] = Field(
        "CE",
        description="Cross-entropy (binary for N_CLASSES 2 and per class for bitmask encodings), Dice, or a weighted sum of both; "
        "'MSE' or 'LOGMSE' (log(1 + MSE)) for the regression encodings.",
    )
    WEIGHTS: tuple[float, float] = Field((0.66, 0.34), description="W_CE_DICE: weights of the cross-entropy and Dice terms.")
    CLASS_REBALANCE: bool = Field(False, description="Weight cross-entropy by inverse class frequency measured on the training masks.")


# --------------------------------------------------------------------------------------------- TRAIN
class LRSchedulerConfig(Section):
    NAME: Literal["", "onecycle", "warmupcosine", "reduceonplateau"] = Field("", description="'' = constant LR; 'onecycle' (per step), 'warmupcosine' (linear warm-up then cosine decay, per step) or 'reduceonplateau' (on validation loss, per epoch).")
    MIN_LR: float = Field(-1.0, description="Lowest LR for warmupcosine / reduceonplateau; -1 = LR / 100.")
    REDUCEONPLATEAU_FACTOR: float = Field(0.5, gt=0, lt=1, description="LR multiplier when validation loss stops improving.")
    REDUCEONPLATEAU_PATIENCE: int = Field(-1, description="Epochs without improvement before the LR is reduced; -1 = TRAIN.PATIENCE / 2.")
    WARMUP_COSINE_DECAY_EPOCHS: int = Field(-1, description="Warm-up epochs for warmupcosine; -1 = 10 % of TRAIN.EPOCHS.")


class TrainConfig(Section):
    ENABLE: bool = Field(False, description="Train a model.")
    OPTIMIZER: Literal["SGD", "ADAM", "ADAMW"] = Field("SGD", description="Optimiser.")
    LR: float = Field(1e-4, gt=0, description="Learning rate (the peak rate for onecycle).")
    W_DECAY: float = Field(0.02, ge=0, description="Weight decay.")
    OPT_BETAS: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW betas.")
    BATCH_SIZE: int = Field(2, gt=0, description="Patches per training step (per device).")
    ACCUM_ITER: int = Field(1, gt=0, description="Accumulate gradients over this many steps.")
    EPOCHS: int = Field(360, gt=0, description="Maximum number of epochs.")
    PATIENCE: int = Field(-1, description="Stop after this many epochs without a lower validation loss; -1 = never.")
    PRECISION: Literal["auto", "32", "bf16", "16"] = Field(
        "auto",
        description="segflow key. Numeric precision of training and prediction: 'auto' = bf16 mixed precision on GPUs that support it, "
        "else fp16 mixed on CUDA; on the CPU bf16 mixed where the CPU has native bfloat16 (AVX512-BF16 or AMX: about 2x faster, "
        "the same test IoU; bench/README.md), else fp32. 3D networks with a level 2 voxels deep train in fp32 on the CPU (a torch bug).",
    )
    LR_SCHEDULER: LRSchedulerConfig = LRSchedulerConfig()

    @model_validator(mode="after")
    def _patience(self) -> TrainConfig:
        if self.PATIENCE == 0 or self.PATIENCE < -1:
            raise ValueError(f"PATIENCE {self.PATIENCE}: use a positive number of epochs, or -1 to never stop early")
        return self


# --------------------------------------------------------------------------------------------- PATHS
class PathsConfig(Section):
    CHECKPOINT_FILE: str = Field("", description="Checkpoint to load when MODEL.LOAD_CHECKPOINT is true ('' = this job's own).")
    BMZ_EXPORT_PATH: str = Field("", description="Folder of the package MODEL.BMZ.EXPORT.ENABLE writes (<name>_<run_id>.zip); '' = <run folder>/BMZ_files.")
    PROB_MAP_DIR: str = Field("", description="Where DATA.PROBABILITY_MAP writes its maps (prob_map_NAME.tif per pixel; for masks read patch by patch prob_map_NAME_block32.tif, one value per 32-pixel block); '' = <result_dir>/<name>/prob_map.")


class Config(Section):
    """The whole configuration."""

    SYSTEM: SystemConfig = SystemConfig()
    PROBLEM: ProblemConfig = ProblemConfig()
    DATA: DataConfig = DataConfig()
    AUGMENTOR: AugmentorConfig = AugmentorConfig()
    MODEL: ModelConfig = ModelConfig()
    LOSS: LossConfig = LossConfig()
    TRAIN: TrainConfig = TrainConfig()
    TEST: TestConfig = TestConfig()
    PATHS: PathsConfig = PathsConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        ndim = 2 if self.PROBLEM.NDIM == "2D" else 3
        if len(self.DATA.PATCH_SIZE) != ndim + 1:
            raise ValueError(
                f"DATA.PATCH_SIZE {self.DATA.PATCH_SIZE} has {len(self.DATA.PATCH_SIZE)} values; PROBLEM.NDIM {self.PROBLEM.NDIM} "
                f"needs {ndim + 1}: ({'z, ' if ndim == 3 else ''}y, x, channels)"
            )
        for key in ("PROBABILITY_MAP", "CLASS_BALANCED_SAMPLING"):
            if getattr(self.DATA, key) and not self.DATA.EXTRACT_RANDOM_PATCH:
                raise ValueError(f"DATA.{key} needs DATA.EXTRACT_RANDOM_PATCH: true")
        if self.DATA.PROBABILITY_MAP and self.DATA.CLASS_BALANCED_SAMPLING:
            raise ValueError("DATA.PROBABILITY_MAP and DATA.CLASS_BALANCED_SAMPLING both choose patch centres; enable one")
        regression = self.PROBLEM.SEMANTIC_SEG.ENCODING in ("linear", "distance")
        if regression != (self.LOSS.TYPE in ("MSE", "LOGMSE")):
            raise ValueError(
                f"LOSS.TYPE {self.LOSS.TYPE} does not fit PROBLEM.SEMANTIC_SEG.ENCODING {self.PROBLEM.SEMANTIC_SEG.ENCODING}: "
                + ("use 'MSE' or 'LOGMSE' for regression" if regression else "'MSE'/'LOGMSE' are for the 'linear' and 'distance' encodings; use CE, DICE or W_CE_DICE")
            )
        levels = len(self.MODEL.FEATURE_MAPS) - 1
        if self.MODEL.Z_DOWN and len(self.MODEL.Z_DOWN) != levels:
            raise ValueError(f"MODEL.Z_DOWN has {len(self.MODEL.Z_DOWN)} values; MODEL.FEATURE_MAPS gives {levels} levels")
        return self

    @property
    def ndim(self) -> int:
        """2 or 3 spatial dimensions."""
        return 2 if self.PROBLEM.NDIM == "2D" else 3

    @property
    def in_channels(self) -> int:
        """Image channels, the last value of DATA.PATCH_SIZE."""
        return int(self.DATA.PATCH_SIZE[-1])

    @property
    def spatial_patch(self) -> tuple[int, ...]:
        """DATA.PATCH_SIZE without the channel count."""
        return tuple(int(s) for s in self.DATA.PATCH_SIZE[:-1])
