"""LMDB training data: ``segflow build-lmdb`` (records with and without tiling, the seeded split, class ids,
atomic writes) and the LMDB source (the same seeded patches as the tiles in an image folder, in memory or read
from the memory map in each worker process); bad input as one clear line."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest
import tifffile
import torch
from conftest import tiny_config
from test_sources import _patches

import segflow.app.build_lmdb as builder
from segflow.app.build_lmdb import build_lmdb
from segflow.config.loader import build_config
from segflow.data.sources import LmdbSource, lmdb_records, open_source
from segflow.errors import SegflowError
from segflow.training.datasets import load_data, make_datasets

RANDOM_PATCHES = dict(
    DATA={"EXTRACT_RANDOM_PATCH": True, "NORMALIZATION": {"TYPE": "zero_mean_unit_variance"}},
    AUGMENTOR={"ENABLE": True, "HFLIP": True},
)
EXISTS = "already exists; pass --overwrite to replace it, or choose another --dataset_name or --output_folder"


def _build(out: Path, data: Path, **options: object) -> dict[str, Path]:
    return build_lmdb(str(data / "train/x"), str(data / "train/y"), str(out), "D", **options)


def _read(db: Path) -> tuple[dict, list[tuple[dict, np.ndarray, np.ndarray]]]:
    """The meta and every record of ``db``, read with lmdb and numpy alone (no segflow code)."""
    env = lmdb.open(str(db), readonly=True, lock=False)
    with env.begin() as txn:
        meta = json.loads(txn.get(b"__meta__"))
        get = lambda kind, i: txn.get(f"{kind}/{i:08d}".encode())  # noqa: E731
        records = [
            (json.loads(get("info", i)), np.load(io.BytesIO(get("image", i))), np.load(io.BytesIO(get("mask", i))))
            for i in range(meta["records"])
        ]
    env.close()
    return meta, records


def _folder(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> tuple[str, str]:
    for sub, arrays in (("x", images), ("y", masks)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, a in arrays.items():
            tifffile.imwrite(root / sub / name, a, photometric="rgb" if a.ndim == 3 else None)
    return str(root / "x"), str(root / "y")


def _lmdb_config(data: Path, dbs: dict[str, Path], in_memory: bool = True, **sections: dict) -> dict:
    tree = tiny_config(data, **sections)
    tree["DATA"]["TRAIN"].update(PATH=str(dbs["train"]), GT_PATH="ignored", IN_MEMORY=in_memory)
    tree["DATA"]["VAL"] = {"FROM_TRAIN": False, "PATH": str(dbs["val"]), "GT_PATH": "ignored", "IN_MEMORY": in_memory}
    return tree


@pytest.mark.parametrize("tile", [None, 32, 48])
def test_records_with_and_without_tiling(tmp_path, data2d, tile) -> None:
    """4 images of 64x64: 4 records, or 4 tiles each (48: the last tile moved back to end at the border)."""
    dbs = _build(tmp_path, data2d, **({"use_tiling": True, "tile_size": tile} if tile else {}))
    parts = {part: _read(db) for part, db in dbs.items()}
    per = 1 if tile is None else 4  # records per image; 3 of the 4 images train (round(0.8 * 4))
    assert [parts[p][0]["records"] for p in ("train", "val")] == [3 * per, per]
    files = {p: {info["image_file"] for info, _, _ in records} for p, (_, records) in parts.items()}
    assert len(files["train"]) == 3 and len(files["val"]) == 1 and not files["train"] & files["val"]  # whole images
    size = tile or 64
    origins = set()
    for _, records in parts.values():
        for info, image, mask in records:
            y, x = info["origin"]
            origins.add((y, x))
            source = tifffile.imread(data2d / "train/x" / info["image_file"])[y : y + size, x : x + size]
            np.testing.assert_array_equal(image, source[..., None])  # (y, x, c) in the stored dtype
            source = tifffile.imread(data2d / "train/y" / info["mask_file"])[y : y + size, x : x + size]
            np.testing.assert_array_equal(mask, source)
            assert info["classes"] == np.unique(mask).tolist()
            assert info["name"] == (Path(info["image_file"]).stem + (f"_y{y}_x{x}" if tile else ""))
    last = {None: 0, 32: 32, 48: 16}[tile]
    assert sorted(origins) == sorted({(0, 0), (0, last), (last, 0), (last, last)})


def test_the_seeded_split_is_reproducible_and_recorded(tmp_path, data2d) -> None:
    names = {}
    for run, seed in (("a", 5), ("b", 5), ("c", 6)):
        dbs = _build(tmp_path / run, data2d, seed=seed, train_fraction=0.75, use_tiling=True, tile_size=16)
        names[run] = {part: [info["name"] for info, _, _ in _read(db)[1]] for part, db in dbs.items()}
    assert names["a"] == names["b"] != names["c"]
    train, val = names["a"]["train"], names["a"]["val"]
    assert (len(train), len(val)) == (48, 16) and not {n.split("_y")[0] for n in train} & {n.split("_y")[0] for n in val}
    origin = lambda n: (n.split("_y")[0], *map(int, n.split("_y")[1].split("_x")))  # noqa: E731
    assert train == sorted(train, key=origin)  # the folders' order, not the shuffle's
    meta = _read(tmp_path / "a/D-val.lmdb")[0]
    assert meta == {
        "format": "segflow-lmdb", "version": 1, "dataset_name": "D", "channels": 1, "dtype": "uint8",
        "mask_dtypes": ["uint8"], "seed": 5, "train_fraction": 0.75, "use_tiling": True, "tile_size": 16,
        "counts": {"train": 48, "val": 16},
        "image_folder": str(data2d / "train/x"), "mask_folder": str(data2d / "train/y"), "split": "val", "records": 16,
    }  # fmt: skip


def test_class_ids_of_each_record_and_the_mask_check_that_uses_them(tmp_path) -> None:
    mask = np.zeros((32, 96), np.uint8)
    mask[:, 40:60], mask[:, 70:] = 3, 1
    image = np.arange(32 * 96, dtype=np.uint16).reshape(32, 96)
    x, y = _folder(tmp_path / "in", {"a.tif": image, "b.tif": image}, {"a.tif": mask, "b.tif": mask[:, ::-1]})
    dbs = build_lmdb(x, y, str(tmp_path / "out"), "C", use_tiling=True, tile_size=32)
    classes = {info["name"]: info["classes"] for db in dbs.values() for info, _, _ in _read(db)[1]}
    assert classes == {
        "a_y0_x0": [0], "a_y0_x32": [0, 3], "a_y0_x64": [0, 1], "b_y0_x0": [0, 1], "b_y0_x32": [0, 3], "b_y0_x64": [0],
    }  # fmt: skip
    assert _read(dbs["train"])[0]["dtype"] == "uint16"
    tree = _lmdb_config(tmp_path, dbs)
    outside = rf"^{tmp_path}/out/C-(train|val).lmdb/[ab]_y0_x32: mask values 3 are outside the classes 0..1"
    with pytest.raises(SegflowError, match=outside):
        load_data(build_config(tree)[0])
    tree["MODEL"]["N_CLASSES"] = 4
    assert len(load_data(build_config(tree)[0]).train) == 3  # one image's 3 tiles: images are split whole


@pytest.mark.parametrize("in_memory", [True, False])
def test_the_same_seeded_patches_as_the_tiles_in_an_image_folder(tmp_path, data2d, in_memory) -> None:
    """Random 32x32 patches of 48x48 tiles, augmented, normalised per tile, and the validation grid: bit-identical."""
    dbs = _build(tmp_path / "db", data2d, use_tiling=True, tile_size=48)
    for part, db in dbs.items():  # each record's tile cut from its source files, named in the database's order
        cut = {f"{k:03d}.tif": (info["image_file"], *info["origin"]) for k, (info, _, _) in enumerate(_read(db)[1])}
        tiles = [
            {k: tifffile.imread(data2d / "train" / sub / f)[y : y + 48, x : x + 48] for k, (f, y, x) in cut.items()}
            for sub in ("x", "y")
        ]
        _folder(tmp_path / "tiles" / part, *tiles)
    tree = tiny_config(data2d, **RANDOM_PATCHES)
    tree["DATA"]["TRAIN"].update(PATH=str(tmp_path / "tiles/train/x"), GT_PATH=str(tmp_path / "tiles/train/y"))
    val = {"PATH": str(tmp_path / "tiles/val/x"), "GT_PATH": str(tmp_path / "tiles/val/y")}
    tree["DATA"]["VAL"] = {"FROM_TRAIN": False, **val}
    reference = _patches(build_config(tree)[0])
    cfg = build_config(_lmdb_config(data2d, dbs, in_memory, **RANDOM_PATCHES))[0]
    assert isinstance(open_source(cfg, cfg.DATA.TRAIN.PATH, "train"), LmdbSource)
    loaded = load_data(cfg)
    assert (len(loaded.train), len(loaded.val)) == (12, 4)
    assert all(isinstance(s.image, np.ndarray) == in_memory for s in loaded.train + loaded.val)
    got = _patches(cfg)
    assert len(got) == len(reference) > 0
    for (a, b), (c, d) in zip(got, reference):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_lazy_records_are_opened_again_in_each_worker_process(tmp_path, data2d) -> None:
    dbs = _build(tmp_path, data2d, use_tiling=True, tile_size=48)
    cfg = build_config(_lmdb_config(data2d, dbs, in_memory=False))[0]
    data = load_data(cfg)
    _, val = make_datasets(cfg, data)
    expected = [val[k]["image"] for k in range(len(val))]
    loader = torch.utils.data.DataLoader(val, batch_size=None, num_workers=2, multiprocessing_context="fork")
    got = [item["image"].numpy() for item in loader]
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    global _FORKED
    _FORKED = image = data.train[0].image
    with multiprocessing.get_context("fork").Pool(1) as pool:
        rows, owners, child = pool.apply(_read_forked)
    np.testing.assert_array_equal(rows, image[5:9])
    assert owners == {child} != {os.getpid()}  # the child released what it inherited and opened its own
    copy = pickle.loads(pickle.dumps(image))  # a spawned worker: the handle is not pickled, the copy opens its own
    assert copy._array is None
    np.testing.assert_array_equal(copy[5:9, 3:30], image[5:9, 3:30])


_FORKED = None  # the lazy image a forked process reads: inherited, not pickled


def _read_forked() -> tuple[np.ndarray, set[int], int]:
    return _FORKED[5:9], {key[0] for key in lmdb_records._READERS}, os.getpid()


def test_an_interrupted_build_leaves_nothing_and_keeps_what_it_would_replace(tmp_path, data2d, monkeypatch) -> None:
    records = builder.records
    monkeypatch.setattr(builder, "records", lambda plans: _interrupt(records(plans)))
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "out", data2d)
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.setattr(builder, "records", records)
    _build(tmp_path / "out", data2d, seed=1)
    monkeypatch.setattr(builder, "records", lambda plans: _interrupt(records(plans)))
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "out", data2d, seed=2, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["D-train.lmdb", "D-val.lmdb"]
    assert _read(tmp_path / "out/D-train.lmdb")[0]["seed"] == 1


def _interrupt(records):
    """The first record, then Ctrl-C."""
    yield next(records)
    raise KeyboardInterrupt


def test_overwrite_replaces_a_database_already_read(tmp_path, data2d) -> None:
    """The source reads a database rebuilt in place afresh, not through the replaced file's memory map."""
    dbs = _build(tmp_path, data2d, seed=1)
    cfg = build_config(_lmdb_config(data2d, dbs, in_memory=False))[0]
    before = [s.name for s in load_data(cfg).train]
    _build(tmp_path, data2d, seed=2, use_tiling=True, tile_size=32, overwrite=True)
    after = load_data(cfg).train
    assert len(before) == 3 and len(after) == 12 and after[0].image.shape == (32, 32, 1)
    assert not list(tmp_path.glob(".D-building-*"))


