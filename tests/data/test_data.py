"""Image/mask pairs from folders: pairing errors, mask checks, normalisation, validation split, class counts."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from conftest import tiny_config

from segflow.config.loader import build_config
from segflow.config.schema import NormalizationConfig
from segflow.data.loading import n_val_images, split_train_val
from segflow.data.normalize import Normalizer
from segflow.data.pairs import pair_files
from segflow.encodings import get_encoding
from segflow.errors import SegflowError
from segflow.training.datasets import load_data


def counts(data, cfg) -> np.ndarray:
    """Training pixels per class, as training computes them from the encoded targets."""
    return get_encoding(cfg).class_counts([get_encoding(cfg).encode(s.mask) for s in data.train])[0]

def write_pairs(root: Path, images: list[np.ndarray], masks: list[np.ndarray], names: list[str] | None = None, sub: str = "train") -> Path:
    """Write ``root/sub/{x,y}/NAME.tif``; return ``root``."""
    names = names or [f"img_{i:03d}" for i in range(len(images))]
    for folder in ("x", "y"):
        (root / sub / folder).mkdir(parents=True, exist_ok=True)
    for name, im, m in zip(names, images, masks):
        tifffile.imwrite(root / sub / "x" / f"{name}.tif", im)
        tifffile.imwrite(root / sub / "y" / f"{name}.tif", m)
    return root


def labelled(i: int, shape=(32, 32), n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """An image whose pixels say which file it is (value 10*i+...) and a mask with i+1 foreground rows."""
    image = (np.full(shape, 10 * i) + np.arange(shape[-1]) % 5).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[..., : i + 1, :] = 1 + (i % (n_classes - 1))
    return image, mask


def config(root: Path, ndim: str = "2D", **data: object):
    tree = tiny_config(root, ndim, DATA=data)
    if ndim == "2D":
        tree["DATA"].setdefault("PATCH_SIZE", "(32, 32, 1)")
    return build_config(tree)[0]


def dataset(root: Path, n: int = 4, shape=(32, 32)) -> Path:
    pairs = [labelled(i, shape) for i in range(n)]
    return write_pairs(root, [p[0] for p in pairs], [p[1] for p in pairs])


# ------------------------------------------------------------------------------------------ pairing
def test_pairs_by_sorted_name(tmp_path: Path) -> None:
    pairs = [labelled(i) for i in (2, 0, 1)]
    write_pairs(tmp_path, [p[0] for p in pairs], [p[1] for p in pairs], names=["c_2", "a_0", "b_1"])
    data = load_data(config(tmp_path, VAL={"SPLIT_TRAIN": 0.0}))
    assert [s.name for s in data.train] == ["a_0", "b_1", "c_2"]
    for s in data.train:
        i = int(s.name[-1])
        assert s.mask_path.name == f"{s.name}.tif"
        assert int(s.mask.sum()) == 32 * (i + 1)  # the mask of that same image
        assert round(float(data.normalized(s)[0, 0, 0]) * 255) == 10 * i


def test_fewer_masks_than_images_names_the_unpaired_file(tmp_path: Path) -> None:
    root = dataset(tmp_path, 3)
    (root / "train/y/img_001.tif").unlink()
    with pytest.raises(SegflowError) as err:
        load_data(config(root))
    msg = str(err.value)
    assert "3 images" in msg and "2 masks" in msg and "img_001" in msg and "every image needs one mask" in msg


def test_mask_names_that_disagree(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    (root / "train/y/img_001.tif").rename(root / "train/y/img_007.tif")
    with pytest.raises(SegflowError, match="img_001.tif is paired with mask img_007.tif") as err:
        load_data(config(root))
    assert "rename" in str(err.value)


def test_pair_files_accepts_different_suffixes_and_prefixes() -> None:
    imgs = [Path("x/cell_01.tif"), Path("x/cell_02.tif")]
    masks = [Path("y/cell_01_mask.png"), Path("y/cell_02_mask.png")]
    assert pair_files(imgs, masks, "train") == list(zip(imgs, masks))


def test_image_and_mask_shapes_differ(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    tifffile.imwrite(root / "train/y/img_001.tif", np.zeros((32, 40), np.uint8))
    with pytest.raises(SegflowError, match=r"img_001.tif has shape \(32, 32\).*img_001.tif has \(32, 40\)") as err:
        load_data(config(root))
    assert "same size" in str(err.value)


def test_channel_count_differs_from_patch_size(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    tifffile.imwrite(root / "train/x/img_000.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(SegflowError, match=r"img_000.tif: image has 3 channel\(s\).*PATCH_SIZE to 3"):
        load_data(config(root))


def test_multichannel_and_png_training_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for f in ("x", "y"):
        (tmp_path / "train" / f).mkdir(parents=True)
    rgb = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "train/x/a.png", rgb)
    iio.imwrite(tmp_path / "train/y/a.png", np.repeat((rgb[..., :1] > 128).astype(np.uint8), 3, -1))  # RGB mask, equal channels
    cyx = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "train/x/b.tif", cyx, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "train/y/b.tif", np.zeros((32, 32), np.uint8))
    data = load_data(config(tmp_path, PATCH_SIZE="(32, 32, 3)", VAL={"SPLIT_TRAIN": 0.0}))
    a, b = data.train
    assert a.image.shape == b.image.shape == (32, 32, 3) and a.mask.shape == (32, 32)
    np.testing.assert_allclose(data.normalized(a), rgb / 255, atol=1e-6)
    np.testing.assert_allclose(data.normalized(b)[..., 2], cyx[2] / 255, atol=1e-6)
    np.testing.assert_array_equal(a.mask, rgb[..., 0] > 128)


def test_missing_and_empty_training_folders(tmp_path: Path) -> None:
    with pytest.raises(SegflowError, match="does not exist.*check the path") as err:
        load_data(config(tmp_path))
    assert "DATA.TRAIN.PATH" in str(err.value)
    (tmp_path / "train/x").mkdir(parents=True)
    (tmp_path / "train/y").mkdir(parents=True)
    with pytest.raises(SegflowError, match="holds no images"):
        load_data(config(tmp_path))


def test_2d_image_in_3d_config_is_an_error(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    with pytest.raises(SegflowError, match="img_000.tif.*PROBLEM.NDIM"):
        load_data(config(root, "3D"))


def test_non_finite_float_image_is_an_error(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    bad = np.zeros((32, 32), np.float32)
    bad[1, 1] = np.inf
    tifffile.imwrite(root / "train/x/img_001.tif", bad)
    with pytest.raises(SegflowError, match="img_001.tif: image holds NaN or infinite"):
        load_data(config(root))


# ------------------------------------------------------------------------------------------ mask values
def test_mask_values_outside_classes(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    m = np.zeros((32, 32), np.uint8)
    m[0, 0], m[1, 1] = 3, 7
    tifffile.imwrite(root / "train/y/img_001.tif", m)
    with pytest.raises(SegflowError) as err:
        load_data(config(root))
    msg = str(err.value)
    assert "img_001.tif" in msg and "3, 7" in msg and "N_CLASSES=2" in msg
    # N_CLASSES 8 accepts them; CHECK_DATA false skips the check.
    tree = tiny_config(root, DATA={"PATCH_SIZE": "(32, 32, 1)", "VAL": {"SPLIT_TRAIN": 0.0}}, MODEL={"N_CLASSES": 8})
    cfg8 = build_config(tree)[0]
    assert counts(load_data(cfg8), cfg8)[7] == 1
    unchecked = config(root, TRAIN={"CHECK_DATA": False}, VAL={"SPLIT_TRAIN": 0.0})
    assert counts(load_data(unchecked), unchecked).tolist() == [2048 - 32 - 2, 32]  # 3 and 7 are left out


def test_mask_0_255_hint(tmp_path: Path) -> None:
    root = dataset(tmp_path, 1)
    tifffile.imwrite(root / "train/y/img_000.tif", np.where(np.eye(32) > 0, 255, 0).astype(np.uint8))
    with pytest.raises(SegflowError, match="255.*divide it by 255"):
        load_data(config(root))


def test_ignore_class_id_is_allowed_and_not_counted(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    m = np.zeros((32, 32), np.uint8)
    m[:4] = 1
    m[4:6] = 255
    tifffile.imwrite(root / "train/y/img_001.tif", m)
    tree = tiny_config(root, DATA={"PATCH_SIZE": "(32, 32, 1)", "VAL": {"SPLIT_TRAIN": 0.0}}, PROBLEM={"SEMANTIC_SEG": {"IGNORE_CLASS_ID": 255}})
    cfg = build_config(tree)[0]
    data = load_data(cfg)
    # img_000 has 1 foreground row; img_001 has 4 rows of 1, 2 ignored rows, 26 rows of 0.
    assert counts(data, cfg).tolist() == [31 * 32 + 26 * 32, 32 + 4 * 32]


# ------------------------------------------------------------------------------------------ normalisation
def norm(**kw) -> Normalizer:
    return Normalizer(NormalizationConfig(**kw))


def test_div_uses_dtype_range_not_data_max() -> None:
    dim16 = np.array([[0, 100, 255]], np.uint16)[..., None]
    np.testing.assert_allclose(norm(TYPE="div")(dim16)[..., 0], [[0, 100 / 65535, 255 / 65535]], rtol=1e-6)
    u8 = np.array([[0, 51, 255]], np.uint8)[..., None]
    np.testing.assert_allclose(norm(TYPE="div")(u8)[..., 0], [[0, 0.2, 1.0]], rtol=1e-6)
    f = np.array([[0.5, 3.0, -2.0]], np.float32)[..., None]
    out = norm(TYPE="div")(f)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, f)


def test_div_through_load_train_data(tmp_path: Path) -> None:
    """A uint16 file whose brightest pixel is 255 is divided by 65535, not by 255."""
    img = np.zeros((32, 32), np.uint16)
    img[0, :3] = [0, 128, 255]
    root = write_pairs(tmp_path, [img], [np.zeros((32, 32), np.uint8)])
    data = load_data(config(root, VAL={"SPLIT_TRAIN": 0.0}))
    s = data.normalized(data.train[0])
    assert s.dtype == np.float32 and data.train[0].image.dtype == np.uint16  # kept raw, normalised per patch
    np.testing.assert_allclose(s[0, :3, 0], [0, 128 / 65535, 255 / 65535], rtol=1e-6)


def test_zero_mean_unit_variance_per_image() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 60000, (32, 32, 2)).astype(np.uint16)
    b = (rng.random((32, 32, 2)) * 4 + 9).astype(np.float32)
    n = norm(TYPE="zero_mean_unit_variance")
    for im in (a, b):
        out = n(im)
        assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-4
        np.testing.assert_allclose(out, (im - im.astype(np.float64).mean()) / im.astype(np.float64).std(), atol=1e-4)
    const = n(np.full((32, 32, 1), 77, np.uint8))
    assert np.all(np.isfinite(const)) and np.all(const == 0)


def test_scale_range_per_image() -> None:
    im = np.array([[10, 20, 50]], np.uint16)[..., None]
    np.testing.assert_allclose(norm(TYPE="scale_range")(im)[..., 0], [[0, 0.25, 1]], rtol=1e-6)
    const = norm(TYPE="scale_range")(np.full((4, 4, 1), 9, np.uint8))
    assert np.all(np.isfinite(const)) and np.all(const == 0)


def test_custom_given_mean_and_std(tmp_path: Path) -> None:
    img = np.arange(32 * 32).reshape(32, 32).astype(np.uint16)
    root = write_pairs(tmp_path, [img], [np.zeros((32, 32), np.uint8)])
    data = load_data(config(root, NORMALIZATION={"TYPE": "custom", "CUSTOM_MEAN": 100.0, "CUSTOM_STD": 4.0}, VAL={"SPLIT_TRAIN": 0.0}))
    assert data.normalizer.state() == {"mean": 100.0, "std": 4.0}
    np.testing.assert_allclose(data.normalized(data.train[0])[..., 0], (img - 100.0) / 4.0, rtol=1e-6)


def test_custom_mean_and_std_computed_from_the_training_part_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 200, (32, 32), dtype=np.uint8), rng.integers(50, 255, (32, 32), dtype=np.uint8), np.full((32, 32), 7, np.uint8)]
    root = write_pairs(tmp_path, imgs, [np.zeros((32, 32), np.uint8)] * 3)
    data = load_data(config(root, NORMALIZATION={"TYPE": "custom"}))
    # The held-out validation image must not leak into the statistics.
    train_ids = [int(s.name[-1]) for s in data.train]
    val_ids = [int(s.name[-1]) for s in data.val]
    assert len(train_ids) == 2 and len(val_ids) == 1
    seen = np.concatenate([imgs[i].ravel() for i in train_ids]).astype(np.float64)
    assert data.normalizer.mean == pytest.approx(seen.mean(), rel=1e-9)
    assert data.normalizer.std == pytest.approx(seen.std(), rel=1e-9)
    raw = imgs[val_ids[0]]
    np.testing.assert_allclose(data.normalized(data.val[0])[..., 0], (raw - seen.mean()) / seen.std(), rtol=1e-5, atol=1e-5)


def test_custom_only_mean_computed(tmp_path: Path) -> None:
    imgs = [np.full((32, 32), 10, np.uint8), np.full((32, 32), 30, np.uint8)]
    root = write_pairs(tmp_path, imgs, [np.zeros((32, 32), np.uint8)] * 2)
    data = load_data(config(root, NORMALIZATION={"TYPE": "custom", "CUSTOM_STD": 5.0}, VAL={"SPLIT_TRAIN": 0.0}))
    assert data.normalizer.state() == {"mean": pytest.approx(20.0), "std": 5.0}


def test_percentile_clipping_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    im = rng.integers(0, 255, (32, 32, 1)).astype(np.uint8)
    im[0, 0], im[0, 1] = 0, 255
    out = norm(TYPE="div", PERC_CLIP=True, PERC_LOWER=5, PERC_UPPER=90)(im)
    lo, hi = np.percentile(im.astype(np.float32), [5, 90])
    np.testing.assert_allclose(out, np.clip(im.astype(np.float32), lo, hi) / 255, rtol=1e-6)
    assert out.max() == pytest.approx(hi / 255) and out.min() == pytest.approx(lo / 255)
    assert hi < 250  # the clip really did something
    out = norm(TYPE="scale_range", PERC_CLIP=True, PERC_LOWER=5, PERC_UPPER=90)(im)
    np.testing.assert_allclose(out, (np.clip(im, lo, hi) - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


def test_custom_statistics_are_measured_after_clipping(tmp_path: Path) -> None:
    """__call__ clips before subtracting the mean, so the mean and std must describe clipped images."""
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 100, (32, 32), dtype=np.uint16) for _ in range(2)]
    imgs[0][:2, :2] = 60000  # a few hot pixels
    root = write_pairs(tmp_path, imgs, [np.zeros((32, 32), np.uint8)] * 2)
    nc = {"TYPE": "custom", "PERC_CLIP": True, "PERC_LOWER": 1, "PERC_UPPER": 99}
    data = load_data(config(root, NORMALIZATION=nc, VAL={"SPLIT_TRAIN": 0.0}))
    clipped = []
    for im in imgs:
        lo, hi = np.percentile(im.astype(np.float64), [1, 99])
        clipped.append(np.clip(im.astype(np.float64), lo, hi))
    allc = np.concatenate([c.ravel() for c in clipped])
    assert data.normalizer.mean == pytest.approx(allc.mean(), rel=1e-6)
    assert data.normalizer.std == pytest.approx(allc.std(), rel=1e-6)
    joined = np.concatenate([data.normalized(s).ravel() for s in data.train])
    assert abs(joined.mean()) < 1e-3 and abs(joined.std() - 1) < 1e-3


# ------------------------------------------------------------------------------------------ validation split
@pytest.mark.parametrize(
    ("n", "fraction", "expected"), [(10, 0.1, 1), (10, 0.25, 2), (4, 0.25, 1), (2, 0.1, 1), (3, 0.9, 2), (1, 0.5, 0), (5, 0.0, 0)]
)
def test_n_val_images(n: int, fraction: float, expected: int) -> None:
    assert n_val_images(n, fraction) == expected


def test_split_fraction_and_seeded_shuffle(tmp_path: Path) -> None:
    root = dataset(tmp_path, 8)
    names = [f"img_{i:03d}" for i in range(8)]

    def split(seed: int, random: bool = True):
        tree = tiny_config(root, DATA={"PATCH_SIZE": "(32, 32, 1)", "VAL": {"SPLIT_TRAIN": 0.25, "RANDOM": random}}, SYSTEM={"SEED": seed})
        d = load_data(build_config(tree)[0])
        return [s.name for s in d.train], [s.name for s in d.val]

    train, val = split(0)
    assert len(val) == 2 and len(train) == 6 and sorted(train + val) == names
    assert split(0) == (train, val)  # repeatable with the same seed
    assert len({tuple(split(seed)[1]) for seed in range(6)}) > 1  # the seed matters
    # Without RANDOM, the last images are held out (BiaPy's train_test_split(shuffle=False)).
    assert split(0, random=False) == (names[:6], names[6:])
    assert split(5, random=False) == (names[:6], names[6:])


def test_split_never_takes_all_images(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    d = load_data(config(root, VAL={"SPLIT_TRAIN": 0.9}))
    assert len(d.train) == 1 and len(d.val) == 1


def test_single_2d_image_split_along_y(tmp_path: Path) -> None:
    img = np.repeat(np.arange(64, dtype=np.uint8)[:, None], 48, 1)
    mask = (img % 2).astype(np.uint8)
    root = write_pairs(tmp_path, [img], [mask])
    cfg = config(root, VAL={"SPLIT_TRAIN": 0.25})
    d = load_data(cfg)
    (t,), (v,) = d.train, d.val
    assert t.image.shape == (48, 48, 1) and v.image.shape == (16, 48, 1)
    assert t.mask.shape == (48, 48) and v.mask.shape == (16, 48)
    np.testing.assert_allclose(d.normalized(v)[:, 0, 0] * 255, np.arange(48, 64), atol=1e-4)
    np.testing.assert_array_equal(v.mask[:, 0], np.arange(48, 64) % 2)
    assert counts(d, cfg).tolist() == [24 * 48, 24 * 48]  # counted on the training part only


def test_single_3d_stack_split_along_z(tmp_path: Path) -> None:
    img = np.broadcast_to(np.arange(16, dtype=np.uint8)[:, None, None] * 10, (16, 32, 32)).copy()
    root = write_pairs(tmp_path, [img], [np.zeros((16, 32, 32), np.uint8)])
    d = load_data(config(root, "3D", VAL={"SPLIT_TRAIN": 0.25}))
    (t,), (v,) = d.train, d.val
    assert t.image.shape == (12, 32, 32, 1) and v.image.shape == (4, 32, 32, 1) and v.mask.shape == (4, 32, 32)
    np.testing.assert_allclose(d.normalized(v)[:, 0, 0, 0] * 255, np.arange(12, 16) * 10, atol=1e-3)
    assert v.name == t.name + "_val"


def test_single_image_too_small_to_split() -> None:
    from segflow.data.sources import Sample

    s = Sample("one", np.zeros((1, 32, 1), np.float32), np.zeros((1, 32), np.uint8), Path("one.tif"))
    with pytest.raises(SegflowError, match=r"one.tif: too small along its first axis \(1\)"):
        split_train_val([s], 0.5, True, 0)


def test_validation_from_folder(tmp_path: Path) -> None:
    root = dataset(tmp_path, 3)
    val_img = np.full((32, 32), 200, np.uint8)
    write_pairs(root, [val_img], [np.ones((32, 32), np.uint8)], names=["v_000"], sub="val")
    cfg = config(root, VAL={"FROM_TRAIN": False, "PATH": str(root / "val/x"), "GT_PATH": str(root / "val/y"), "SPLIT_TRAIN": 0.5})
    d = load_data(cfg)
    assert [s.name for s in d.train] == ["img_000", "img_001", "img_002"]
    assert [s.name for s in d.val] == ["v_000"]
    np.testing.assert_allclose(d.normalized(d.val[0]), 200 / 255, rtol=1e-6)  # same normalisation as training
    assert counts(d, cfg).tolist() == [3 * 1024 - 32 * 6, 32 * 6]  # 1+2+3 foreground rows; val not counted


def test_validation_folder_missing(tmp_path: Path) -> None:
    root = dataset(tmp_path, 2)
    with pytest.raises(SegflowError, match="DATA.VAL.PATH.*does not exist"):
        load_data(config(root, VAL={"FROM_TRAIN": False, "PATH": str(root / "nope"), "GT_PATH": str(root / "nope")}))


def test_class_counts_multiclass(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    masks = [rng.integers(0, 4, (32, 32), dtype=np.uint8) for _ in range(4)]
    imgs = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(4)]
    root = write_pairs(tmp_path, imgs, masks)
    tree = tiny_config(root, DATA={"PATCH_SIZE": "(32, 32, 1)", "VAL": {"SPLIT_TRAIN": 0.25, "RANDOM": False}}, MODEL={"N_CLASSES": 4})
    cfg = build_config(tree)[0]
    d = load_data(cfg)
    assert [s.name for s in d.val] == ["img_003"]
    expected = np.bincount(np.concatenate([m.ravel() for m in masks[:3]]), minlength=4)
    np.testing.assert_array_equal(counts(d, cfg), expected)
    assert counts(d, cfg).dtype == np.int64


def test_3d_fixture_loads(data3d: Path) -> None:
    cfg = build_config(tiny_config(data3d, "3D"))[0]
    d = load_data(cfg)
    assert len(d.train) == 1 and len(d.val) == 1
    s = d.train[0]
    x = d.normalized(s)
    assert s.image.shape == x.shape == (16, 48, 48, 1) and x.dtype == np.float32 and s.mask.shape == (16, 48, 48)
    assert x.min() >= 0 and x.max() <= 1
    assert counts(d, cfg).sum() == 16 * 48 * 48 and counts(d, cfg)[1] > 0
