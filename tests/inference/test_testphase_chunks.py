"""The test phase by chunks (TEST.BY_CHUNKS): BiaPy's keys, the same IoU as the in-memory test phase, every format."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from conftest import tiny_config, write_yaml

from segflow.evaluation.testphase import run_test
from segflow.inference.predictor import Predictor
from segflow.io.paths import RunPaths


def _as_zarr(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for tif in sorted(src.iterdir()):
        zarr.create_array(str(dst / f"{tif.stem}.zarr"), data=tifffile.imread(tif), chunks=(24, 24))


def _cfg(checkpoint: Path, x: Path, y: Path, **by_chunks: object):
    predictor = Predictor.from_checkpoint(checkpoint)
    cfg = predictor.cfg.model_copy(deep=True)
    cfg.DATA.TEST.PATH, cfg.DATA.TEST.GT_PATH = str(x), str(y)
    cfg.TEST.POST_PROCESSING = type(cfg.TEST.POST_PROCESSING)(MEDIAN_FILTER=True, MEDIAN_FILTER_AXIS=["xy"], MEDIAN_FILTER_SIZE=[5])
    for k, v in by_chunks.items():
        setattr(cfg.TEST.BY_CHUNKS, k, v)
    return cfg, predictor


@pytest.mark.parametrize("fmt", ["Zarr", "OME-Zarr", "H5"])
def test_by_chunks_scores_each_volume_as_the_in_memory_test_phase(checkpoint, data2d, tmp_path, fmt) -> None:
    _as_zarr(data2d / "test/x", tmp_path / "zx")
    _as_zarr(data2d / "test/y", tmp_path / "zy")
    cfg, predictor = _cfg(checkpoint, data2d / "test/x", data2d / "test/y")
    memory = run_test(cfg, RunPaths(tmp_path / "mem", "t", "1"), predictor)
    cfg, predictor = _cfg(checkpoint, tmp_path / "zx", tmp_path / "zy", ENABLE=True, FORMAT=fmt, CHUNK_SIZE=(40, 40), SAVE_OUT_TIF=True)
    paths = RunPaths(tmp_path / "chunks", "t", "1")
    chunks = run_test(cfg, paths, predictor, str(checkpoint))
    assert set(chunks) == {"by chunks", "by chunks - post-processing"}
    for mode, same in (("by chunks", "merge patches"), ("by chunks - post-processing", "merge patches - post-processing")):
        assert [r["image"].split(".")[0] for r in chunks[mode]["per_image"]] == ["img_000", "img_001"]
        for row, ref in zip(chunks[mode]["per_image"], memory[same]["per_image"]):
            assert row["iou_per_class"] == pytest.approx(ref["iou_per_class"], abs=1e-12)
        assert chunks[mode]["pooled"]["foreground_iou"] == pytest.approx(memory[same]["pooled"]["foreground_iou"], abs=1e-12)
    rows = list(csv.reader(paths.test_metrics.open()))
    assert [r[:2] for r in rows if r[0] == "by chunks"] == [["by chunks", "img_000.zarr"], ["by chunks", "img_001.zarr"],
                                                             ["by chunks", "MEAN"], ["by chunks", "POOLED"]]  # fmt: skip
    suffix = {"Zarr": ".zarr", "OME-Zarr": ".ome.zarr", "H5": ".h5"}[fmt]
    assert sorted(p.name for p in paths.per_image().iterdir()) == sorted([f"img_000{suffix}", "img_000.tif", f"img_001{suffix}", "img_001.tif"])
    labels = tifffile.imread(paths.per_image("_binarized") / "img_000.tif")  # SAVE_OUT_TIF: page by page from the output
    assert labels.shape == (64, 64)
    np.testing.assert_array_equal(labels, tifffile.imread(RunPaths(tmp_path / "mem", "t", "1").per_image("_binarized") / "img_000.tif"))


def test_segflow_run_with_biapys_by_chunks_keys_reads_image_and_mask_from_one_file(checkpoint, data2d, tmp_path, cli) -> None:
    """INPUT_ZARR_MULTIPLE_DATA: each HDF5 test file holds the image and its mask; a BiaPy YAML runs as it is."""
    import h5py

    (tmp_path / "vols").mkdir()
    for tif in sorted((data2d / "test/x").iterdir()):
        with h5py.File(tmp_path / "vols" / f"{tif.stem}.h5", "w") as f:
            f["volumes/raw"] = tifffile.imread(tif)
            f["volumes/labels"] = tifffile.imread(data2d / "test/y" / tif.name)
    tree = tiny_config(data2d, TRAIN={"ENABLE": False}, MODEL={"LOAD_CHECKPOINT": True}, PATHS={"CHECKPOINT_FILE": str(checkpoint)},
                       DATA={"TEST": {"PATH": str(tmp_path / "vols"), "GT_PATH": ""}},
                       TEST={"BY_CHUNKS": {"ENABLE": True, "FORMAT": "H5", "FLUSH_EACH": 10, "INPUT_IMG_AXES_ORDER": "YX",
                                           "INPUT_MASK_AXES_ORDER": "YX", "INPUT_ZARR_MULTIPLE_DATA": True,
                                           "INPUT_ZARR_MULTIPLE_DATA_RAW_PATH": "volumes/raw",
                                           "INPUT_ZARR_MULTIPLE_DATA_GT_PATH": "volumes/labels", "CHUNK_SIZE": "(32, 64)"}})  # fmt: skip
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path / "res", "--name", "j")
    assert code == 0, err
    assert "[by chunks] test volume 2: img_001.h5 (64, 64) in chunks of (32, 64) into" in out
    cfg, predictor = _cfg(checkpoint, data2d / "test/x", data2d / "test/y")
    memory = run_test(cfg, RunPaths(tmp_path / "mem", "t", "1"), predictor)
    line = next(s for s in out.splitlines() if s.startswith("Test Foreground IoU (by chunks) "))
    mean = memory["merge patches"]["per_image_mean"]
    assert line.split()[5:8] == [f"{mean['foreground_iou']:.4f}", f"{memory['merge patches']['pooled']['foreground_iou']:.4f}", f"{mean['mean_iou']:.4f}"]
    assert 0.2 < mean["mean_iou"] < 0.99  # a figure that tells the two apart if the labels differ
    assert RunPaths(tmp_path / "res", "j", "1").per_image().joinpath("img_000.h5").is_file()


def test_the_scheduler_key_sends_the_chunks_to_a_cluster(checkpoint, data2d, tmp_path) -> None:
    """TEST.BY_CHUNKS.SCHEDULER reaches the engine (a cluster at the address is tested in test_chunked.py)."""
    from segflow.errors import SegflowError

    _as_zarr(data2d / "test/x", tmp_path / "zx")
    _as_zarr(data2d / "test/y", tmp_path / "zy")
    cfg, predictor = _cfg(checkpoint, tmp_path / "zx", tmp_path / "zy", ENABLE=True, SCHEDULER="tcp://127.0.0.1:9")
    with pytest.raises(SegflowError, match=r"^TEST.BY_CHUNKS.SCHEDULER tcp://127.0.0.1:9: no dask scheduler answers there"):
        run_test(cfg, RunPaths(tmp_path / "r", "t", "1"), predictor, str(checkpoint))