def _error(*args: object, **options: object) -> str:
    with pytest.raises(SegflowError) as err:
        build_lmdb(*(str(a) for a in args), **options)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_input_to_build_lmdb_is_one_clear_line(tmp_path, data2d) -> None:
    x, y = data2d / "train/x", data2d / "train/y"
    out = tmp_path / "out"
    missing = f"--image_folder: folder {tmp_path}/no does not exist; check the path"
    assert _error(tmp_path / "no", y, out, "D") == missing
    assert _error(x, y, out, "D", image_format="png") == (
        f"--image_folder {x}: holds no .png images (only tif); set --image_format to theirs, e.g. --image_format tif"
    )
    gray, rgb = np.zeros((32, 32), np.uint8), np.zeros((32, 32, 3), np.uint8)
    a, b = _folder(tmp_path / "two", {"a.tif": gray, "b.tif": gray}, {"a.tif": gray})
    assert _error(a, b, out, "D").startswith(f"build-lmdb: 2 images in {a} but 1 masks in {b} (without a partner")
    a, b = _folder(tmp_path / "shape", {"a.tif": gray, "b.tif": gray}, {"a.tif": gray, "b.tif": gray[:, :30]})
    assert _error(a, b, out, "D") == (
        f"build-lmdb: image {a}/b.tif has shape (32, 32) but its mask {b}/b.tif has (32, 30); "
        "an image and its mask must have the same size"
    )
    a, b = _folder(tmp_path / "channels", {"a.tif": gray, "b.tif": rgb}, {"a.tif": gray, "b.tif": gray})
    assert _error(a, b, out, "D").startswith(f"{a}/b.tif: image has 3 channel(s) of uint8 but a.tif has 1 of uint8; ")
    assert _error(x, y, out, "D", use_tiling=True, tile_size=128) == (
        f"{x}/img_000.tif: image of shape (64, 64) is smaller than --tile_size 128; "
        "use a smaller --tile_size, or leave out --use_tiling"
    )
    a, b = _folder(tmp_path / "one", {"a.tif": gray}, {"a.tif": gray})
    assert _error(a, b, out, "D").startswith(f"--image_folder {a}: gives 1 record; a train and a val database need")
    assert _error(x, y, out, "D", train_fraction=1.0).startswith("--train_fraction 1.0: must be between 0 and 1")
    assert _error(x, y, out, "a/b").startswith("--dataset_name 'a/b': give a plain name")
    (tmp_path / "file").write_text("")
    is_file = f"--output_folder {tmp_path}/file: is a file, not a folder; choose a folder"
    assert _error(x, y, tmp_path / "file", "D") == is_file
    assert _error(x, y, tmp_path / "file/d", "D").startswith(f"--output_folder {tmp_path}/file/d: cannot write there (")
    assert not out.exists() or list(out.iterdir()) == []  # nothing left behind by any of them
    _build(out, data2d)
    assert _error(x, y, out, "D") == f"{out}/D-train.lmdb: {EXISTS}"


