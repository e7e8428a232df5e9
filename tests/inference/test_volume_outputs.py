"""Chunked prediction into Zarr, OME-Zarr and HDF5, median filters by chunks with their halo, and the failures part-way
(a full disk, a kill) that a re-run of the same command finishes."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from segflow.errors import SegflowError
from segflow.evaluation.postprocess import apply_median_filters, chunk_filter, filter_halo
from segflow.inference import chunked
from segflow.inference.stores import ZarrStore, get_store
from segflow.inference.volume_job import build_job

SHAPE = (20, 40, 40)
OPTIONS = {"dtype": "float32", "batch_size": 4}


@pytest.fixture(scope="module")
def model3d(tmp_path_factory) -> str:
    """An untrained 3D U-Net 4-16 with 8x16x16 windows, saved as segflow saves a checkpoint (prediction only)."""
    import torch

    from segflow.config.loader import build_config
    from segflow.training.module import SegModel

    path = tmp_path_factory.mktemp("model3d") / "m.pth"
    tree = {"PROBLEM": {"NDIM": "3D"}, "DATA": {"PATCH_SIZE": "(8, 16, 16, 1)", "NORMALIZATION": {"TYPE": "div"}},
            "MODEL": {"FEATURE_MAPS": [4, 8, 16]}, "TRAIN": {"ENABLE": False}}  # fmt: skip
    torch.manual_seed(0)
    model = SegModel(build_config(tree)[0].model_dump(mode="json"))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return str(path)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """A uint8 OME-Zarr image of ``SHAPE`` with a voxel size of 2 x 0.5 x 0.5 (z, y, x)."""
    from ome_zarr.writer import write_multiscales_metadata

    path = tmp_path_factory.mktemp("vol") / "in.ome.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=(np.random.default_rng(3).random(SHAPE) * 255).astype(np.uint8), chunks=(10, 20, 20))
    write_multiscales_metadata(group, [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]}], axes="zyx")
    return path


def _in_memory(model: str, volume: Path) -> np.ndarray:
    predictor = chunked.cached_predictor(model, "cpu")
    return predictor.predict(np.asarray(zarr.open_group(str(volume), mode="r")["0"])[..., None], batch_size=4)


def _job(model: str, volume: Path, out: Path, store: str = "zarr", **kw) -> chunked.Job:
    return build_job(model, "cpu", volume, None, "TZCYX", out, store, "8,16,16", OPTIONS, **kw)


def _arrays(job: chunked.Job, *names: str) -> list[np.ndarray]:
    return [np.asarray(get_store(job.store).read(job.output, n)[...]) for n in names]


@pytest.mark.parametrize(("store", "name"), [("zarr", "out.zarr"), ("ome-zarr", "out.ome.zarr"), ("h5", "out.h5")])
def test_every_format_holds_the_in_memory_prediction(model3d, volume, tmp_path, store, name) -> None:
    job = _job(model3d, volume, tmp_path / name, store)
    assert job.voxel_size == (2.0, 0.5, 0.5)  # the input's, read from its OME-Zarr metadata
    chunked.predict_volume(job, workers=2, say=lambda s: None)  # 3 x 3 x 3 chunks
    probs, labels = _arrays(job, "probabilities", "labels")
    whole = _in_memory(model3d, volume)
    np.testing.assert_allclose(np.moveaxis(probs, 0, -1), whole, atol=1e-5)
    np.testing.assert_array_equal(labels, chunked.cached_predictor(model3d, "cpu").labels(whole))
    assert _arrays(job, "done")[0].all()
    if store == "h5":
        import h5py

        with h5py.File(job.output, "r") as f:  # closed by the run: readable by anyone
            assert tuple(f["labels"].attrs["element_size_um"]) == (2.0, 0.5, 0.5)
            assert f["probabilities"].chunks == (whole.shape[-1], 8, 16, 16)


def test_an_ome_zarr_output_is_read_as_an_image_and_a_label_layer(model3d, volume, tmp_path) -> None:
    """What napari-ome-zarr reads (ome-zarr's Reader): the probabilities as a multiscale image, one channel per class,
    at the input's voxel size, and the labels as its label image, each level half the one before."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    job = _job(model3d, volume, tmp_path / "out.ome.zarr", "ome-zarr")
    chunked.predict_volume(job, say=lambda s: None)
    nodes = list(Reader(parse_url(job.output))())
    image = next(n for n in nodes if n.load(Multiscales) and not n.load(Label))
    label = next(n for n in nodes if n.load(Label))
    channels = image.data[0].shape[0]
    # halved along every axis longer than a chunk (8, 16, 16), until the level fits in one
    assert [tuple(level.shape) for level in image.data] == [(channels, 20, 40, 40), (channels, 10, 20, 20), (channels, 5, 10, 10)]
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "z", "y", "x"]
    scales = [t[0]["scale"] for t in image.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 2.0, 0.5, 0.5], [1.0, 4.0, 1.0, 1.0], [1.0, 8.0, 2.0, 2.0]]
    assert image.metadata["channel_names"] == (["foreground"] if channels == 1 else [f"class {c}" for c in range(channels)])
    labels = np.asarray(label.data[0])
    np.testing.assert_array_equal(labels, chunked.cached_predictor(model3d, "cpu").labels(_in_memory(model3d, volume)))
    np.testing.assert_array_equal(np.asarray(label.data[1]), labels[::2, ::2, ::2])
    assert label.zarr.path.endswith("labels/classes")


