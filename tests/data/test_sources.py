"""Data sources: the same seeded patches from image folders, Zarr (v2, v3, OME-Zarr) and HDF5, in memory or read
patch by patch; image and mask inside one container; axis orders; bad containers as one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from conftest import tiny_config
from PIL import Image

from segflow.config.loader import build_config
from segflow.data.sources import Hdf5Source, ZarrSource, open_source
from segflow.errors import SegflowError
from segflow.io.lazy import LazyArray
from segflow.training.datasets import load_data, make_datasets


def _folder_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


def _write(kind: str, path: Path, arrays: dict[str, np.ndarray], axes_from_zyx=lambda a: a) -> Path:
    """One container per array, named as the TIFFs, in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        a = axes_from_zyx(a)
        if kind in ("tiff", "tiff_tiled"):  # uncompressed: memory-mapped; tiled and compressed: tifffile's Zarr view
            tiled = dict(compression="zlib", tile=(16, 16)) if kind == "tiff_tiled" else {}
            tifffile.imwrite(path / f"{name}.tif", a, **tiled)
        elif kind == "h5":
            with h5py.File(path / f"{name}.h5", "w") as f:
                f.create_dataset("data", data=a, chunks=True)
        elif kind == "ome":
            g = zarr.open_group(str(path / f"{name}.zarr"), mode="w", zarr_format=2)
            g.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}, {"path": "1"}]}]
            g.create_array("0", data=a, chunks=tuple(min(16, n) for n in a.shape))
            g.create_array("1", data=a[..., ::2, ::2], chunks=tuple(min(16, n) for n in a.shape))
        else:
            fmt = 2 if kind == "zarr2" else 3
            zarr.create_array(str(path / f"{name}.zarr"), data=a, chunks=tuple(min(16, n) for n in a.shape), zarr_format=fmt)
    return path