def test_a_database_that_does_not_fit_the_config_is_one_clear_line(tmp_path, data2d) -> None:
    dbs = _build(tmp_path, data2d)
    db = dbs["train"]

    def load(tree: dict) -> str:
        with pytest.raises(SegflowError) as err:
            load_data(build_config(tree)[0])
        assert "\n" not in str(err.value)
        return str(err.value)

    assert load(_lmdb_config(data2d, dbs, DATA={"PATCH_SIZE": "(32, 32, 3)"})) == (
        f"{db}: its images have 1 channel(s) but DATA.PATCH_SIZE (32, 32, 3) ends in 3; "
        "set the last value of DATA.PATCH_SIZE to 1, or build the database from 3-channel images"
    )
    tree = _lmdb_config(data2d, dbs, PROBLEM={"NDIM": "3D"}, DATA={"PATCH_SIZE": "(16, 32, 32, 1)"})
    assert load(tree) == f"{db}: holds 2D records ((y, x, c) images) but PROBLEM.NDIM is 3D; set PROBLEM.NDIM: 2D"
    (tmp_path / "empty.lmdb").mkdir()
    missing = {"train": tmp_path / "missing.lmdb", "val": dbs["val"]}
    assert load(_lmdb_config(data2d, missing)).startswith(f"train: {tmp_path}/missing.lmdb does not exist; build it")
    empty = {"train": tmp_path / "empty.lmdb", "val": dbs["val"]}
    assert load(_lmdb_config(data2d, empty)).startswith(f"{tmp_path}/empty.lmdb: not an LMDB database (")
    env = lmdb.open(str(tmp_path / "other.lmdb"))
    with env.begin(write=True) as txn:
        txn.put(b"key", b"value")
    env.close()
    other = {"train": tmp_path / "other.lmdb", "val": dbs["val"]}
    assert load(_lmdb_config(data2d, other)).startswith(f"{tmp_path}/other.lmdb: an LMDB database without a __meta__")


def test_segflow_build_lmdb(tmp_path, data2d, cli) -> None:
    folders = ["--image_folder", data2d / "train/x", "--mask_folder", data2d / "train/y", "--output_folder", tmp_path]
    args = ["build-lmdb", *folders, "--dataset_name", "D", "--use_tiling", "--tile_size", "32"]
    code, out, err = cli(*args)
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {tmp_path}/D-train.lmdb (12 records) and {tmp_path}/D-val.lmdb (4 records) from 4 ")
    code, out, err = cli(*args)
    assert code == 2 and err == f"segflow: error: {tmp_path}/D-train.lmdb: {EXISTS}\n"
    nist_style = ["--use_tiling", "0", "--seed", "3", "--overwrite"]
    code, out, err = cli("build-lmdb", *folders, "--dataset_name", "D", *nist_style)
    assert code == 0 and "(3 records)" in out and _read(tmp_path / "D-val.lmdb")[0]["seed"] == 3
    code, _, err = cli("build-lmdb", *folders, "--dataset_name", "D", "--train_fraction", "0")
    assert code == 2 and err.startswith("segflow: error: --train_fraction 0.0: must be between 0 and 1")
    assert err.count("\n") == 1
