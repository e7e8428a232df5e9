"""Training patches: grids, random crops, probability-map crops, padding of small images, check images."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from conftest import tiny_config

from segflow.config.loader import build_config
from segflow.data.loading import TrainData
from segflow.data.patches import PatchDataset, axis_starts, fit_to_patch, grid_starts, probability_map, write_prob_maps
from segflow.data.sources import Sample
from segflow.errors import SegflowError


def sample(shape: tuple[int, ...], channels: int = 1, name: str = "s", fg: tuple[slice, ...] | None = None, seed: int = 0) -> Sample:
    """A float32 image with distinct values and a mask that is foreground in ``fg``."""
    rng = np.random.default_rng(seed)
    image = rng.random((*shape, channels)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    if fg is not None:
        mask[fg] = 1
    return Sample(name, image, mask, Path(f"/data/{name}.tif"))


def coverage(shape: tuple[int, ...], patch: tuple[int, ...], starts: list[tuple[int, ...]]) -> np.ndarray:
    count = np.zeros(shape, np.int32)
    for st in starts:
        count[tuple(slice(a, a + p) for a, p in zip(st, patch))] += 1
    return count


# ------------------------------------------------------------------------------------------ grid
@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [((64, 64), (32, 32), ()), ((70, 45), (32, 32), (0, 0)), ((64, 64), (32, 32), (0.5, 0.25)), ((17, 50, 33), (8, 16, 16), (0.3, 0.1, 0.6))],
)
def test_grid_covers_every_pixel_inside_the_image(shape, patch, overlap) -> None:
    starts = grid_starts(shape, patch, overlap)
    assert len(set(starts)) == len(starts)
    for st in starts:
        assert all(a >= 0 and a + p <= s for a, p, s in zip(st, patch, shape)), st  # no padding needed
    assert coverage(shape, patch, starts).min() >= 1
    # Consecutive patches along each axis overlap by at least the requested fraction.
    for axis, (p, s) in enumerate(zip(patch, shape)):
        ov = overlap[axis] if axis < len(overlap) else 0.0
        along = sorted({st[axis] for st in starts})
        assert along[0] == 0 and along[-1] == s - p
        assert all(p - (b - a) >= ov * p - 1e-9 for a, b in itertools.pairwise(along))


def test_grid_exact_tiling_and_overlap_values() -> None:
    assert grid_starts((64, 64), (32, 32)) == [(0, 0), (0, 32), (32, 0), (32, 32)]
    assert [s[0] for s in grid_starts((64, 32), (32, 32), (0.5, 0))] == [0, 16, 32]
    assert grid_starts((40,), (32,)) == [(0,), (8,)]  # last patch moved back to end at the border
    assert grid_starts((32, 32), (32, 32), (0.9, 0.9)) == [(0, 0)]
    with pytest.raises(SegflowError, match="overlap 1.0"):
        grid_starts((64, 64), (32, 32), (1.0, 0))


def test_axis_starts() -> None:
    assert axis_starts(64, 32) == [0, 32]
    assert axis_starts(70, 32, 0.0) == [0, 32, 38]
    assert axis_starts(64, 32, 0.5) == [0, 16, 32]
    assert axis_starts(20, 32) == [0]  # smaller than the patch: one patch (the caller pads)
    with pytest.raises(SegflowError, match="overlap -0.1"):
        axis_starts(64, 32, -0.1)


def test_grid_dataset_items_are_the_crops() -> None:
    s2 = sample((64, 48), channels=2, fg=(slice(0, 10), slice(None)))
    ds = PatchDataset([s2, sample((32, 32), channels=2, seed=1)], (32, 32), mode="grid")
    assert len(ds) == 2 * 2 + 1
    item = ds[1]  # first image, start (0, 16)
    assert set(item) == {"image", "label"}
    assert item["image"].dtype == np.float32 and item["image"].shape == (2, 32, 32)
    assert item["label"].dtype == np.int64 and item["label"].shape == (1, 32, 32)
    np.testing.assert_array_equal(item["image"], np.moveaxis(s2.image[0:32, 16:48], -1, 0))
    np.testing.assert_array_equal(item["label"][0], s2.mask[0:32, 16:48])
    assert item["image"].flags["C_CONTIGUOUS"]


# ------------------------------------------------------------------------------------------ random patches
@pytest.mark.parametrize(("shape", "patch"), [((64, 48), (32, 32)), ((20, 48, 40), (16, 32, 32))])
def test_random_patches_stay_inside_and_vary(shape, patch) -> None:
    s = sample(shape, channels=2)
    ds = PatchDataset([s], patch, mode="random", replicate=3)
    assert len(ds) == 3
    starts = [ds.random_start(0)[1] for _ in range(300)]
    for st in starts:
        assert all(0 <= a <= n - p for a, n, p in zip(st, shape, patch)), st
    for axis, (n, p) in enumerate(zip(shape, patch)):
        seen = {st[axis] for st in starts}
        assert len(seen) > min(5, n - p)  # many positions along every axis
        assert min(seen) == 0 and max(seen) == n - p  # both ends reachable
    item = ds[0]
    assert item["image"].shape == (2, *patch) and item["image"].dtype == np.float32
    assert item["label"].shape == (1, *patch) and item["label"].dtype == np.int64


def test_random_item_is_a_real_crop() -> None:
    s = sample((64, 64))
    ds = PatchDataset([s], (32, 32), mode="random")
    ds.set_random_state(seed=3)
    st = ds.random_start(0)[1]
    ds.set_random_state(seed=3)
    np.testing.assert_array_equal(ds[0]["image"][0], s.image[st[0] : st[0] + 32, st[1] : st[1] + 32, 0])


def test_set_random_state_repeats_patches() -> None:
    s = sample((64, 64, 64))

    def draws(seed: int) -> list[np.ndarray]:
        ds = PatchDataset([s], (16, 16, 16), mode="random", replicate=6)
        ds.set_random_state(seed=seed)
        return [ds[k]["image"] for k in range(len(ds))]

    a, b, c = draws(7), draws(7), draws(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({x.tobytes() for x in a}) > 1  # patches differ from one draw to the next


# ------------------------------------------------------------------------------------------ probability map
def test_probability_map_weights() -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[:4, :8] = 1  # 32 foreground pixels
    mask[10, 10] = 2  # any class > 0 is foreground
    prob = probability_map(mask, 0.94, 0.06)
    assert prob.dtype == np.float32 and prob.shape == mask.shape
    assert prob.sum() == pytest.approx(1.0, abs=1e-5)
    assert prob[mask > 0].sum() == pytest.approx(0.94, abs=1e-5)
    assert np.ptp(prob[mask > 0]) < 1e-9 and np.ptp(prob[mask == 0]) < 1e-9  # uniform within each kind
    prob = probability_map(mask, 3.0, 1.0)  # weights need not sum to 1
    assert prob[mask > 0].sum() == pytest.approx(0.75, abs=1e-5)


def test_probability_map_one_kind_only() -> None:
    empty = probability_map(np.zeros((4, 8, 8), np.uint8), 0.94, 0.06)
    assert empty.sum() == pytest.approx(1.0) and np.ptp(empty) < 1e-9
    full = np.ones((8, 8), np.uint8)
    assert probability_map(full, 0.94, 0.06).sum() == pytest.approx(1.0)
    zero_fg = probability_map(full, 0.0, 1.0)  # only zero-weighted pixels: no NaN, every pixel alike
    assert np.all(np.isfinite(zero_fg)) and zero_fg.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("w_fg", "w_bg"), [(0.94, 0.06), (0.7, 0.3), (0.2, 0.8)])
def test_prob_map_centres_fall_on_foreground_at_the_weighted_rate(w_fg: float, w_bg: float) -> None:
    fg = (slice(40, 48), slice(8, 16))  # 64 of 4096 pixels: 1.6 % of the area
    s = sample((64, 64), fg=fg)
    ds = PatchDataset([s], (32, 32), mode="random", prob_weights=(w_fg, w_bg))
    ds.set_random_state(seed=0)
    n = 4000
    hits = 0
    for _ in range(n):
        _, start, centre = ds.random_start(0)
        hits += int(s.mask[centre] > 0)
        assert all(a <= c < a + 32 for a, c in zip(start, centre))  # the patch contains its centre
    share = w_fg / (w_fg + w_bg)
    assert abs(hits / n - share) < 0.03  # sd of the estimate is < 0.008


def test_prob_map_3d_and_uniform_baseline() -> None:
    fg = (slice(2, 4), slice(0, 8), slice(0, 8))  # 128 of 16384 voxels
    s = sample((16, 32, 32), fg=fg)
    weighted = PatchDataset([s], (8, 16, 16), mode="random", prob_weights=(0.9, 0.1))
    plain = PatchDataset([s], (8, 16, 16), mode="random")
    n = 2000
    w_hits = sum(int(s.mask[weighted.random_start(0)[2]] > 0) for _ in range(n))
    # Without the map, the patch centre lands on foreground about as often as foreground's area share.
    p_hits = 0
    for _ in range(n):
        st = plain.random_start(0)[1]
        p_hits += int(s.mask[tuple(a + p // 2 for a, p in zip(st, (8, 16, 16)))] > 0)
    assert abs(w_hits / n - 0.9) < 0.03
    assert p_hits / n < 0.1
    item = weighted[0]
    assert item["image"].shape == (1, 8, 16, 16) and item["label"].shape == (1, 8, 16, 16)


def test_prob_map_zero_weight_kind_only_does_not_crash() -> None:
    s = sample((32, 32), fg=(slice(None), slice(None)))  # all foreground
    ds = PatchDataset([s], (16, 16), mode="random", prob_weights=(0.0, 1.0))
    starts = [ds.random_start(0)[1] for _ in range(50)]
    assert all(0 <= a <= 16 for st in starts for a in st)


def test_prob_map_image_without_foreground_draws_background() -> None:
    s = sample((32, 32))
    ds = PatchDataset([s], (16, 16), mode="random", prob_weights=(0.94, 0.06))
    centres = {ds.random_start(0)[2] for _ in range(100)}
    assert len(centres) > 50


# ------------------------------------------------------------------------------------------ prob-map files
def _colour(rgb: np.ndarray, y: int, x: int) -> tuple[int, ...]:
    return tuple(int(v) for v in rgb[y, x])


@pytest.mark.parametrize("ndim", [2, 3])
def test_write_prob_maps_files_and_check_images(tmp_path: Path, ndim: int) -> None:
    shape, patch = ((64, 64), (24, 24)) if ndim == 2 else ((8, 64, 64), (4, 24, 24))
    def fg(i: int) -> tuple[slice, ...]:  # a different foreground square in each image
        yx = (slice(10 + 8 * i, 26 + 8 * i), slice(40 - 9 * i, 56 - 9 * i))
        return yx if ndim == 2 else (slice(i, i + 3), *yx)

    samples = [sample(shape, fg=fg(i), name=f"im{i}", seed=i) for i in range(4)]
    ds = PatchDataset(samples, patch, mode="random", prob_weights=(0.94, 0.06))
    ds.set_random_state(seed=11)
    twin = PatchDataset(samples, patch, mode="random", prob_weights=(0.94, 0.06))
    twin.set_random_state(seed=11)
    write_prob_maps(ds, tmp_path / "prob", tmp_path / "aug", n_marks=3)

    assert sorted(p.name for p in (tmp_path / "prob").iterdir()) == [f"prob_map_im{i}.tif" for i in range(4)]
    pm = tifffile.imread(tmp_path / "prob/prob_map_im0.tif")
    assert pm.shape == shape
    assert pm.sum() == pytest.approx(1.0, abs=1e-4) and pm[samples[0].mask > 0].sum() == pytest.approx(0.94, abs=1e-4)

    assert sorted(p.name for p in (tmp_path / "aug").iterdir()) == sorted(f"mark_{k}_im{i}.png" for i in range(3) for k in "xy")
    red, blue = (255, 0, 0), (0, 0, 255)
    for i in range(3):
        _, start, centre = twin.random_start(i)  # the same draws write_prob_maps made
        (y0, x0), (cy, cx) = start[-2:], centre[-2:]
        y1, x1 = y0 + patch[-2] - 1, x0 + patch[-1] - 1
        for key in "xy":
            rgb = iio.imread(tmp_path / "aug" / f"mark_{key}_im{i}.png")
            assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
            assert _colour(rgb, cy, cx) == red
            # Blue outline: corners and mid-edges of the patch square (where the red centre is not).
            for y, x in ((y0, x0), (y0, x1), (y1, x0), (y1, x1), (y0, (x0 + x1) // 2), ((y0 + y1) // 2, x1)):
                if abs(y - cy) > 2 or abs(x - cx) > 2:
                    assert _colour(rgb, y, x) == blue, (key, y, x)
            # Everywhere else the picture is the plane itself in grey (the centre z-slice in 3D).
            drawn = np.zeros((64, 64), bool)
            drawn[y0, x0 : x1 + 1] = drawn[y1, x0 : x1 + 1] = drawn[y0 : y1 + 1, x0] = drawn[y0 : y1 + 1, x1] = True
            drawn[max(cy - 2, 0) : cy + 3, max(cx - 2, 0) : cx + 3] = True
            plane = samples[i].image[..., 0] if key == "x" else samples[i].mask.astype(np.float32)
            plane = plane[centre[0]] if ndim == 3 else plane
            grey = (plane - plane.min()) / (plane.max() - plane.min()) * 255
            assert np.all(rgb[~drawn][:, 0] == rgb[~drawn][:, 2]) and np.all(rgb[~drawn][:, 1] == rgb[~drawn][:, 2])
            assert np.abs(rgb[..., 0][~drawn].astype(float) - grey[~drawn]).max() <= 1


# ------------------------------------------------------------------------------------------ padding small images
def test_small_image_padded_by_reflection_2d() -> None:
    s = sample((20, 40), fg=(slice(0, 5), slice(None)))
    out = fit_to_patch(s, (32, 32), reflect=True)
    assert out.image.shape == (32, 40, 1) and out.mask.shape == (32, 40)
    np.testing.assert_array_equal(out.image, np.pad(s.image, ((0, 12), (0, 0), (0, 0)), mode="reflect"))
    np.testing.assert_array_equal(out.image[:20], s.image)
    np.testing.assert_array_equal(out.image[20], s.image[18])  # reflection, not edge repeat or zeros
    np.testing.assert_array_equal(out.mask, np.pad(s.mask, ((0, 12), (0, 0)), mode="reflect"))
    assert out.name == s.name and out.path == s.path


def test_small_image_padded_by_reflection_3d() -> None:
    s = sample((8, 40, 20), channels=2)
    out = fit_to_patch(s, (16, 32, 32), reflect=True)
    assert out.image.shape == (16, 40, 32, 2) and out.mask.shape == (16, 40, 32)
    np.testing.assert_array_equal(out.image[8, :, :20], s.image[6])
    np.testing.assert_array_equal(out.image[:8, :, 20], s.image[:, :, 18])
    np.testing.assert_array_equal(out.image, np.pad(s.image, ((0, 8), (0, 0), (0, 12), (0, 0)), mode="reflect"))


def test_image_large_enough_is_unchanged() -> None:
    s = sample((32, 40))
    assert fit_to_patch(s, (32, 32), reflect=False) is s


@pytest.mark.parametrize(("shape", "patch", "axis"), [((8, 48, 48), (16, 32, 32), "z: 8 < 16"), ((48, 20), (32, 32), "x: 20 < 32"), ((20, 48), (32, 32), "y: 20 < 32")])
def test_small_image_without_reflect_is_an_error(shape, patch, axis) -> None:
    s = sample(shape, name="tiny")
    with pytest.raises(SegflowError) as err:
        fit_to_patch(s, patch, reflect=False)
    msg = str(err.value)
    assert "tiny.tif" in msg and axis in msg and "REFLECT_TO_COMPLETE_SHAPE" in msg


# ------------------------------------------------------------------------------------------ through the config
def _train_data(samples: list[Sample], val: list[Sample] | None = None) -> TrainData:
    return TrainData(train=samples, val=val or [], normalizer=None)


def make_datasets(cfg, data: TrainData):
    """training.make_datasets, imported here so that the rest of this file does not need the training stack."""
    from segflow.training.datasets import make_datasets as make

    return make(cfg, data)


def test_make_datasets_random_prob_map_and_replicate(tmp_path: Path) -> None:
    data = {"EXTRACT_RANDOM_PATCH": True, "PROBABILITY_MAP": True, "W_FOREGROUND": 0.8, "W_BACKGROUND": 0.2, "TRAIN": {"REPLICATE": 3}}
    cfg = build_config(tiny_config(tmp_path, DATA=data, SYSTEM={"SEED": 4}))[0]
    s = sample((64, 64), fg=(slice(0, 8), slice(0, 8)))
    train_ds, val_ds = make_datasets(cfg, _train_data([s, sample((64, 64), seed=1)], [sample((64, 64), seed=2)]))
    assert train_ds.mode == "random" and train_ds.prob_weights == (0.8, 0.2) and len(train_ds) == 6
    assert val_ds.mode == "grid" and len(val_ds) == 4
    again, _ = make_datasets(cfg, _train_data([s, sample((64, 64), seed=1)]))
    np.testing.assert_array_equal(train_ds[0]["image"], again[0]["image"])  # seeded by SYSTEM.SEED


def test_make_datasets_grid_with_overlap(tmp_path: Path) -> None:
    cfg = build_config(tiny_config(tmp_path, DATA={"TRAIN": {"OVERLAP": (0.5, 0.5)}}))[0]
    train_ds, val_ds = make_datasets(cfg, _train_data([sample((64, 64))]))
    assert train_ds.mode == "grid" and len(train_ds) == 9 and val_ds is None


def test_make_datasets_small_image(tmp_path: Path) -> None:
    small = sample((8, 24, 40), name="small_stack")
    cfg = build_config(tiny_config(tmp_path, "3D"))[0]
    with pytest.raises(SegflowError, match=r"small_stack.tif.*z: 8 < 16.*y: 24 < 32"):
        make_datasets(cfg, _train_data([small]))
    cfg = build_config(tiny_config(tmp_path, "3D", DATA={"REFLECT_TO_COMPLETE_SHAPE": True}))[0]
    train_ds, _ = make_datasets(cfg, _train_data([small]))
    assert train_ds.samples[0].image.shape == (16, 32, 40, 1)
    item = train_ds[0]
    assert item["image"].shape == (1, 16, 32, 32) and item["label"].shape == (1, 16, 32, 32)


def test_pad_to_mirrors_once_for_inference_and_repeatedly_for_training():
    from segflow.data.patches import pad_to

    a = np.arange(3 * 4).reshape(3, 4, 1)
    once = pad_to(a, (5, 4))  # 3 > 2 rows of padding: mirrored
    assert once.shape == (5, 4, 1) and once[3:, :, 0].tolist() == [a[1, :, 0].tolist(), a[0, :, 0].tolist()]
    edge = pad_to(a, (8, 4))  # 5 rows of padding exceed the 3 rows: every axis repeats its edge
    assert (edge[3:, :, 0] == a[2, :, 0]).all()
    again = pad_to(a, (8, 4), repeat_reflection=True)  # training mirrors again and again
    assert again[:, 0, 0].tolist() == [0, 4, 8, 4, 0, 4, 8, 4]


def test_a_lazy_masks_probability_map_is_written_per_block(tmp_path: Path) -> None:
    """A mask read patch by patch gets its map as one value per 32-pixel block: the per-pixel map's block sums."""
    from segflow.io.lazy import RowView

    s = sample((8, 80, 70), fg=(slice(1, 5), slice(10, 50), slice(20, 66)), name="vol", seed=3)
    whole = probability_map(s.mask, 0.8, 0.2)
    lazy = replace(s, mask=RowView(s.mask, 0, 8))
    ds = PatchDataset([lazy], (4, 24, 24), mode="random", prob_weights=(0.8, 0.2))
    write_prob_maps(ds, tmp_path / "prob", tmp_path / "aug", n_marks=1)
    got = tifffile.imread(tmp_path / "prob/prob_map_vol_block32.tif")
    padded = np.pad(whole, [(0, -n % 32) for n in whole.shape])
    want = padded.reshape(1, 32, 3, 32, 3, 32).sum(axis=(1, 3, 5))
    assert got.size == 9  # 1 x 3 x 3 blocks (tifffile drops the single z block on reading)
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-6)