def _patches(cfg) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two passes of training patches (random draws, augmented) and the validation grid."""
    train, val = make_datasets(cfg, load_data(cfg))
    train.set_random_state(seed=3)
    items = [train[k % len(train)] for k in range(2 * len(train))] + [val[k] for k in range(len(val))]
    return [(it["image"], it["label"]) for it in items]


@pytest.mark.parametrize("kind", ["zarr2", "zarr3", "ome", "h5", "tiff", "tiff_tiled"])
@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_the_same_seeded_patches_from_every_source(tmp_path, data2d, data3d, kind, in_memory, ndim) -> None:
    data = data2d if ndim == "2D" else data3d
    sections = dict(DATA={"EXTRACT_RANDOM_PATCH": True, "NORMALIZATION": {"TYPE": "zero_mean_unit_variance"}}, AUGMENTOR={"ENABLE": True, "HFLIP": True})
    reference = _patches(build_config(tiny_config(data, ndim, **sections))[0])
    x = _write(kind, tmp_path / "x", _folder_arrays(data / "train/x"))
    y = _write(kind, tmp_path / "y", _folder_arrays(data / "train/y"))
    tree = tiny_config(data, ndim, **sections)
    tree["DATA"]["TRAIN"].update(PATH=str(x), GT_PATH=str(y), IN_MEMORY=in_memory)
    cfg = build_config(tree)[0]
    loaded = load_data(cfg)
    assert all(isinstance(s.image, np.ndarray) != (not in_memory) for s in loaded.train + loaded.val)
    got = _patches(cfg)
    assert len(got) == len(reference)
    for (a, b), (c, d) in zip(got, reference):
        np.testing.assert_array_equal(a, c)  # bit-identical: normalised with the same statistics, same draws
        np.testing.assert_array_equal(b, d)


def test_lazy_tiff_reads_a_memory_map_or_the_tiles_of_a_patch_with_the_files_axes(tmp_path) -> None:
    """An uncompressed stack is memory-mapped; a tiled, compressed ImageJ hyperstack (ZCYX) is read through tifffile's
    Zarr view, one tile at a time, and seen (z, y, x, c) as reading it whole gives; PNGs beside TIFFs: in memory."""
    from segflow.data.sources import FolderSource, TiffSource

    rng = np.random.default_rng(0)
    stack, hyper = rng.integers(0, 255, (6, 40, 48), np.uint8), rng.integers(0, 60000, (4, 2, 64, 64), np.uint16)
    (tmp_path / "x").mkdir()
    tifffile.imwrite(tmp_path / "x/plain.tif", stack)
    tifffile.imwrite(tmp_path / "x/hyper.tif", hyper, imagej=True, metadata={"axes": "ZCYX"}, compression="zlib", tile=(16, 16))
    tree = tiny_config(tmp_path, "3D", DATA={"PATCH_SIZE": "(4, 16, 16, 2)", "TRAIN": {"IN_MEMORY": False}})
    cfg = build_config(tree)[0]
    assert isinstance(open_source(cfg, str(tmp_path / "x"), "train"), TiffSource)
    assert isinstance(open_source(cfg, str(tmp_path / "x"), "validation"), FolderSource)  # DATA.VAL.IN_MEMORY stays true
    image = TiffSource().lazy_array(cfg, tmp_path / "x/hyper.tif", None, "TZCYX", "K", True)
    assert isinstance(image.stored, zarr.Array) and image.stored.chunks == (1, 1, 16, 16)
    assert image.shape == (4, 64, 64, 2)
    np.testing.assert_array_equal(image[1:3, 10:30, 40:60], np.moveaxis(hyper, 1, -1)[1:3, 10:30, 40:60])
    plain = TiffSource().lazy_array(cfg, tmp_path / "x/plain.tif", None, "TZCYX", "K", False)
    assert isinstance(plain.stored, np.memmap) and plain.shape == (6, 40, 48)
    np.testing.assert_array_equal(plain[2:5, 3:19], stack[2:5, 3:19])
    Image.fromarray(stack[0]).save(tmp_path / "x/other.png")
    assert isinstance(open_source(cfg, str(tmp_path / "x"), "train"), FolderSource)


def test_lazy_tiff_masks_and_axes_that_cannot_be_told_are_one_clear_line(tmp_path) -> None:
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
    tifffile.imwrite(tmp_path / "x/a.tif", np.zeros((8, 32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "y/a.tif", np.full((8, 32, 32), 0.5, np.float32))
    assert _bad(tmp_path) == f"{tmp_path}/y/a.tif: mask holds non-integer values (float32); masks must hold integer class ids 0..N_CLASSES-1"
    tifffile.imwrite(tmp_path / "x/a.tif", np.zeros((2, 3, 8, 32, 32), np.uint8))  # QQQYX: three generic axes
    assert _bad(tmp_path) == (
        f"{tmp_path}/x/a.tif: cannot tell the axes of the TIFF (tifffile reads QQQYX for (2, 3, 8, 32, 32)); "
        "set DATA.TRAIN.INPUT_IMG_AXES_ORDER to them (letters of TZCYX)"
    )
    tifffile.imwrite(tmp_path / "x/a.tif", np.zeros((8, 32, 32), np.uint8), compression="zlib", tile=(16, 16))
    with tifffile.TiffFile(tmp_path / "x/a.tif") as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(tmp_path / "x/a.tif", "r+b") as f:  # the first tile's compressed bytes damaged
        f.seek(offset)
        f.write(b"\xff" * count)
    tifffile.imwrite(tmp_path / "y/a.tif", np.zeros((8, 32, 32), np.uint8))
    tree = tiny_config(tmp_path, "3D", DATA={"PATCH_SIZE": "(8, 32, 32, 1)"})
    tree["DATA"]["TRAIN"] = {"PATH": str(tmp_path / "x"), "GT_PATH": str(tmp_path / "y"), "IN_MEMORY": False}
    image = load_data(build_config(tree)[0]).train[0].image
    with pytest.raises(SegflowError, match=rf"^{tmp_path}/x/a.tif: cannot read \[0:6, :, :, :\] \(.*\); the file may be corrupt or truncated$"):
        image[0:6]  # the training part: the first 6 of 8 slices


def test_image_and_mask_inside_one_container_in_another_axis_order(tmp_path, data3d) -> None:
    """BiaPy's INPUT_ZARR_MULTIPLE_DATA: raw and labels in each file; images stored CZYX, masks ZYX."""
    images, masks = _folder_arrays(data3d / "train/x"), _folder_arrays(data3d / "train/y")
    (tmp_path / "c").mkdir()
    for name in images:
        g = zarr.open_group(str(tmp_path / "c" / f"{name}.zarr"), mode="w")
        g.create_array("volumes/raw", data=images[name][None], chunks=(1, 8, 32, 32))
        g.create_array("volumes/labels", data=masks[name], chunks=(8, 32, 32))
    reference = _patches(build_config(tiny_config(data3d, "3D"))[0])
    tree = tiny_config(data3d, "3D")
    tree["DATA"]["TRAIN"] = {
        "PATH": str(tmp_path / "c"), "GT_PATH": str(tmp_path / "c"), "IN_MEMORY": False, "INPUT_ZARR_MULTIPLE_DATA": True,
        "INPUT_ZARR_MULTIPLE_DATA_RAW_PATH": "volumes/raw", "INPUT_ZARR_MULTIPLE_DATA_GT_PATH": "volumes/labels",
        "INPUT_IMG_AXES_ORDER": "CZYX", "INPUT_MASK_AXES_ORDER": "ZYX",
    }  # fmt: skip
    cfg = build_config(tree)[0]
    for (a, b), (c, d) in zip(_patches(cfg), reference, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert isinstance(open_source(cfg, str(tmp_path / "c"), "train"), ZarrSource)
    assert isinstance(open_source(cfg, str(tmp_path / "v.h5"), "train"), Hdf5Source)


def test_a_single_large_volume_is_split_without_reading_it(tmp_path) -> None:
    """One lazy volume: the validation part is the end of its first axis, still lazy; shapes need no read."""
    vol = np.random.default_rng(0).integers(0, 255, (40, 32, 32), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "x.zarr"), data=vol, chunks=(8, 32, 32))
    zarr.create_array(str(tmp_path / "y.zarr"), data=(vol > 128).astype(np.uint8), chunks=(8, 32, 32))
    tree = tiny_config(tmp_path, "3D", DATA={"VAL": {"SPLIT_TRAIN": 0.25}})
    tree["DATA"]["TRAIN"] = {"PATH": str(tmp_path / "x.zarr"), "GT_PATH": str(tmp_path / "y.zarr"), "IN_MEMORY": False}
    data = load_data(build_config(tree)[0])
    (t,), (v,) = data.train, data.val
    assert t.image.shape == (30, 32, 32, 1) and v.image.shape == (10, 32, 32, 1) and v.mask.shape == (10, 32, 32)
    assert not isinstance(v.image, np.ndarray)
    np.testing.assert_array_equal(v.image[2:4, 5, :, 0], vol[32:34, 5])
    np.testing.assert_array_equal(v.mask[...], vol[30:] > 128)


