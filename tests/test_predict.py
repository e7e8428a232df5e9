"""`segflow predict` and the Python API, outside an experiment: the checkpoint alone is enough."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import segflow
from conftest import tiny_config, write_yaml


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data2d) -> Path:
    from segflow.cli import main

    root = tmp_path_factory.mktemp("model")
    cfg = write_yaml(root / "c.yaml", tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}))
    assert main(["run", "--config", str(cfg), "--result_dir", str(root), "--name", "m"]) == 0
    return root / "m" / "checkpoints" / "m_1-checkpoint-best.pth"


def test_predict_one_image_labels_and_probabilities(cli, tmp_path, checkpoint, data2d):
    src = data2d / "test" / "x" / "img_000.tif"
    code, out, err = cli("predict", checkpoint, src, tmp_path / "labels.tif")
    assert code == 0, err
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == (64, 64) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    code, _, err = cli("predict", checkpoint, src, tmp_path / "probs.tif", "--probabilities", "--overlap", "0.5", "--batch-size", "2")
    assert code == 0, err
    probs = tifffile.imread(tmp_path / "probs.tif")
    assert probs.dtype == np.float32 and probs.shape == (64, 64)
    # The API gives the same probabilities; labels are the 0.5 threshold of them.
    model = segflow.load_model(str(checkpoint), "cpu")
    api = model.predict(tifffile.imread(src), overlap=[0.5, 0.5], batch_size=2)
    np.testing.assert_allclose(api[..., 0], probs, atol=1e-6)
    default = model.predict(tifffile.imread(src))
    np.testing.assert_array_equal(model.labels(default), labels)
    np.testing.assert_array_equal(model.predict_labels(tifffile.imread(src)), labels)


def test_predict_folder_with_tta(cli, tmp_path, checkpoint, data2d):
    code, out, err = cli("predict", checkpoint, "--input-dir", data2d / "test" / "x", "--output-dir", tmp_path / "out", "--tta")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img_000.tif", "img_001.tif"]
    model = segflow.load_model(str(checkpoint), "cpu")
    expected = model.predict_labels(tifffile.imread(data2d / "test" / "x" / "img_001.tif"), tta=True)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "img_001.tif"), expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["IMG", "--input-dir", "DIR", "--output-dir", "OUT"], "either IMAGE or --input-dir"),
        (["--input-dir", "DIR"], "--input-dir needs --output-dir"),
        (["IMG", "--overlap", "1.5"], "--overlap 1.5"),
        (["missing.tif"], "no such image file"),
    ],
)
def test_predict_bad_arguments(cli, tmp_path, checkpoint, data2d, args, message):
    subst = {"IMG": str(data2d / "test" / "x" / "img_000.tif"), "DIR": str(data2d / "test" / "x"), "OUT": str(tmp_path / "o")}
    code, _, err = cli("predict", checkpoint, *[subst.get(a, a) for a in args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_not_a_checkpoint_and_truncated_checkpoint(cli, tmp_path, checkpoint, data2d):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint at all")
    code, _, err = cli("predict", bogus, data2d / "test" / "x" / "img_000.tif")
    assert code == 2 and "cannot be read" in err
    cut = tmp_path / "cut.pth"
    cut.write_bytes(checkpoint.read_bytes()[:5000])
    code, _, err = cli("predict", cut, data2d / "test" / "x" / "img_000.tif")
    assert code == 2 and "truncated, corrupt or not a checkpoint" in err


def test_api_rejects_wrong_shape(checkpoint):
    model = segflow.load_model(str(checkpoint), "cpu")
    with pytest.raises(segflow.errors.SegflowError, match="does not fit this 2D model"):
        model.predict(np.zeros((4, 8, 8, 8), np.uint8))
