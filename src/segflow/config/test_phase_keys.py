"""The TEST section of the configuration: the test phase, its post-processing, and prediction by chunks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from segflow.config.section import Section


# --------------------------------------------------------------------------------------------- TEST
class PostProcessingConfig(Section):
    Z_FILTERING: bool = Field(False, description="Median filter along z of 3D predictions (and of TEST.ANALIZE_2D_IMGS_AS_3D_STACK stacks).")
    Z_FILTERING_SIZE: int = Field(5, gt=0, description="Size of the Z_FILTERING median filter.")
    YZ_FILTERING: bool = Field(False, description="Median filter in the y-z plane of 3D predictions.")
    YZ_FILTERING_SIZE: int = Field(5, gt=0, description="Size of the YZ_FILTERING median filter.")
    MEDIAN_FILTER: bool = Field(False, description="BiaPy 3.5's form of the median filters: one filter per entry of MEDIAN_FILTER_AXIS, applied in order.")
    MEDIAN_FILTER_AXIS: list[Literal["z", "yz", "zy", "xy", "yx", "zx", "xz"]] = Field(
        [], description="Axes of each MEDIAN_FILTER. Filters involving z apply to 3D results and to TEST.ANALIZE_2D_IMGS_AS_3D_STACK stacks; 'xy' also to 2D images."
    )
    MEDIAN_FILTER_SIZE: list[int] = Field([], description="Size of each MEDIAN_FILTER, one per MEDIAN_FILTER_AXIS entry.")

    @model_validator(mode="after")
    def _median_lists(self) -> PostProcessingConfig:
        if self.MEDIAN_FILTER:
            if not self.MEDIAN_FILTER_AXIS:
                raise ValueError("MEDIAN_FILTER is on: list the filters' axes in MEDIAN_FILTER_AXIS, e.g. ['z']")
            if len(self.MEDIAN_FILTER_SIZE) != len(self.MEDIAN_FILTER_AXIS):
                raise ValueError(
                    f"MEDIAN_FILTER_SIZE {self.MEDIAN_FILTER_SIZE} needs one size per MEDIAN_FILTER_AXIS entry {self.MEDIAN_FILTER_AXIS}"
                )
            if any(v <= 0 for v in self.MEDIAN_FILTER_SIZE):
                raise ValueError(f"MEDIAN_FILTER_SIZE {self.MEDIAN_FILTER_SIZE}: sizes must be positive")
        return self


class ByChunksConfig(Section):
    ENABLE: bool = Field(
        False,
        description="Predict each test volume chunk by chunk into a Zarr, OME-Zarr or HDF5 file in per_image/, holding only a few chunks in "
        "memory: for test images larger than RAM, 2D or 3D, any number of classes. DATA.TEST.PATH is a .zarr store, .h5 file or TIFF, or a "
        "folder of them; masks (DATA.TEST.GT_PATH, same names) are scored chunk by chunk, so the IoU is exact. Replaces the in-memory "
        "test modes; the median filters of POST_PROCESSING run by chunks with their halo.",
    )
    FORMAT: Literal["Zarr", "H5", "OME-Zarr"] = Field(
        "Zarr", description="Format of the outputs: 'Zarr', 'H5' (HDF5, written by this process only), or segflow's 'OME-Zarr' (multiscale, "
        "with the input's voxel size: napari and Fiji open it as image and label layers)."
    )
    SAVE_OUT_TIF: bool = Field(False, description="Also write each volume's probabilities (per_image/) and labels (per_image_binarized/) as "
        "TIFF, slab by slab from the output (the TIFF must fit on disk, not in memory).")
    FLUSH_EACH: int = Field(100, gt=0, description="Accepted for BiaPy files: segflow writes and records every chunk whole (Zarr), or "
        "flushes the HDF5 file after each chunk, so a killed run loses no recorded chunk.")
    INPUT_IMG_AXES_ORDER: str = Field("TZCYX", description="Axes of the stored test images, BiaPy's letters (default: (Z)YX(C) from the shape, "
        "or the axes a TIFF records).")
    INPUT_MASK_AXES_ORDER: str = Field("TZCYX", description="Axes of the stored test masks, as INPUT_IMG_AXES_ORDER.")
    INPUT_ZARR_MULTIPLE_DATA: bool = Field(False, description="Each test file holds the image and its mask: read them at "
        "INPUT_ZARR_MULTIPLE_DATA_RAW_PATH and _GT_PATH inside it (DATA.TEST.GT_PATH is then unused).")
    INPUT_ZARR_MULTIPLE_DATA_RAW_PATH: str = Field("", description="The image's array inside each test file, e.g. 'volumes/raw'.")
    INPUT_ZARR_MULTIPLE_DATA_GT_PATH: str = Field("", description="The mask's array inside each test file, e.g. 'volumes/labels'.")
    CHUNK_SIZE: tuple[int, ...] = Field((), description="segflow key. Spatial size of a chunk, (z, y, x) or (y, x): of the work and of the "
        "output's storage; () = 4 windows a side, at most the volume.")
    WORKERS: int = Field(0, ge=0, description="segflow key. Chunks predicted at once on this machine; 0 = on the CPU one per core (at most 4), "
        "on a GPU 1.")
    SCHEDULER: str = Field("", description="segflow key. A running dask.distributed scheduler, tcp://host:port, to send the chunks to "
        "(each worker loads the model once); '' = this machine. See docs/distributed.md for SLURM (dask-jobqueue).")

    @model_validator(mode="after")
    def _inner_paths(self) -> ByChunksConfig:
        if self.INPUT_ZARR_MULTIPLE_DATA and not self.INPUT_ZARR_MULTIPLE_DATA_RAW_PATH:
            raise ValueError("INPUT_ZARR_MULTIPLE_DATA is on: set INPUT_ZARR_MULTIPLE_DATA_RAW_PATH (and _GT_PATH) to the arrays inside each file")
        return self


class TestConfig(Section):
    ENABLE: bool = Field(False, description="Predict the test images (with IoU when DATA.TEST.LOAD_GT).")
    AUGMENTATION: bool = Field(False, description="Test-time augmentation: average over the 8 flips and 90-degree rotations of the y-x plane (16 with z flips in 3D).")
    FULL_IMG: bool = Field(False, description="Also predict each whole image in one pass, padded to what the network needs (full_image/).")
    ANALIZE_2D_IMGS_AS_3D_STACK: bool = Field(False, description="2D: also stack the test predictions in file order into one volume (as_3d_stack*/) and apply the z median filters to it.")
    BATCH_SIZE: int = Field(-1, description="segflow key. Windows per forward pass at test time; -1 = the device's best: on the CPU as many "
        "windows as hold about 262,144 pixels/voxels (4 of 256x256, 1 of 64x64x64: measured fastest, bench/README.md), on a GPU TRAIN.BATCH_SIZE * 2.")
    POST_PROCESSING: PostProcessingConfig = PostProcessingConfig()
    BY_CHUNKS: ByChunksConfig = ByChunksConfig()