def _h5(path: Path, **datasets: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f[name] = data


def _bad(root: Path, **train: object) -> str:
    tree = tiny_config(root, "3D")
    tree["DATA"]["TRAIN"] = {"PATH": str(root / "x"), "GT_PATH": str(root / "y"), "IN_MEMORY": False, **train}
    with pytest.raises(SegflowError) as err:
        load_data(build_config(tree)[0])
    return str(err.value)


def test_bad_containers_are_one_clear_line(tmp_path) -> None:
    """Each case in its own folder: HDF5 files stay open while a failed load is still referenced."""
    vol, narrow = np.zeros((16, 32, 32), np.uint8), np.zeros((16, 32, 30), np.uint8)
    _h5(tmp_path / "two/x/a.h5", raw=vol, other=vol)
    _h5(tmp_path / "two/y/a.h5", seg=vol)
    msg = _bad(tmp_path / "two")
    assert msg.startswith(f"{tmp_path}/two/x/a.h5: holds 2 datasets (other, raw); give one dataset per file, or set DATA.TRAIN.INPUT_ZARR_MULTIPLE_DATA")
    msg = _bad(tmp_path / "two", INPUT_ZARR_MULTIPLE_DATA=True, INPUT_ZARR_MULTIPLE_DATA_RAW_PATH="raw", INPUT_ZARR_MULTIPLE_DATA_GT_PATH="labels")
    assert msg.startswith(f"{tmp_path}/two/x/a.h5: no dataset 'labels' inside (it holds: other, raw)")
    _h5(tmp_path / "shape/x/a.h5", raw=vol)
    _h5(tmp_path / "shape/y/a.h5", seg=narrow)
    assert _bad(tmp_path / "shape") == (
        f"train: image {tmp_path}/shape/x/a.h5 has shape (16, 32, 32) but its mask {tmp_path}/shape/y/a.h5 has (16, 32, 30); "
        "an image and its mask must have the same size"
    )
    msg = _bad(tmp_path / "shape", INPUT_IMG_AXES_ORDER="CYX")
    assert msg.startswith(f"{tmp_path}/shape/x/a.h5: the axes order CYX lacks Z, needed for a 3D image; set DATA.TRAIN.INPUT_IMG_AXES_ORDER")
    _h5(tmp_path / "values/x/a.h5", raw=vol)
    _h5(tmp_path / "values/y/a.h5", seg=np.full((16, 32, 32), 5, np.uint8))
    assert _bad(tmp_path / "values").startswith(f"{tmp_path}/values/y/a.h5: mask values 5 are outside the classes 0..1 of MODEL.N_CLASSES=2")


def test_a_chunk_that_fails_to_decode_names_the_store(tmp_path) -> None:
    zarr.create_array(str(tmp_path / "v.zarr"), data=np.ones((8, 16, 16), np.uint8), chunks=(4, 16, 16), zarr_format=2)
    (tmp_path / "v.zarr" / "1.0.0").write_bytes(b"not a compressed chunk")
    lazy = LazyArray(lambda: zarr.open(str(tmp_path / "v.zarr"), mode="r"), "ZYX", 3, f"{tmp_path}/v.zarr", "K")
    assert lazy[0:4].sum() == 4 * 256
    with pytest.raises(SegflowError, match=r"v.zarr: cannot read \[4:8, :, :, :\] \(.*\); the file may be corrupt or truncated"):
        lazy[4:8]


@pytest.mark.parametrize("sampling", [{"PROBABILITY_MAP": True, "W_FOREGROUND": 0.9, "W_BACKGROUND": 0.1}, {"CLASS_BALANCED_SAMPLING": True}])
def test_probability_map_and_class_balancing_draw_the_same_patches_from_lazy_masks(tmp_path, data2d, sampling) -> None:
    """Centres come from pixel counts per block, made slab by slab: the same draws whether masks are in memory or not."""
    sections = dict(DATA={"EXTRACT_RANDOM_PATCH": True, **sampling})
    reference = _patches(build_config(tiny_config(data2d, **sections))[0])
    x = _write("zarr3", tmp_path / "x", _folder_arrays(data2d / "train/x"))
    y = _write("zarr3", tmp_path / "y", _folder_arrays(data2d / "train/y"))
    tree = tiny_config(data2d, **sections)
    tree["DATA"]["TRAIN"].update(PATH=str(x), GT_PATH=str(y), IN_MEMORY=False)
    cfg = build_config(tree)[0]
    assert not isinstance(load_data(cfg).train[0].mask, np.ndarray)
    for (a, b), (c, d) in zip(_patches(cfg), reference, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_encodings_that_need_whole_masks_say_so_for_lazy_masks(tmp_path, data2d) -> None:
    x = _write("zarr3", tmp_path / "x", _folder_arrays(data2d / "train/x"))
    y = _write("zarr3", tmp_path / "y", _folder_arrays(data2d / "train/y"))
    tree = tiny_config(data2d, PROBLEM={"SEMANTIC_SEG": {"ENCODING": "region"}})
    tree["DATA"]["TRAIN"].update(PATH=str(x), GT_PATH=str(y), IN_MEMORY=False)
    cfg = build_config(tree)[0]
    with pytest.raises(SegflowError, match=r"img_\d+.zarr: PROBLEM.SEMANTIC_SEG.ENCODING region needs every mask pixel at once.*set DATA.TRAIN.IN_MEMORY"):
        make_datasets(cfg, load_data(cfg))


def test_check_describes_a_zarr_source_from_metadata_and_a_bounded_sample(tmp_path, data3d, cli, monkeypatch) -> None:
    from conftest import write_yaml

    from segflow.data import normalize

    x = _write("zarr2", tmp_path / "x", _folder_arrays(data3d / "train/x"))
    y = _write("zarr2", tmp_path / "y", _folder_arrays(data3d / "train/y"))
    tree = tiny_config(data3d, "3D", TEST={"ENABLE": False})
    tree["DATA"]["TRAIN"] = {"PATH": str(x), "GT_PATH": str(y), "IN_MEMORY": False}
    config = write_yaml(tmp_path / "c.yaml", tree)
    monkeypatch.setattr(normalize, "PERCENTILE_SAMPLE", 48 * 48 * 4)  # 4 of a mask's 16 slices, then no more masks
    code, out, err = cli("check", "--config", config)
    assert code == 0, err
    assert f"train: 2 zarr arrays with masks from {x}" in out
    assert f"  {x}/img_000.zarr: shape (16, 48, 48, 1), uint8, chunks (16, 16, 16), read patch by patch" in out
    assert "  masks: values checked and counted on a sample of 9,216 of their 73,728 pixels (12.5%)" in out  # one mask: the cap
    assert "  classes (pixel fraction): 0: " in out and out.rstrip().endswith("OK: config and data are ready")


@pytest.mark.parametrize("kind", ["h5", "tiff_tiled"])
def test_training_read_patch_by_patch_in_a_worker_process(tmp_path, data2d, cli, kind) -> None:
    """A real run: the loader's worker process opens its own HDF5 handle (h5py's must not cross a fork), or its own
    TIFF file under tifffile's Zarr view."""
    from conftest import write_yaml

    x = _write(kind, tmp_path / "x", _folder_arrays(data2d / "train/x"))
    y = _write(kind, tmp_path / "y", _folder_arrays(data2d / "train/y"))
    tree = tiny_config(data2d, SYSTEM={"NUM_WORKERS": 1}, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False})
    tree["DATA"]["TRAIN"] = {"PATH": str(x), "GT_PATH": str(y), "IN_MEMORY": False}
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path / "res", "--name", "h")
    assert code == 0, err
    assert "Training on 3 image(s), 12 patches per epoch; validating on 1 image(s), 4 patches" in out
    assert (tmp_path / "res/h/checkpoints/h_1-checkpoint-last.pth").is_file()


