"""Data defects of issue 10: pairing by name, negative mask values, integer images wider than 16 bits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import tiny_config, write_yaml

from segflow.config.loader import build_config
from segflow.config.schema import NormalizationConfig
from segflow.data.normalize import Normalizer
from segflow.data.pairs import pair_files
from segflow.errors import SegflowError
from segflow.inference.predictor import Predictor
from segflow.training.datasets import load_data


def _copy(data: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(data, tmp / "data"))


def _config(data: Path, **sections: dict):
    return build_config(tiny_config(data, **sections))[0]


def _rewrite_all(folder: Path, fn) -> None:
    for p in sorted(folder.iterdir()):
        tifffile.imwrite(p, fn(tifffile.imread(p)))


# ------------------------------------------------------------------------------------------ pairing
def test_same_names_pair_by_name_even_where_sorted_order_differs(capsys) -> None:
    # Sorted by full name, 'a.r.tif' < 'a.tif' but 'a.png' < 'a.r.png': sorted order would cross them.
    images = sorted([Path("x/a.tif"), Path("x/a.r.tif")])
    masks = sorted([Path("y/a.png"), Path("y/a.r.png")])
    assert [(i.name, m.name) for i, m in pair_files(images, masks, "train")] == [
        ("a.r.tif", "a.r.png"),
        ("a.tif", "a.png"),
    ]
    assert capsys.readouterr().out == ""  # names that match need no warning


def test_differing_names_are_paired_by_sorted_order_with_one_warning(capsys) -> None:
    images = [Path("imgs/cat.tif"), Path("imgs/dog.tif")]
    masks = [Path("gts/dog.tif"), Path("gts/fish.tif")]
    assert pair_files(images, masks, "train") == list(zip(images, masks))
    assert pair_files(images, masks, "train") == list(zip(images, masks))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # once per folder pair
    line = lines[0]
    assert line.startswith("warning: train: ") and "imgs" in line and "gts" in line
    assert (
        "images without a mask of the same name: cat.tif" in line
        and "masks without an image of the same name: fish.tif" in line
    )
    assert "paired by sorted order: cat.tif with dog.tif, dog.tif with fish.tif" in line


def test_pairing_errors_are_kept() -> None:
    with pytest.raises(SegflowError, match="2 images in x but 1 masks in y"):
        pair_files([Path("x/a_1.tif"), Path("x/a_2.tif")], [Path("y/a_1.tif")], "train")
    with pytest.raises(SegflowError, match="img_3.tif is paired with mask img_7.tif"):
        pair_files([Path("x/img_1.tif"), Path("x/img_3.tif")], [Path("y/img_1.tif"), Path("y/img_7.tif")], "train")


# ------------------------------------------------------------------------------------------ mask values
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("ignore", [-1, 255])
def test_negative_mask_values_are_an_error(tmp_path: Path, data2d: Path, dtype: type, ignore: int) -> None:
    data = _copy(data2d, tmp_path)
    mask = tifffile.imread(data / "train/y/img_001.tif").astype(dtype)
    mask[3, 5] = -1
    tifffile.imwrite(data / "train/y/img_001.tif", mask)
    cfg = _config(data, PROBLEM={"SEMANTIC_SEG": {"IGNORE_CLASS_ID": ignore}})
    with pytest.raises(SegflowError) as err:
        load_data(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{data}/train/y/img_001.tif: mask values -1 are negative") and "IGNORE_CLASS_ID" in msg


def test_negative_mask_value_fails_segflow_check(tmp_path: Path, data2d: Path, cli) -> None:
    data = _copy(data2d, tmp_path)
    mask = tifffile.imread(data / "test/y/img_000.tif").astype(np.int16)
    mask[0, 0] = -1
    tifffile.imwrite(data / "test/y/img_000.tif", mask)
    code, _, err = cli("check", "--config", write_yaml(tmp_path / "c.yaml", tiny_config(data)))
    assert code == 2 and f"{data}/test/y/img_000.tif: mask values -1 are negative" in err


def test_ignore_class_id_below_minus_one_is_a_config_error() -> None:
    with pytest.raises(SegflowError, match="IGNORE_CLASS_ID.*greater than or equal to -1"):
        build_config({"PROBLEM": {"SEMANTIC_SEG": {"IGNORE_CLASS_ID": -2}}})


# ------------------------------------------------------------------------------------------ wide integer images
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32])
def test_wide_integer_images_of_12_bit_data_are_divided_by_65535(
    tmp_path: Path, data2d: Path, dtype: type, capsys
) -> None:
    data = _copy(data2d, tmp_path)
    _rewrite_all(data / "train/x", lambda a: (a.astype(np.int64) * 16).astype(dtype))  # 0..4080: 12-bit data
    raw = tifffile.imread(data / "train/x/img_000.tif")
    loaded = load_data(_config(data, DATA={"VAL": {"SPLIT_TRAIN": 0.0}}))
    image = next(loaded.normalized(s) for s in loaded.train if s.name == "img_000")
    assert image.min() >= 0 and image.max() <= 1
    np.testing.assert_allclose(image[..., 0], raw / 65535, rtol=1e-6)
    assert loaded.normalizer.state()["wide_divisor"] == 65535
    assert f"the {np.dtype(dtype)} training images hold values" in capsys.readouterr().out


def test_wide_integer_images_of_8_bit_data_are_divided_by_255(tmp_path: Path, data2d: Path) -> None:
    data = _copy(data2d, tmp_path)
    _rewrite_all(data / "train/x", lambda a: a.astype(np.int64))
    raw = tifffile.imread(data / "train/x/img_000.tif")
    loaded = load_data(_config(data, DATA={"VAL": {"SPLIT_TRAIN": 0.0}}))
    image = next(loaded.normalized(s) for s in loaded.train if s.name == "img_000")
    np.testing.assert_allclose(image[..., 0], raw / 255, rtol=1e-6)


def test_prediction_divides_wide_images_as_training_did(tmp_path: Path, data2d: Path, cli) -> None:
    """A checkpoint trained on int32 12-bit images predicts an int32 image as the same image in uint16."""
    data = _copy(data2d, tmp_path)
    for split in ("train", "test"):
        _rewrite_all(data / split / "x", lambda a: a.astype(np.int32) * 16)
    tree = tiny_config(data, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False})
    code, _, err = cli(
        "run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path / "res", "--name", "w"
    )
    assert code == 0, err
    predictor = Predictor.from_checkpoint(tmp_path / "res/w/checkpoints/w_1-checkpoint-best.pth")
    assert predictor.normalizer.wide_divisor == 65535
    wide = tifffile.imread(data / "test/x/img_000.tif")
    assert wide.dtype == np.int32
    np.testing.assert_array_equal(predictor.predict(wide), predictor.predict(wide.astype(np.uint16)))


def test_checkpoints_without_a_fitted_divisor_divide_as_before() -> None:
    old = Normalizer.from_state(NormalizationConfig(TYPE="div"), {"mean": None, "std": None})
    image = np.array([[0, 2**20]], np.int64)[..., None]
    np.testing.assert_allclose(old(image)[..., 0], [[0, 2**20 / np.iinfo(np.int64).max]])


@pytest.mark.parametrize("dtype, value", [(np.uint32, 4_000_000_000), (np.int32, -7), (np.int64, 70_000)])
def test_wide_images_outside_16_bits_are_an_error_naming_file_and_range(
    tmp_path: Path, data2d: Path, dtype: type, value: int
) -> None:
    data = _copy(data2d, tmp_path)
    image = tifffile.imread(data / "train/x/img_001.tif").astype(dtype)
    image[3, 5] = value
    tifffile.imwrite(data / "train/x/img_001.tif", image)
    with pytest.raises(SegflowError) as err:
        load_data(_config(data))
    msg = str(err.value)
    assert msg.startswith(f"{data}/train/x/img_001.tif: {np.dtype(dtype)} image with values")
    assert str(value) in msg and "scale_range or zero_mean_unit_variance" in msg
    # scale_range takes them as they are.
    loaded = load_data(
        _config(data, DATA={"NORMALIZATION": {"TYPE": "scale_range"}, "VAL": {"SPLIT_TRAIN": 0.0}})
    )
    assert all(loaded.normalized(s).min() >= 0 and loaded.normalized(s).max() <= 1 for s in loaded.train)


def test_bool_tiff_mask_reads_as_classes_0_and_1(tmp_path: Path) -> None:
    from segflow.io.images import read_mask

    mask = np.zeros((64, 64), bool)
    mask[10:20, 5:9] = True
    tifffile.imwrite(tmp_path / "m.tif", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif", 2), mask.astype(np.uint8))
