"""Normalisation and encoding one patch at a time: equal to doing them on the whole image and cropping, the
images kept raw, and PERC_CLIP's percentiles from a bounded sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from segflow.config.loader import build_config
from segflow.config.schema import NormalizationConfig
from segflow.data import normalize
from segflow.data.normalize import Normalizer, percentile_sample
from segflow.data.patches import PatchDataset, grid_starts
from segflow.data.sources import Sample
from segflow.encodings import get_encoding


def _cfg(tmp_path: Path, encoding: str, n_classes: int, ndim: str = "2D"):
    tree = tiny_config(tmp_path, ndim, MODEL={"N_CLASSES": n_classes})
    tree["PROBLEM"]["SEMANTIC_SEG"] = {"ENCODING": encoding, "IGNORE_CLASS_ID": 7 if encoding != "linear" else -1}
    if encoding in ("linear", "distance"):
        tree["LOSS"] = {"TYPE": "MSE"}
    return build_config(tree)[0]


def _membranes(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Thin lines of every bit (1, 2, 3) and a few ignored (7) pixels: dilations and regions change at patch borders."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for axis in (-1, -2):
        for k in rng.choice(shape[axis], 5, replace=False):
            index = [slice(None)] * len(shape)
            index[axis] = int(k)
            mask[tuple(index)] = int(rng.integers(1, 4))
    mask[tuple(rng.integers(0, s, 6) for s in shape)] = 7
    return mask


@pytest.mark.parametrize(
    ("encoding", "n_classes"),
    [("categorical", 4), ("region", 5), ("bitmask", 2), ("double_membrane", 2), ("linear", 2), ("distance", 2)],
)
@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_each_patch_target_is_the_whole_targets_crop(tmp_path, encoding, n_classes, ndim) -> None:
    cfg = _cfg(tmp_path, encoding, n_classes, ndim)
    enc = get_encoding(cfg)
    shape, patch = ((37, 45), (16, 16)) if ndim == "2D" else ((9, 30, 27), (4, 16, 8))
    mask = _membranes(shape)
    if encoding == "categorical":
        mask = np.where(mask == 7, 7, mask % 4).astype(np.uint8)
    s = Sample("s", np.zeros((*shape, 1), np.uint8), mask, Path("s.tif"))
    ds = PatchDataset([s], patch, mode="grid", overlap=(0.3,) * len(shape), encoding=enc)
    whole = enc.encode(mask)
    for start in grid_starts(shape, patch, (0.3,) * len(shape)):
        region = tuple(slice(a, a + p) for a, p in zip(start, patch))
        np.testing.assert_array_equal(ds.target(0, region), whole[region], err_msg=f"{encoding} at {start}")
    # The halo is what makes the patch exact: without it, the dilation misses its neighbours at patch borders.
    if encoding == "double_membrane":
        region = (slice(None),) * (len(shape) - 2) + (slice(8, 24), slice(8, 24))
        lined = np.where(mask == 7, 0, mask)
        lined[..., 7, :] = 1  # just outside the patch: its dilation reaches the patch's first row
        assert not np.array_equal(enc.encode(lined[region]), enc.encode(lined)[region])
    np.testing.assert_array_equal(next(ds.targets()), whole)  # what class counts are taken from


@pytest.mark.parametrize(
    "norm",
    [
        {"TYPE": "div"},
        {"TYPE": "scale_range"},
        {"TYPE": "zero_mean_unit_variance", "PERC_CLIP": True, "PERC_LOWER": 2.0, "PERC_UPPER": 97.0},
        {"TYPE": "custom", "CUSTOM_MEAN": 1000.0, "CUSTOM_STD": 300.0},
    ],
)
def test_each_patch_is_normalised_as_the_whole_image(norm) -> None:
    image = np.random.default_rng(1).integers(0, 4000, (40, 50, 2)).astype(np.uint16)
    normalizer = Normalizer(NormalizationConfig(**norm))
    normalizer.fit([image])
    s = Sample("s", image, None, Path("s.tif"), stats=normalizer.stats(image))
    ds = PatchDataset([s], (16, 16), mode="grid", normalizer=normalizer)
    whole = normalizer(image)
    assert s.image.dtype == np.uint16  # the sample stays raw: a quarter of float32's memory for 8-bit data
    for start in grid_starts((40, 50), (16, 16)):
        region = tuple(slice(a, a + 16) for a in start)
        x, t = ds.crop(0, start)
        np.testing.assert_array_equal(x, whole[region])
        assert x.dtype == np.float32 and t is None


def test_padded_small_image_keeps_the_unpadded_statistics(tmp_path) -> None:
    """Padding by reflection repeats pixels; the mean and std stay those of the image as it was read."""
    from segflow.data.loading import TrainData
    from segflow.training.datasets import make_datasets

    cfg = build_config(tiny_config(tmp_path, DATA={"REFLECT_TO_COMPLETE_SHAPE": True, "NORMALIZATION": {"TYPE": "zero_mean_unit_variance"}}))[0]
    image = np.arange(20 * 24, dtype=np.uint8).reshape(20, 24, 1)
    normalizer = Normalizer(cfg.DATA.NORMALIZATION)
    s = Sample("s", image, np.zeros((20, 24), np.uint8), Path("s.tif"), stats=normalizer.stats(image))
    train_ds, _ = make_datasets(cfg, TrainData([s], [], normalizer))
    x = train_ds.image(0, (slice(0, 20), slice(0, 24)))
    np.testing.assert_allclose(x[..., 0], (image[..., 0] - image.mean()) / image.std(), rtol=1e-5, atol=1e-6)
    assert train_ds.samples[0].image.shape[:2] == (32, 32)


def test_percentiles_are_exact_up_to_the_sample_size_and_bounded_beyond(monkeypatch) -> None:
    rng = np.random.default_rng(2)
    small = rng.normal(size=(30, 40, 1)).astype(np.float32)
    assert np.shares_memory(percentile_sample(small, limit=small.size), small)  # every value, no copy

    class Rows(np.ndarray):
        """Records which rows of the first axis are read (a memory map or a chunked array would read only those)."""

        read: set

        def __getitem__(self, key):
            if isinstance(key, int):
                self.read.add(key)
            return np.asarray(self).__getitem__(key)

    big = rng.normal(loc=3.0, size=(400, 300, 1)).astype(np.float32)
    view = big.view(Rows)
    view.read = set()
    values = percentile_sample(view, limit=12_000)
    assert values.size <= 12_000 and len(view.read) == 40 and view.read <= set(range(400))
    assert min(view.read) == 0 and max(view.read) == 399  # spread over the whole stack
    exact = np.percentile(big, [1, 99])
    np.testing.assert_allclose(np.percentile(values, [1, 99]), exact, atol=0.1)

    # Clipping goes through the sample: rows 0, 200 and 399 of a ramp put its 1st percentile at 0, not near 4.
    ramp = np.broadcast_to(np.arange(400, dtype=np.float32)[:, None, None], (400, 300, 1))
    cfg = NormalizationConfig(TYPE="div", PERC_CLIP=True, PERC_LOWER=1.0, PERC_UPPER=99.0)
    assert Normalizer(cfg).clip_range(ramp)[0] == pytest.approx(np.percentile(ramp, 1)) and np.percentile(ramp, 1) > 3
    monkeypatch.setattr(normalize, "PERCENTILE_SAMPLE", 900)
    assert Normalizer(cfg).clip_range(ramp) == (0.0, 399.0)


def test_training_data_comes_from_the_source_that_accepts_the_path(tmp_path, monkeypatch) -> None:
    """A new kind of storage is one class in SOURCES: load_train_data asks each in order, and patches are cut
    from whatever arrays it hands out (here a read-only memory map)."""
    from segflow.data import sources
    from segflow.training.datasets import load_data, make_datasets

    stack = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(64, 64, 1))
    stack[:] = np.arange(64, dtype=np.uint8)[None, :, None]
    stack.flush()
    image = np.load(tmp_path / "x.npy", mmap_mode="r")

    class Mapped:
        name = "mapped"

        @staticmethod
        def accepts(cfg, image_path: str, what: str) -> bool:
            return image_path.endswith(".mapped")

        def samples(self, cfg, image_path, mask_path, what, rules):
            mask = (image[..., 0] > 31).astype(np.uint8)
            rules.check_mask(mask, Path(image_path))
            return [sources.Sample("m", image, mask, Path(image_path))]

    monkeypatch.setattr(sources, "SOURCES", [Mapped, *sources.SOURCES])
    tree = tiny_config(tmp_path, DATA={"VAL": {"SPLIT_TRAIN": 0.0}})
    tree["DATA"]["TRAIN"] = {"PATH": str(tmp_path / "volume.mapped"), "GT_PATH": str(tmp_path / "volume.mapped")}
    cfg = build_config(tree)[0]
    data = load_data(cfg)
    assert isinstance(data.train[0].image, np.memmap) and data.train[0].name == "m"
    train_ds, _ = make_datasets(cfg, data)
    x, y = train_ds.crop(0, (0, 16))
    np.testing.assert_allclose(x[0, :, 0], np.arange(16, 48) / 255, rtol=1e-6)
    np.testing.assert_array_equal(y[0, :, 0], np.arange(16, 48) > 31)
    assert isinstance(sources.open_source(cfg, str(tmp_path), "train"), sources.FolderSource)


@pytest.mark.parametrize(("encoding", "n_classes"), [("categorical", 4), ("bitmask", 2), ("double_membrane", 2)])
def test_targets_of_a_lazy_mask_are_read_in_whole_chunks_and_encoded_in_thin_slabs(tmp_path, monkeypatch, encoding, n_classes) -> None:
    """Class counts read a lazy mask chunk by chunk (each decoded once) with the encoding's halo rows around, and
    encode it in thinner slabs: together they are the whole mask's target."""
    import functools

    import zarr

    from segflow.data import patches
    from segflow.io.lazy import LazyArray

    cfg = _cfg(tmp_path, encoding, n_classes, "3D")
    enc = get_encoding(cfg)
    mask = _membranes((20, 30, 27), seed=2)
    if encoding == "categorical":
        mask = np.where(mask == 7, 7, mask % 4).astype(np.uint8)
    zarr.create_array(str(tmp_path / "m.zarr"), data=mask, chunks=(8, 16, 16))
    lazy = LazyArray(lambda: zarr.open(str(tmp_path / "m.zarr"), mode="r"), "ZYX", 3, "m.zarr", "K", channels=False)
    reads: list[tuple] = []
    lazy_getitem = LazyArray.__getitem__
    monkeypatch.setattr(LazyArray, "__getitem__", lambda self, key: reads.append(key) or lazy_getitem(self, key))
    monkeypatch.setattr(patches, "slabs", functools.partial(patches.slabs, limit=3 * 30 * 27))  # 3 rows a slab
    s = Sample("s", np.zeros((20, 30, 27, 1), np.uint8), lazy, Path("m.zarr"))
    ds = PatchDataset([s], (4, 16, 8), mode="grid", encoding=enc)
    got = list(ds.targets())
    assert [t.shape[0] for t in got] == [3, 3, 2, 3, 3, 2, 3, 1]  # chunks of 8 rows, each in slabs of 3
    h = enc.halo
    assert reads == [slice(0, 8 + h), slice(8 - h, 16 + h), slice(16 - h, 20)]
    np.testing.assert_array_equal(np.concatenate(got), enc.encode(mask))


def test_values_present_in_a_large_slab_piece_by_piece() -> None:
    from segflow.encodings.base import values_present

    mask = np.zeros(3 * 2**22 + 5, np.uint8)
    mask[[7, 2**22 + 1, 3 * 2**22 + 4]] = [3, 200, 255]
    np.testing.assert_array_equal(values_present(mask), [0, 3, 200, 255])
    wide = np.zeros(2**22 + 9, np.uint16)
    wide[-1] = 60000
    np.testing.assert_array_equal(values_present(wide), [0, 60000])