def test_validation_of_a_lazy_volume_is_a_fixed_spread_of_its_grid(tmp_path, monkeypatch, capsys) -> None:
    from segflow.training import datasets

    vol = np.random.default_rng(1).integers(0, 255, (64, 64, 64), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "x.zarr"), data=vol, chunks=(16, 64, 64))
    zarr.create_array(str(tmp_path / "y.zarr"), data=(vol > 128).astype(np.uint8), chunks=(16, 64, 64))
    tree = tiny_config(tmp_path, "3D", DATA={"PATCH_SIZE": "(8, 16, 16, 1)", "VAL": {"SPLIT_TRAIN": 0.5}})
    tree["DATA"]["TRAIN"] = {"PATH": str(tmp_path / "x.zarr"), "GT_PATH": str(tmp_path / "y.zarr"), "IN_MEMORY": False}
    cfg = build_config(tree)[0]
    data = load_data(cfg)
    _, full = make_datasets(cfg, data)
    assert len(full) == 4 * 4 * 4  # the held-out 32x64x64 in 8x16x16 patches
    monkeypatch.setattr(datasets, "LAZY_VAL_PATCHES", 10)
    _, capped = make_datasets(cfg, data)
    assert capped.index == [full.index[k] for k in (0, 7, 14, 21, 28, 35, 42, 49, 56, 63)]
    assert "Validating on 10 of the 64 grid patches of the validation data read patch by patch" in capsys.readouterr().out