def test_median_filters_by_chunks_give_the_whole_volume_filtered(model3d, volume, tmp_path) -> None:
    filters = [("z", 3), ("yz", 5)]
    assert filter_halo(filters, 3) == (3, 2, 0)  # z: 1 + 2, y: 2, x: none
    job = _job(model3d, volume, tmp_path / "f.zarr", post=chunk_filter(filters, 3), halo=filter_halo(filters, 3))
    chunked.predict_volume(job, say=lambda s: None)
    raw, filtered, labels = _arrays(job, "probabilities", "probabilities_post_processing", "labels_post_processing")
    whole = apply_median_filters(_in_memory(model3d, volume), filters)
    np.testing.assert_allclose(np.moveaxis(filtered, 0, -1), whole, atol=1e-5)
    np.testing.assert_array_equal(labels, chunked.cached_predictor(model3d, "cpu").labels(whole))
    assert not np.allclose(raw, filtered, atol=1e-3)  # the filter changed something
    with pytest.raises(SegflowError, match=r"^--chunk 8,16,16: the median filters read 20,0,0 voxels beyond each chunk, more than a chunk"):
        chunked.predict_volume(replace(job, output=str(tmp_path / "g.zarr"), halo=(20, 0, 0)), say=lambda s: None)


def test_a_full_disk_part_way_is_one_line_and_the_same_command_then_finishes(model3d, volume, tmp_path, monkeypatch) -> None:
    reference = _job(model3d, volume, tmp_path / "ref.zarr")
    chunked.predict_volume(reference, workers=1, say=lambda s: None)  # one worker throughout, as in test_chunked
    real, calls = ZarrStore.write, []

    def fills_the_disk(self, path, index, core, outputs, confusions):
        calls.append(index)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, index, core, outputs, confusions)

    monkeypatch.setattr(ZarrStore, "write", fills_the_disk)
    job = replace(reference, output=str(tmp_path / "out.zarr"))
    with pytest.raises(SegflowError, match=r"out.zarr: the disk is full \(No space left on device\) after 2 of 27 chunks were written and "
                       r"recorded; free space, then run the same command again: it predicts only the other chunks$"):  # fmt: skip
        chunked.predict_volume(job, workers=1, say=lambda s: None)
    monkeypatch.setattr(ZarrStore, "write", real)
    lines: list[str] = []
    chunked.predict_volume(job, workers=1, say=lines.append)
    assert lines[0].endswith("2 of 27 chunks were written by an earlier run; predicting the other 25")
    for a, b in zip(_arrays(job, "probabilities", "labels"), _arrays(reference, "probabilities", "labels")):
        np.testing.assert_array_equal(a, b)


def test_an_hdf5_output_killed_part_way_is_finished_and_not_sent_to_a_cluster(model3d, volume, tmp_path, monkeypatch) -> None:
    reference = _job(model3d, volume, tmp_path / "ref.h5", "h5")
    chunked.predict_volume(reference, workers=1, say=lambda s: None)
    job = replace(reference, output=str(tmp_path / "out.h5"))
    real, calls = chunked.predict_chunk, []

    def killed_at_the_fifth(job, index):
        calls.append(index)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(job, index)

    monkeypatch.setattr(chunked, "predict_chunk", killed_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        chunked.predict_volume(job, workers=1, say=lambda s: None)
    monkeypatch.setattr(chunked, "predict_chunk", real)
    assert _arrays(job, "done")[0].sum() == 4
    chunked.predict_volume(job, workers=1, say=lambda s: None)
    for a, b in zip(_arrays(job, "probabilities", "labels"), _arrays(reference, "probabilities", "labels")):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SegflowError, match=r"^--scheduler tcp://127.0.0.1:9: an h5 output is written by one process; write Zarr or OME-Zarr"):
        chunked.predict_volume(replace(job, output=str(tmp_path / "c.h5")), scheduler="tcp://127.0.0.1:9", say=lambda s: None)
