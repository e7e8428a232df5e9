"""MODEL.SOURCE bmz (BiaPy's key): a run starts from a local BioImage Model Zoo package that segflow wrote, zipped or
unzipped, taking its network, patch and normalisation for the keys the config does not set; REUSE_BMZ_CONFIG."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from conftest import tiny_config, write_yaml

from segflow.config.loader import load_config
from segflow.errors import SegflowError


def _bmz_tree(data2d: Path, source: str, **sections: dict) -> dict:
    """A config that names no network key, patch size or normalisation: all from the package."""
    tree = tiny_config(data2d, **{"TRAIN": {"ENABLE": False}, **sections})
    tree["MODEL"]["SOURCE"] = "bmz"
    tree["MODEL"].setdefault("BMZ", {})["SOURCE_MODEL_ID"] = source
    del tree["MODEL"]["FEATURE_MAPS"], tree["DATA"]["PATCH_SIZE"]
    return tree


def _iou(out: str) -> str:
    return re.search(r"Test Foreground IoU.*", out).group(0)


def test_a_package_tests_as_its_checkpoint_zipped_or_unzipped(package, checkpoint, data2d, tmp_path, cli) -> None:
    """The package, copied beside the config and named relatively, then unzipped: the test phase gives the IoU that
    the checkpoint itself gives, and the run's config copy holds the package's network."""
    shutil.copy(package[0], tmp_path / "model.zip")
    with zipfile.ZipFile(package[0]) as z:
        z.extractall(tmp_path / "model")
    baseline = tiny_config(data2d, MODEL={"LOAD_CHECKPOINT": True}, PATHS={"CHECKPOINT_FILE": str(checkpoint)}, TRAIN={"ENABLE": False})
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "b.yaml", baseline), "--result_dir", tmp_path / "res", "--name", "b", "--gpu", "cpu")
    assert code == 0, err
    for name in ("model.zip", "model"):
        config = write_yaml(tmp_path / f"{name}.yaml", _bmz_tree(data2d, name))
        code, got, err = cli("run", "--config", config, "--result_dir", tmp_path / "res", "--name", name.replace(".", "_"), "--gpu", "cpu")
        assert code == 0, err
        assert _iou(got) == _iou(out)
        cfg = load_config(config)[0]
        assert cfg.MODEL.FEATURE_MAPS == [4, 8, 16] and cfg.DATA.PATCH_SIZE == (32, 32, 1)  # the package's, not the defaults
        assert str(tmp_path / name) == cfg.PATHS.CHECKPOINT_FILE and cfg.MODEL.LOAD_CHECKPOINT
    copy = yaml.safe_load((tmp_path / "res" / "model" / "config_files" / "model_1.yaml").read_text())
    assert copy["MODEL"]["FEATURE_MAPS"] == [4, 8, 16] and copy["MODEL"]["SOURCE"] == "bmz"
    code, _, err = cli("predict", tmp_path / "model", data2d / "test" / "x" / "img_001.tif", tmp_path / "p.tif", "--gpu", "cpu")
    assert code == 0, err
    code, _, err = cli("predict", checkpoint, data2d / "test" / "x" / "img_001.tif", tmp_path / "q.tif", "--gpu", "cpu")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif"), tifffile.imread(tmp_path / "q.tif"))


def test_the_user_s_keys_win_over_the_package_s(package, data2d, tmp_path, cli) -> None:
    """MODEL.N_CLASSES set in the config: fine-tuning from the package with another class count (a new output layer)."""
    tree = _bmz_tree(data2d, str(package[0]), MODEL={"N_CLASSES": 3}, TRAIN={"ENABLE": True, "EPOCHS": 1}, TEST={"ENABLE": False})
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path, "--name", "ft", "--gpu", "cpu")
    assert code == 0, err
    assert f"Starting from the weights in {package[0]}" in out
    assert "MODEL.N_CLASSES 3: the checkpoint was trained for 2; its output layer" in out


def test_reuse_bmz_config_carries_the_source_package_s_fields(package, data2d, tmp_path, cli) -> None:
    source = tmp_path / "named.zip"
    with zipfile.ZipFile(package[0]) as z, zipfile.ZipFile(source, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "rdf.yaml":
                rdf = yaml.safe_load(data)
                rdf.update(name="Blob finder", description="Finds blobs", license="MIT", version="2.0.0", tags=[*rdf["tags"], "blobs"],
                           authors=[{"name": "Ada"}], cite=[{"text": "paper", "doi": "10.1000/xyz"}, *rdf["cite"]])  # fmt: skip
                data = yaml.safe_dump(rdf).encode()
            out.writestr(name, data)
    export = {"ENABLE": True, "REUSE_BMZ_CONFIG": True, "MODEL_NAME": "ignored"}
    tree = _bmz_tree(data2d, str(source), MODEL={"BMZ": {"EXPORT": export}}, TEST={"ENABLE": False}, TRAIN={"ENABLE": True, "EPOCHS": 1})
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path, "--name", "r", "--gpu", "cpu")
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "r" / "results" / "r_1" / "BMZ_files" / "r_1.zip") as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert (rdf["name"], rdf["description"], rdf["license"], rdf["version"]) == ("Blob finder", "Finds blobs", "MIT", "2.0.0")
    assert rdf["authors"] == [{"name": "Ada"}] and rdf["tags"].count("segflow") == 1 and rdf["tags"][-1] == "blobs"
    assert [c["text"] for c in rdf["cite"]] == ["paper", "segflow: semantic segmentation of 2D and 3D images"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"SOURCE": "bmz"}, "MODEL.SOURCE bmz: give the package in MODEL.BMZ.SOURCE_MODEL_ID"),
        ({"SOURCE": "bmz", "BMZ": {"SOURCE_MODEL_ID": "affable-shark"}}, "MODEL.BMZ.SOURCE_MODEL_ID 'affable-shark': no such file or folder; segflow downloads nothing"),
        ({"SOURCE": "torchvision"}, "MODEL.SOURCE: Input should be 'biapy' or 'bmz'"),
    ],
)
def test_a_source_that_cannot_be_read_is_one_line(tmp_path, model, expected) -> None:
    with pytest.raises(SegflowError, match=re.escape(expected)):
        load_config(write_yaml(tmp_path / "c.yaml", {"MODEL": model}))


def test_a_checkpoint_file_besides_the_package_is_refused(package, tmp_path) -> None:
    tree = {"MODEL": {"SOURCE": "bmz", "BMZ": {"SOURCE_MODEL_ID": str(package[0])}}, "PATHS": {"CHECKPOINT_FILE": str(tmp_path / "x.pth")}}
    with pytest.raises(SegflowError, match="MODEL.SOURCE bmz takes the weights of MODEL.BMZ.SOURCE_MODEL_ID"):
        load_config(write_yaml(tmp_path / "c.yaml", tree))