def test_a_reader_process_that_fails_reports_the_file_in_one_line(tmp_path, cli) -> None:
    """A chunk that fails to decode in a data-loading worker: the worker's message, not its traceback, exit 2."""
    from conftest import write_yaml

    rng = np.random.default_rng(0)
    zarr.create_array(str(tmp_path / "x.zarr"), data=rng.integers(0, 255, (128, 128), dtype=np.uint8), chunks=(32, 32), zarr_format=2)
    zarr.create_array(str(tmp_path / "y.zarr"), data=(rng.random((128, 128)) > 0.5).astype(np.uint8), chunks=(32, 32), zarr_format=2)
    (tmp_path / "x.zarr" / "2.1").write_bytes(b"not a compressed chunk")  # the mask check reads masks only
    tree = tiny_config(tmp_path, SYSTEM={"NUM_WORKERS": 1}, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False},
                       DATA={"EXTRACT_RANDOM_PATCH": True, "VAL": {"SPLIT_TRAIN": 0.0}, "TRAIN": {"REPLICATE": 40}})  # fmt: skip
    tree["DATA"]["TRAIN"].update(PATH=str(tmp_path / "x.zarr"), GT_PATH=str(tmp_path / "y.zarr"), IN_MEMORY=False)
    code, _, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path / "res", "--name", "w")
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert re.fullmatch(
        rf"segflow: error: {tmp_path}/x.zarr: cannot read \[\d+:\d+, \d+:\d+, :\] \(RuntimeError: .*\); the file may be corrupt or "
        r"truncated \(in data-loading worker process 0\)", line
    ), line
