"""Tests for segflow.data.augment: training-patch augmentation and the AUG_SAMPLES writer."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from segflow.config.schema import AugmentorConfig
from segflow.data.augment import build_augmentation, write_aug_samples

GEOMETRIC = ("VFLIP", "HFLIP", "ZFLIP", "ROT90", "RANDOM_ROT", "SHEAR", "ZOOM", "SHIFT", "ELASTIC")
INTENSITY = ("G_BLUR", "GAUSSIAN_NOISE", "BRIGHTNESS", "CONTRAST", "GAMMA_CONTRAST")


def config(**keys) -> AugmentorConfig:
    """AUGMENTOR section with augmentation on, every transform firing, plus ``keys``."""
    return AugmentorConfig(**{"ENABLE": True, "DA_PROB": 1.0, **keys})


def sample(ndim: int, channels: int = 2, label_dtype=np.uint8) -> dict[str, np.ndarray]:
    """A random image and a blocky label with classes {0, 1, 2, 7}, (Z=8,) Y=X=64."""
    rng = np.random.default_rng(0)
    spatial = (64, 64) if ndim == 2 else (8, 64, 64)
    image = rng.random((channels, *spatial), dtype=np.float32)
    grids = np.indices(spatial)
    blocks = (grids[-2] // 8 + grids[-1] // 8 + (grids[0] // 2 if ndim == 3 else 0)) % 4
    label = np.array([0, 1, 2, 7])[blocks][None].astype(label_dtype)
    return {"image": image, "label": label}


def run(aug: AugmentorConfig, data: dict[str, np.ndarray], ndim: int, seed: int = 0) -> dict[str, np.ndarray]:
    transform = build_augmentation(aug, ndim)
    assert transform is not None
    transform.set_random_state(seed=seed)
    return transform({key: value.copy() for key, value in data.items()})


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


# --------------------------------------------------------------------------------------------- building
def test_disabled_or_empty_config_gives_none():
    assert build_augmentation(AugmentorConfig(ENABLE=False, VFLIP=True), 2) is None
    assert build_augmentation(AugmentorConfig(ENABLE=True), 2) is None
    assert build_augmentation(AugmentorConfig(ENABLE=True), 3) is None
    # ZFLIP means nothing in 2D.
    assert build_augmentation(AugmentorConfig(ENABLE=True, ZFLIP=True), 2) is None
    assert build_augmentation(AugmentorConfig(ENABLE=True, ZFLIP=True), 3) is not None


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("label_dtype", [np.uint8, np.uint16, np.int64])
def test_shapes_and_dtypes_preserved(ndim, label_dtype):
    data = sample(ndim, label_dtype=label_dtype)
    out = run(config(**dict.fromkeys(GEOMETRIC + INTENSITY, True), ZOOM_IN_Z=True), data, ndim)
    assert set(out) == {"image", "label"}
    for key in ("image", "label"):
        assert type(out[key]) is np.ndarray
        assert out[key].shape == data[key].shape
    assert out["image"].dtype == np.float32
    assert out["label"].dtype == label_dtype
    assert not np.array_equal(out["image"], data["image"])


def test_zero_probability_changes_nothing():
    for ndim in (2, 3):
        data = sample(ndim)
        aug = config(**dict.fromkeys(GEOMETRIC + INTENSITY, True), DA_PROB=0.0)
        out = run(aug, data, ndim)
        np.testing.assert_array_equal(out["image"], data["image"])
        np.testing.assert_array_equal(out["label"], data["label"])


# --------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(
    "keys",
    [
        {"ELASTIC": True, "E_ALPHA": (40, 40), "E_SIGMA": 3},
        {"RANDOM_ROT": True},
        {"SHEAR": True},
        {"ZOOM": True, "ZOOM_IN_Z": True},
        {"SHIFT": True},
        {"RANDOM_ROT": True, "SHEAR": True, "ZOOM": True, "SHIFT": True, "ELASTIC": True, "E_ALPHA": (40, 40)},
    ],
    ids=["elastic", "rotation", "shear", "zoom", "shift", "all"],
)
@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_geometric_transforms_keep_label_classes(ndim, keys, mode):
    data = sample(ndim)
    out = run(config(AFFINE_MODE=mode, E_MODE=mode, **keys), data, ndim)
    assert set(np.unique(out["label"])) <= {0, 1, 2, 7}
    assert not np.array_equal(out["label"], data["label"])
    assert not np.array_equal(out["image"], data["image"])


@pytest.mark.parametrize(("key", "axis", "ndim"), [("VFLIP", -2, 2), ("HFLIP", -1, 2), ("VFLIP", -2, 3), ("HFLIP", -1, 3), ("ZFLIP", -3, 3)])
def test_flips(key, axis, ndim):
    data = sample(ndim)
    out = run(config(**{key: True}), data, ndim)
    np.testing.assert_array_equal(out["image"], np.flip(data["image"], axis))
    np.testing.assert_array_equal(out["label"], np.flip(data["label"], axis))


@pytest.mark.parametrize("ndim", [2, 3])
def test_rot90_turns_image_and_label_together(ndim):
    data = sample(ndim)
    seen = set()
    for seed in range(12):
        out = run(config(ROT90=True), data, ndim, seed)
        turns = [k for k in (1, 2, 3) if np.array_equal(out["image"], np.rot90(data["image"], k, axes=(-2, -1)))]
        assert len(turns) == 1
        np.testing.assert_array_equal(out["label"], np.rot90(data["label"], turns[0], axes=(-2, -1)))
        seen.add(turns[0])
    assert seen == {1, 2, 3}


@pytest.mark.parametrize("ndim", [2, 3])
def test_random_rotation_is_in_the_yx_plane(ndim):
    data = sample(ndim)
    out = run(config(RANDOM_ROT=True, RANDOM_ROT_RANGE=(90, 90)), data, ndim)
    turns = [k for k in (1, 3) if np.array_equal(out["label"], np.rot90(data["label"], k, axes=(-2, -1)))]
    assert len(turns) == 1
    np.testing.assert_allclose(out["image"], np.rot90(data["image"], turns[0], axes=(-2, -1)), atol=1e-4)


def test_shear_is_a_shear_not_a_rotation():
    label = np.zeros((1, 64, 64), np.uint8)
    label[0, :, 28:36] = 1  # vertical band
    label[0, 10:14, :] = 2  # horizontal band
    data = {"image": label.astype(np.float32), "label": label}
    out = run(config(SHEAR=True, SHEAR_RANGE=(20, 20), AFFINE_MODE="edge"), data, 2)["label"][0]
    # Rows stay rows: the horizontal band is untouched.
    np.testing.assert_array_equal(out == 2, label[0] == 2)
    # Every other row of the vertical band keeps its width and is displaced in proportion to y.
    rows = [y for y in range(64) if not 10 <= y < 14]
    assert all((out[y] == 1).sum() == 8 for y in rows)
    centres = np.array([np.flatnonzero(out[y] == 1).mean() for y in rows])
    slope, intercept = np.polyfit(rows, centres, 1)
    assert abs(abs(slope) - np.tan(np.deg2rad(20))) < 0.02
    assert np.abs(np.polyval((slope, intercept), rows) - centres).max() < 1.0


def test_zoom_magnifies_in_plane_and_in_z_only_when_asked():
    label = np.zeros((1, 16, 64, 64), np.uint8)
    label[0, 6:10, 24:40, 24:40] = 1
    data = {"image": label.astype(np.float32), "label": label}
    flat = run(config(ZOOM=True, ZOOM_RANGE=(2, 2)), data, 3)["label"][0]
    assert np.flatnonzero(flat.any(axis=(1, 2))).tolist() == [6, 7, 8, 9]
    assert abs(int(flat[7].sum()) - 32 * 32) <= 64
    deep = run(config(ZOOM=True, ZOOM_RANGE=(2, 2), ZOOM_IN_Z=True), data, 3)["label"][0]
    assert np.flatnonzero(deep.any(axis=(1, 2))).tolist() == list(range(4, 12))
    assert abs(int(deep[7].sum()) - 32 * 32) <= 64


def test_shift_moves_by_the_fraction_of_the_patch_with_random_sign():
    label = np.zeros((1, 64, 64), np.uint8)
    label[0, 28:36, 26:34] = 1
    data = {"image": label.astype(np.float32), "label": label}
    signs = set()
    for seed in range(8):
        out = run(config(SHIFT=True, SHIFT_RANGE=(0.25, 0.25), AFFINE_MODE="constant"), data, 2, seed)["label"][0]
        assert out.sum() == label.sum()
        move = centroid(out) - centroid(label[0])
        np.testing.assert_allclose(np.abs(move), [16, 16])
        signs.add(tuple(np.sign(move)))
    assert len(signs) > 1


@pytest.mark.parametrize(("mode", "corner"), [("constant", 0.0), ("reflect", 1.0), ("edge", 1.0), ("symmetric", 1.0), ("wrap", 1.0)])
def test_affine_mode_fills_outside_pixels(mode, corner):
    data = {"image": np.ones((1, 64, 64), np.float32), "label": np.ones((1, 64, 64), np.uint8)}
    out = run(config(RANDOM_ROT=True, RANDOM_ROT_RANGE=(45, 45), AFFINE_MODE=mode), data, 2)
    assert out["image"][0, 0, 0] == pytest.approx(corner)
    assert out["label"][0, 0, 0] == corner
    assert out["image"][0, 32, 32] == pytest.approx(1.0)


def test_elastic_mode_fills_outside_pixels():
    data = {"image": np.ones((1, 64, 64), np.float32), "label": np.ones((1, 64, 64), np.uint8)}
    constant = run(config(ELASTIC=True, E_ALPHA=(400, 400), E_SIGMA=4, E_MODE="constant"), data, 2)
    edge = run(config(ELASTIC=True, E_ALPHA=(400, 400), E_SIGMA=4, E_MODE="edge"), data, 2)
    assert (constant["label"] == 0).any()
    assert (edge["label"] == 1).all()


def test_3d_elastic_moves_every_slice_alike():
    label = np.repeat(sample(2)["label"][:, None], 8, axis=1)
    data = {"image": label.astype(np.float32), "label": label}
    out = run(config(ELASTIC=True, E_ALPHA=(40, 40), E_SIGMA=3), data, 3)["label"]
    assert not np.array_equal(out, label)
    assert all(np.array_equal(out[:, z], out[:, 0]) for z in range(8))


# --------------------------------------------------------------------------------------------- intensity
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("key", INTENSITY)
def test_intensity_transforms_change_only_the_image(ndim, key):
    data = sample(ndim)
    out = run(config(**{key: True}), data, ndim)
    assert not np.allclose(out["image"], data["image"])
    np.testing.assert_array_equal(out["label"], data["label"])
    assert out["label"].dtype == data["label"].dtype


@pytest.mark.parametrize(("ndim", "mode"), [(2, "3D"), (3, "3D"), (3, "2D")])
def test_brightness_adds_the_offset(ndim, mode):
    data = sample(ndim)
    out = run(config(BRIGHTNESS=True, BRIGHTNESS_FACTOR=(0.5, 0.5), BRIGHTNESS_MODE=mode), data, ndim)
    np.testing.assert_allclose(out["image"], data["image"] + 0.5, atol=1e-6)


@pytest.mark.parametrize(("ndim", "mode"), [(2, "3D"), (3, "3D"), (3, "2D")])
def test_contrast_multiplies_by_one_plus_factor(ndim, mode):
    data = sample(ndim)
    out = run(config(CONTRAST=True, CONTRAST_FACTOR=(0.5, 0.5), CONTRAST_MODE=mode), data, ndim)
    np.testing.assert_allclose(out["image"], data["image"] * 1.5, rtol=1e-6)


@pytest.mark.parametrize("key", ["BRIGHTNESS", "CONTRAST"])
def test_2d_mode_draws_one_value_per_slice(key):
    data = sample(3)
    change = {
        "2D": run(config(**{key: True, f"{key}_FACTOR": (-0.5, 0.5), f"{key}_MODE": "2D"}), data, 3)["image"],
        "3D": run(config(**{key: True, f"{key}_FACTOR": (-0.5, 0.5), f"{key}_MODE": "3D"}), data, 3)["image"],
    }
    for mode, image in change.items():
        per_slice = image - data["image"] if key == "BRIGHTNESS" else image / data["image"]
        values = per_slice.reshape(2, 8, -1)
        np.testing.assert_allclose(values, values[:, :, :1].repeat(values.shape[2], axis=2), atol=1e-5)
        spread = np.ptp(values[0, :, 0])
        assert (spread > 0.01) if mode == "2D" else (spread < 1e-5)


def test_gamma_is_safe_on_negative_images():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 64, 64)).astype(np.float32)
    data = {"image": image, "label": np.zeros((1, 64, 64), np.uint8)}
    out = run(config(GAMMA_CONTRAST=True, GC_GAMMA=(1.5, 1.5)), data, 2)["image"]
    assert np.isfinite(out).all()
    assert out.min() == pytest.approx(image.min(), abs=1e-5)
    assert out.max() == pytest.approx(image.max(), abs=1e-5)
    order = np.argsort(image, axis=None)
    assert (np.diff(out.flat[order]) >= -1e-6).all()
    assert np.abs(out - image).max() > 0.1


def test_gaussian_noise_has_the_configured_mean_and_variance():
    data = sample(2)
    out = run(config(GAUSSIAN_NOISE=True, GAUSSIAN_NOISE_MEAN=0.1, GAUSSIAN_NOISE_VAR=0.04), data, 2)
    noise = out["image"] - data["image"]
    assert noise.mean() == pytest.approx(0.1, abs=0.01)
    assert noise.std() == pytest.approx(0.2, abs=0.01)


def test_blur_smooths_in_plane_but_not_across_slices():
    data = sample(3)
    blurred = run(config(G_BLUR=True), data, 3)["image"]
    assert blurred.std() < 0.6 * data["image"].std()
    slices = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (1, 8, 64, 64)).copy()
    flat = run(config(G_BLUR=True), {"image": slices, "label": data["label"]}, 3)["image"]
    np.testing.assert_allclose(flat, slices, atol=1e-5)


# --------------------------------------------------------------------------------------------- randomness
@pytest.mark.parametrize("ndim", [2, 3])
def test_set_random_state_makes_results_repeatable(ndim):
    data = sample(ndim)
    aug = config(**dict.fromkeys(GEOMETRIC + INTENSITY, True), DA_PROB=0.5, BRIGHTNESS_MODE="2D")

    def draws(seed: int) -> list[dict[str, np.ndarray]]:
        transform = build_augmentation(aug, ndim)
        transform.set_random_state(seed=seed)
        return [transform({key: value.copy() for key, value in data.items()}) for _ in range(4)]

    first, again, other = draws(7), draws(7), draws(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert any(not np.array_equal(a["image"], c["image"]) for a, c in zip(first, other))
    # Successive calls draw new parameters.
    assert not np.array_equal(first[0]["image"], first[1]["image"])


# --------------------------------------------------------------------------------------------- samples
def test_write_aug_samples(tmp_path):
    transform = build_augmentation(config(VFLIP=True), 2)
    image = np.zeros((1, 64, 48), np.float32)
    image[0, 5, 7] = 3.0
    label = np.zeros((1, 64, 48), np.uint8)
    label[0, 5, 7] = 2
    wide = label.astype(np.int64) * 150
    pairs = [(image, label), (np.repeat(image, 2, axis=0), wide)]
    paths = write_aug_samples(transform, pairs, tmp_path / "aug", draw_grid=True)
    names = ["aug_000_x.tif", "aug_000_y.tif", "aug_001_x.tif", "aug_001_y.tif"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in (tmp_path / "aug").iterdir()) == names
    x0, y0, x1, y1 = (tifffile.imread(p) for p in paths)
    assert x0.shape == (64, 48) and x0.dtype == np.float32
    assert y0.shape == (64, 48) and y0.dtype == np.uint8
    assert x1.shape == (64, 48, 2) and y1.dtype == np.uint16
    assert y1[58, 7] == 300 and y0[58, 7] == 2  # flipped along y
    # Grid lines at the image maximum every 32 pixels, flipped with the image; the input is left alone.
    assert (x0[63, :] == 3.0).all() and (x0[31, :] == 3.0).all() and (x0[:, 32] == 3.0).all()
    assert image.sum() == 3.0


def test_write_aug_samples_3d_without_grid(tmp_path):
    transform = build_augmentation(config(BRIGHTNESS=True, BRIGHTNESS_FACTOR=(1, 1)), 3)
    data = sample(3, channels=1)
    paths = write_aug_samples(transform, [(data["image"], data["label"])], tmp_path, draw_grid=False)
    x, y = (tifffile.imread(p) for p in paths)
    assert x.shape == (8, 64, 64) and y.shape == (8, 64, 64)
    np.testing.assert_allclose(x, data["image"][0] + 1, atol=1e-6)
    np.testing.assert_array_equal(y, data["label"][0])


def test_each_transform_fires_independently_with_da_prob():
    label = np.zeros((1, 64, 64), np.uint8)
    label[0, 28:36, 28:36] = 1
    data = {"image": label.astype(np.float32), "label": label}
    transform = build_augmentation(
        config(DA_PROB=0.5, SHIFT=True, SHIFT_RANGE=(0.2, 0.2), ZOOM=True, ZOOM_RANGE=(2, 2), AFFINE_MODE="constant"), 2
    )
    transform.set_random_state(seed=0)
    outcomes = []
    for _ in range(40):
        out = transform({key: value.copy() for key, value in data.items()})["label"][0]
        zoomed = out.sum() > 2 * label.sum()
        shifted = bool(np.abs(centroid(out) - centroid(label[0])).min() > 8)
        outcomes.append((zoomed, shifted))
    assert set(outcomes) == {(False, False), (True, False), (False, True), (True, True)}
    assert 8 <= sum(zoomed for zoomed, _ in outcomes) <= 32
