"""Prediction chunk by chunk into Zarr on dask: the in-memory prediction's values, resumable, on a local cluster."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from segflow.data.sources import ZarrSource
from segflow.errors import SegflowError
from segflow.evaluation.metrics import confusion, scores
from segflow.inference import chunked
from segflow.inference.predictor import Predictor


def _job(checkpoint: Path, tmp_path: Path, chunk=(40, 40), name="out.zarr") -> chunked.Job:
    predictor = Predictor.from_checkpoint(checkpoint)
    if not (tmp_path / "in.zarr").exists():
        image = (np.random.default_rng(1).random((100, 75)) * 255).astype(np.uint8)
        zarr.create_array(str(tmp_path / "in.zarr"), data=image, chunks=(32, 32))
    lazy = ZarrSource().lazy_array(predictor.cfg, tmp_path / "in.zarr", None, "TZCYX", "--axes", True)
    stats = predictor.normalizer.stats(lazy)
    return chunked.Job(str(checkpoint), lazy, str(tmp_path / name), chunk, stats, None, 4, False, "float32", True)


def _read(path: str) -> tuple[np.ndarray, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return np.asarray(group["probabilities"][...]), np.asarray(group["labels"][...])


def test_chunks_on_dask_give_the_in_memory_prediction(checkpoint, tmp_path) -> None:
    job = _job(checkpoint, tmp_path)
    lines: list[str] = []
    chunked.predict_volume(job, workers=2, say=lines.append)
    probs, labels = _read(job.output)
    predictor = Predictor.from_checkpoint(checkpoint)
    whole = predictor.predict(np.asarray(job.image), batch_size=4)
    assert probs.shape == (whole.shape[-1], 100, 75)
    np.testing.assert_allclose(np.moveaxis(probs, 0, -1), whole, atol=1e-5)
    np.testing.assert_array_equal(labels, predictor.labels(whole))
    assert np.asarray(zarr.open_group(job.output)["done"][...]).all()
    assert lines[-1] == "chunk 6/6 written"  # 3 x 2 chunks of 40 x 40


def test_a_run_killed_part_way_is_finished_by_the_same_command(checkpoint, tmp_path, monkeypatch) -> None:
    reference = _job(checkpoint, tmp_path, name="ref.zarr")
    # One worker in all three runs: a convolution's float sums depend on how many threads share it (1 ulp apart
    # between 1 and 2 threads on some CPUs), and the claim is the same command's output, bit for bit.
    chunked.predict_volume(reference, workers=1, say=lambda s: None)
    job = replace(reference, output=str(tmp_path / "out.zarr"))
    calls = []
    real = chunked.predict_chunk

    def dies_at_the_fourth(job, index):
        calls.append(index)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill would, part-way
        return real(job, index)

    monkeypatch.setattr(chunked, "predict_chunk", dies_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        chunked.predict_volume(job, workers=1, say=lambda s: None)  # one at a time: the first 3 are written
    monkeypatch.setattr(chunked, "predict_chunk", real)
    done = np.asarray(zarr.open_group(job.output)["done"][...])
    assert done.sum() == 3
    lines: list[str] = []
    chunked.predict_volume(job, workers=1, say=lines.append)
    assert lines[0] == f"{job.output}: 3 of 6 chunks were written by an earlier run; predicting the other 3"
    for a, b in zip(_read(job.output), _read(reference.output)):
        np.testing.assert_array_equal(a, b)


def test_another_chunking_or_model_is_refused_unless_overwritten(checkpoint, tmp_path) -> None:
    job = _job(checkpoint, tmp_path)
    chunked.predict_volume(job, say=lambda s: None)
    other = replace(job, chunk=(50, 75))
    with pytest.raises(SegflowError, match=r"out.zarr: was predicted with chunk \[40, 40\] there, \[50, 75\] now; re-run .* or give --overwrite"):
        chunked.predict_volume(other, say=lambda s: None)
    chunked.predict_volume(other, overwrite=True, say=lambda s: None)
    assert zarr.open_group(job.output)["probabilities"].chunks[1:] == (50, 75)
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(SegflowError, match="plain.zarr: exists and is not a segflow chunked prediction"):
        chunked.predict_volume(replace(job, output=str(tmp_path / "plain.zarr")), say=lambda s: None)
    with pytest.raises(SegflowError, match=r"--chunk 8,30: smaller than the model's window \(32, 32\)"):
        chunked.predict_volume(replace(job, chunk=(8, 30)), say=lambda s: None)


def test_a_local_cluster_of_two_worker_processes_gives_the_same_output(checkpoint, tmp_path) -> None:
    import os

    from distributed import Client, LocalCluster

    job = _job(checkpoint, tmp_path)
    chunked.predict_volume(job, say=lambda s: None)
    on_cluster = replace(job, output=str(tmp_path / "cluster.zarr"))
    # distributed's nannies set OMP_NUM_THREADS=1 and more in this process's environment and leave them: restored,
    # or later tests' subprocesses would train single-threaded (other numbers, other timings).
    environ = os.environ.copy()
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            chunked.predict_volume(on_cluster, scheduler=cluster.scheduler_address, say=lambda s: None)
            with Client(cluster) as client:  # each worker process loaded the model once for all its chunks
                loads = client.run(lambda: tuple(chunked.cached_predictor.cache_info()[:2]))
    finally:
        os.environ.clear()
        os.environ.update(environ)
    for a, b in zip(_read(on_cluster.output), _read(job.output)):
        np.testing.assert_array_equal(a, b)
    assert sum(hits + misses for hits, misses in loads.values()) == 6  # one model lookup per chunk
    assert all(misses <= 1 for _, misses in loads.values()), loads


def test_a_scheduler_that_does_not_answer_is_one_line(checkpoint, tmp_path) -> None:
    with pytest.raises(SegflowError, match=r"^--scheduler tcp://127.0.0.1:9: no dask scheduler answers there \(.*\); start one"):
        chunked.predict_volume(_job(checkpoint, tmp_path), scheduler="tcp://127.0.0.1:9", say=lambda s: None)




def test_segflow_predict_a_volume_from_the_command_line(checkpoint, tmp_path, cli) -> None:
    """``segflow predict MODEL in.h5|in.tif out.zarr``: an HDF5 volume or a tiled TIFF in, the same output as the
    engine's from Zarr."""
    import h5py

    job = _job(checkpoint, tmp_path)
    chunked.predict_volume(job, say=lambda s: None)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["raw"] = np.asarray(zarr.open_array(str(tmp_path / "in.zarr"), mode="r"))
    code, out, err = cli("predict", checkpoint, tmp_path / "in.h5", tmp_path / "cli.zarr", "--chunk", "40,40", "--workers", "2",
                         "--batch-size", "4", "--dtype", "float32")  # fmt: skip
    assert code == 0, err
    assert f"Predicting {tmp_path}/in.h5 (100, 75) in chunks of (40, 40) into {tmp_path}/cli.zarr (zarr) (2 worker thread(s))" in out
    assert f"open the labels in napari: napari {tmp_path}/cli.zarr/labels" in out
    for a, b in zip(_read(str(tmp_path / "cli.zarr")), _read(job.output)):
        np.testing.assert_array_equal(a, b)
    truth = (np.random.default_rng(2).random((100, 75)) > 0.6).astype(np.uint8)
    zarr.create_array(str(tmp_path / "gt.zarr"), data=truth, chunks=(32, 32))
    code, out, err = cli("predict", checkpoint, tmp_path / "in.zarr", tmp_path / "gt_out.zarr", "--chunk", "40,40", "--batch-size", "4",
                         "--gt", tmp_path / "gt.zarr")  # fmt: skip
    assert code == 0, err
    ious = scores(confusion(_read(job.output)[1], truth, 2))["iou_per_class"]  # the whole volume's, in memory
    assert f"IoU per class over the whole volume (6 chunks' confusion matrices summed): 0: {ious[0]:.4f}, 1: {ious[1]:.4f}" in out
    assert zarr.open_group(str(tmp_path / "gt_out.zarr")).attrs["segflow"]["iou_per_class"] == pytest.approx(list(ious), abs=1e-12)
    import tifffile

    tifffile.imwrite(tmp_path / "in.tif", np.asarray(zarr.open_array(str(tmp_path / "in.zarr"), mode="r")), compression="zlib", tile=(32, 32))
    code, _, err = cli("predict", checkpoint, tmp_path / "in.tif", tmp_path / "tif.zarr", "--chunk", "40,40", "--batch-size", "4", "--dtype", "float32")
    assert code == 0, err  # a tiled TIFF, read tile by tile
    for a, b in zip(_read(str(tmp_path / "tif.zarr")), _read(job.output)):
        np.testing.assert_array_equal(a, b)
    for args, message in [
        (("--chunk", "40,x"), "--chunk 40,x: give sizes separated by commas"),
        (("--dtype", "int8"), "--dtype int8: choose float16 or float32"),
        (("--workers", "0"), "--workers 0: must be at least 1"),
    ]:
        code, _, err = cli("predict", checkpoint, tmp_path / "in.zarr", tmp_path / "x.zarr", *args)
        assert code == 2 and err.strip() == f"segflow: error: {message}" + err.strip().split(message, 1)[1], err
    code, _, err = cli("predict", checkpoint, tmp_path / "in.zarr", tmp_path / "x.tif")
    assert code == 2 and f"OUTPUT {tmp_path}/x.tif: name it .zarr, .ome.zarr, .h5 or .hdf5 (the output's format), or give --output-format" in err
