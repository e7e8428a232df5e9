"""The ``segflow`` command: check, init, reference, one-line errors for bad input, and the BiaPy templates."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import BIAPY_TEMPLATES, ISBI, tiny_config, write_yaml

from segflow.config.loader import load_config
from segflow.config.reference import reference_markdown
from segflow.data.synthetic import make_dataset

ISBI_VOLUME = ISBI / "volumes" / "train_volume_30x512x512.tif"


def one_error(code: int, err: str, *needles: str) -> str:
    """Assert the CLI failed the way a user should see it: exit 2, one ``segflow: error:`` line, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("segflow: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def copy_data(src: Path, tmp_path: Path) -> Path:
    """A private copy of a session dataset, safe to modify."""
    return Path(shutil.copytree(src, tmp_path / "data"))


def run_args(config: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--config", str(config), "--result_dir", str(tmp_path / "results"), "--name", "job", *extra]


# --------------------------------------------------------------------------------------------- check
def test_check_reports_pairs_shapes_dtypes_and_classes(cli, tmp_path: Path, data2d: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d))
    code, out, err = cli("check", "--config", config)
    assert code == 0, err
    assert f"Config {config}: valid (2D, 2 classes, patch (32, 32, 1), unet)" in out
    pairs = "img_000.tif <-> img_000.tif, img_001.tif <-> img_001.tif, img_002.tif <-> img_002.tif and 1 more"
    assert f"train: 4 images with masks from {data2d / 'train/x'}\n  pairs: {pairs}\n" in out
    assert "  pairs: img_000.tif <-> img_000.tif, img_001.tif <-> img_001.tif\n" in out  # the 2 test pairs, no "more"
    assert "shapes (64, 64, 1); dtypes uint8" in out
    assert "classes (pixel fraction): 0: " in out and ", 1: " in out
    assert "validation: 1 of the training images (DATA.VAL.SPLIT_TRAIN=0.25)" in out
    assert f"test: 2 images with masks from {data2d / 'test/x'}" in out
    assert out.rstrip().endswith("OK: config and data are ready")
    assert not (tmp_path / "results").exists()
    assert err == ""


def test_check_3d_and_a_class_that_never_occurs(cli, tmp_path: Path, data3d: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data3d, "3D", MODEL={"N_CLASSES": 3}))
    code, out, err = cli("check", "--config", config)
    assert code == 0, err
    assert "valid (3D, 3 classes, patch (16, 32, 32, 1), unet)" in out
    assert "train: 2 images with masks" in out and "shapes (16, 48, 48, 1); dtypes uint8" in out
    assert "test: 1 image with masks" in out
    assert "warning: class 2 never occurs in these masks" in out
    assert ", 2: 0.0%" in out


def test_check_resolves_relative_paths_against_the_config_folder(cli, tmp_path: Path, data2d: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    shutil.copytree(data2d, project / "images")
    tree = tiny_config(Path("images"))  # relative paths, as a user writes them next to the config
    config = write_yaml(project / "c.yaml", tree)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = cli("check", "--config", config)
    assert code == 0, err
    assert f"train: 4 images with masks from {(project / 'images/train/x').resolve()}" in out


def test_check_prints_warnings_for_biapy_keys_that_are_off(cli, tmp_path: Path, data2d: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d, DATA={"PREPROCESS": {"CLAHE": {"ENABLE": False}}}))
    code, out, err = cli("check", "--config", config)
    assert code == 0, err
    assert "warning: " in out and "DATA.PREPROCESS.CLAHE.ENABLE is a BiaPy key that segflow does not implement" in out


def test_check_applies_overrides(cli, tmp_path: Path, data2d: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d))
    code, out, err = cli("check", "--config", config, "-D", "MODEL.N_CLASSES=4", "-D", "DATA.PATCH_SIZE=(16, 16, 1)")
    assert code == 0, err
    assert "valid (2D, 4 classes, patch (16, 16, 1), unet)" in out


# --------------------------------------------------------------------------------------------- init, reference
@pytest.mark.parametrize(("ndim", "patch_len"), [("2D", 3), ("3D", 4)])
def test_init_writes_a_commented_config_that_loads(cli, tmp_path: Path, ndim: str, patch_len: int) -> None:
    from segflow.models.networks import check_model

    code, out, err = cli("init", "--ndim", ndim)
    assert code == 0, err
    comments = [line for line in out.splitlines() if line.strip().startswith("#")]
    assert len(comments) >= 20
    path = tmp_path / "start.yaml"
    path.write_text(out)
    cfg, warnings = load_config(path)
    assert warnings == []
    assert ndim == cfg.PROBLEM.NDIM
    assert len(cfg.DATA.PATCH_SIZE) == patch_len
    assert cfg.TRAIN.ENABLE and cfg.TEST.ENABLE
    assert str(tmp_path.resolve() / "data/train/x") == cfg.DATA.TRAIN.PATH
    check_model(cfg)  # a starting config must not fail on its own patch size
    if ndim == "3D":
        assert cfg.AUGMENTOR.ZFLIP is True


def test_reference_command_prints_the_schema_reference(cli) -> None:
    code, out, _ = cli("reference")
    assert code == 0
    assert out == reference_markdown()
    assert "| `TRAIN.EPOCHS` | int | `360` |" in out


# --------------------------------------------------------------------------------------------- bad data (run and check)
def _ten_images_nine_masks(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    data = make_dataset(tmp_path / "data", ndim=2, n_train=10, n_test=1, shape=(32, 32), seed=3)
    (data / "train/y/img_004.tif").unlink()
    return data, ("10 images", "9 masks", "img_004")


def _shape_mismatch(tmp_path: Path, data2d: Path) -> tuple[Path, tuple[str, ...]]:
    data = copy_data(data2d, tmp_path)
    tifffile.imwrite(data / "train/y/img_001.tif", np.zeros((60, 64), np.uint8))
    return data, ("img_001.tif", "(64, 64)", "(60, 64)")


def _bad_class(tmp_path: Path, data2d: Path) -> tuple[Path, tuple[str, ...]]:
    data = copy_data(data2d, tmp_path)
    mask = tifffile.imread(data / "train/y/img_002.tif")
    mask[3, 5] = 2
    tifffile.imwrite(data / "train/y/img_002.tif", mask)
    return data, (str(data / "train/y/img_002.tif"), "mask values 2", "MODEL.N_CLASSES=2")


def _random_bytes(tmp_path: Path, data2d: Path) -> tuple[Path, tuple[str, ...]]:
    data = copy_data(data2d, tmp_path)
    (data / "train/x/img_002.tif").write_bytes(np.random.default_rng(0).bytes(3000))
    return data, (str(data / "train/x/img_002.tif"), "cannot be read as an image")


def _truncated(tmp_path: Path, data2d: Path) -> tuple[Path, tuple[str, ...]]:
    data = copy_data(data2d, tmp_path)
    path = data / "train/x/img_003.tif"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return data, (str(path), "cannot be read as an image", "corrupt or truncated")


def _missing_folder(tmp_path: Path, data2d: Path) -> tuple[Path, tuple[str, ...]]:
    data = copy_data(data2d, tmp_path)
    shutil.rmtree(data / "train/y")
    return data, ("DATA.TRAIN.GT_PATH", str(data / "train/y"), "does not exist")


BAD_DATA = {
    "missing_folder": _missing_folder,
    "10_images_9_masks": lambda tmp_path, data2d: _ten_images_nine_masks(tmp_path),
    "shape_mismatch": _shape_mismatch,
    "mask_value_ge_n_classes": _bad_class,
    "corrupt_tiff_random_bytes": _random_bytes,
    "truncated_tiff": _truncated,
}


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_gives_one_error_line(cli, tmp_path: Path, data2d: Path, case: str, command: str) -> None:
    data, needles = BAD_DATA[case](tmp_path, data2d)
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data))
    args = run_args(config, tmp_path) if command == "run" else ["check", "--config", str(config)]
    code, _, err = cli(*args)
    one_error(code, err, *needles)
    assert not list((tmp_path / "results").glob("**/*.pth"))


def test_truncated_real_tiff_volume(cli, tmp_path: Path, data3d: Path) -> None:
    if not ISBI_VOLUME.exists():
        pytest.skip("ISBI volume not available")
    data = copy_data(data3d, tmp_path)
    with ISBI_VOLUME.open("rb") as f:
        (data / "train/x/img_001.tif").write_bytes(f.read(300_000))
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data, "3D"))
    code, _, err = cli(*run_args(config, tmp_path))
    one_error(code, err, str(data / "train/x/img_001.tif"), "corrupt or truncated")


def test_patch_deeper_than_the_stack(cli, tmp_path: Path, data3d: Path) -> None:
    # data3d stacks are 16 deep; a 32-deep patch does not fit and REFLECT_TO_COMPLETE_SHAPE is false.
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data3d, "3D", DATA={"PATCH_SIZE": "(32, 32, 32, 1)", "REFLECT_TO_COMPLETE_SHAPE": False}))
    code, _, err = cli(*run_args(config, tmp_path))
    one_error(code, err, "DATA.PATCH_SIZE", "z: 16 < 32", "REFLECT_TO_COMPLETE_SHAPE")
    code, _, err = cli("check", "--config", config)
    one_error(code, err, "DATA.PATCH_SIZE", "(16, 48, 48)", "REFLECT_TO_COMPLETE_SHAPE")


def test_gpu_that_does_not_exist(cli, tmp_path: Path, data2d: Path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d))
    code, _, err = cli(*run_args(config, tmp_path, "--gpu", "3"))
    one_error(code, err, "--gpu 3", "no CUDA GPU", "--gpu cpu")
    assert not list((tmp_path / "results").glob("**/*.pth"))


# --------------------------------------------------------------------------------------------- bad config
BAD_CONFIG = {
    "typo": ({"TRAIN": {"EPOCS": 3}}, (), ("unknown config key TRAIN.EPOCS", "did you mean TRAIN.EPOCHS?")),
    "wrong_type": ({"TRAIN": {"EPOCHS": "ten"}}, (), ("TRAIN.EPOCHS", "'ten'", "integer")),
    "negative_epochs": ({"TRAIN": {"EPOCHS": -3}}, (), ("TRAIN.EPOCHS", "greater than 0", "-3")),
    "biapy_not_implemented": (
        {"DATA": {"PREPROCESS": {"CLAHE": {"ENABLE": True}}}},
        (),
        ("DATA.PREPROCESS.CLAHE.ENABLE", "BiaPy key that segflow does not implement"),
    ),
    "literal": ({"MODEL": {"ARCHITECTURE": "unet3"}}, (), ("MODEL.ARCHITECTURE", "'unet', 'resunet', 'attention_unet', 'segresnet', 'seunet', 'multiresunet', 'resunet++', 'unetr', 'swinunetr' or 'flexible_unet'")),
    "override_typo": ({}, ("-D", "TRAIN.EPOCS=3"), ("-D: unknown config key TRAIN.EPOCS", "did you mean TRAIN.EPOCHS?")),
    "override_wrong_type": ({}, ("-D", "TRAIN.EPOCHS=ten"), ("TRAIN.EPOCHS", "'ten'")),
    "override_biapy": ({}, ("-D", "DATA.PREPROCESS.CLAHE.ENABLE=true"), ("DATA.PREPROCESS.CLAHE.ENABLE", "does not implement")),
    "patch_ndim": ({"DATA": {"PATCH_SIZE": "(32, 32, 32, 1)"}}, (), ("DATA.PATCH_SIZE", "PROBLEM.NDIM 2D needs 3")),
}


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_bad_config_gives_one_error_line(cli, tmp_path: Path, data2d: Path, case: str, command: str) -> None:
    sections, extra, needles = BAD_CONFIG[case]
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d, **sections))
    args = run_args(config, tmp_path, *extra) if command == "run" else ["check", "--config", str(config), *extra]
    code, out, err = cli(*args)
    line = one_error(code, err, *needles)
    if not extra:
        assert str(config) in line  # the file is named
    assert "FINISHED" not in out and not (tmp_path / "results").exists()


def test_yaml_syntax_error_names_the_line(cli, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("TRAIN:\n  EPOCHS: 5\n  LR: [0.1, 0.2\nTEST:\n  ENABLE: true\n")
    code, _, err = cli(*run_args(config, tmp_path))
    one_error(code, err, str(config), "line 4", "YAML syntax error")


def test_missing_config_file(cli, tmp_path: Path) -> None:
    code, _, err = cli("check", "--config", tmp_path / "nope.yaml")
    one_error(code, err, str(tmp_path / "nope.yaml"), "not found")


def test_command_line_mistakes_give_one_error_line(cli) -> None:
    code, _, err = cli("run", "--config", "c.yaml")
    one_error(code, err, "--result_dir", "--name", "segflow run --help")
    code, _, err = cli("init", "--ndim", "4D")
    one_error(code, err, "--ndim", "'4D'")


# --------------------------------------------------------------------------------------------- a real process
def _segflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segflow.app.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_subprocess_config_typo(tmp_path: Path, data2d: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d, TRAIN={"EPOCS": 3}))
    proc = _segflow(*run_args(config, tmp_path), cwd=tmp_path)
    one_error(proc.returncode, proc.stderr, "unknown config key TRAIN.EPOCS", "did you mean TRAIN.EPOCHS?")


def test_subprocess_truncated_tiff(tmp_path: Path, data2d: Path) -> None:
    # tifffile logs its own warning on stderr for such a file; the user must still see one line only.
    data = copy_data(data2d, tmp_path)
    bad = data / "train/x/img_001.tif"
    bad.write_bytes(bad.read_bytes()[:8])
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data))
    proc = _segflow("check", "--config", str(config), cwd=tmp_path)
    one_error(proc.returncode, proc.stderr, str(bad), "corrupt or truncated")
    assert "OK:" not in proc.stdout


# --------------------------------------------------------------------------------------------- the BiaPy templates
@pytest.fixture(scope="module")
def data256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data256"), ndim=2, n_train=2, n_test=1, shape=(256, 256))


@pytest.fixture(scope="module")
def data80(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Two training stacks, so DATA.VAL.SPLIT_TRAIN 0.1 holds one out; the template's own 80^3 patch and
    # resunet 16-256 are kept (about 20 s on 2 CPU cores).
    return make_dataset(tmp_path_factory.mktemp("data80"), ndim=3, n_train=2, n_test=1, shape=(80, 80, 80))


@pytest.mark.parametrize(
    ("template", "arch", "shape"),
    [
        ("2d_semantic_segmentation.yaml", "unet", (256, 256)),
        ("wound_segmentation.yaml", "attention_unet", (256, 256)),
        ("3d_semantic_segmentation.yaml", "resunet", (80, 80, 80)),
    ],
)
def test_biapy_template_runs(cli, request, tmp_path: Path, monkeypatch, template: str, arch: str, shape: tuple) -> None:
    data = request.getfixturevalue("data80" if len(shape) == 3 else "data256")
    monkeypatch.chdir(data)  # the -D paths are relative: they resolve against the current folder
    code, out, err = cli(
        "run", "--config", BIAPY_TEMPLATES / template, "--result_dir", tmp_path / "res", "--name", "t",
        "-D", "DATA.TRAIN.PATH=train/x", "-D", "DATA.TRAIN.GT_PATH=train/y",
        "-D", "DATA.TEST.PATH=test/x", "-D", "DATA.TEST.GT_PATH=test/y",
        "-D", "TRAIN.EPOCHS=1", "-D", "SYSTEM.NUM_WORKERS=0",
    )  # fmt: skip
    assert code == 0, err
    assert "Training on 1 image(s)" in out and "validating on 1 image(s)" in out
    assert "FINISHED JOB t_1" in out
    job = tmp_path / "res" / "t"
    assert (job / "checkpoints" / "t_1-checkpoint-best.pth").stat().st_size > 0
    assert (job / "checkpoints" / "t_1-checkpoint-last.pth").stat().st_size > 0
    run = job / "results" / "t_1"
    prediction = tifffile.imread(run / "per_image" / "img_000.tif")
    assert prediction.shape[: len(shape)] == shape
    assert (run / "per_image_binarized" / "img_000.tif").exists()
    rows = list(csv.DictReader((run / "test_metrics.csv").read_text().splitlines()))
    ious = [float(r["foreground_iou"]) for r in rows if r["foreground_iou"] not in ("", "-")]
    assert ious and all(0 <= v <= 1 for v in ious)
    # The saved config is the template with the overrides applied.
    saved, _ = load_config(job / "config_files" / "t_1.yaml")  # one copy per run: <name>_<run_id>.yaml
    assert arch == saved.MODEL.ARCHITECTURE
    assert saved.TRAIN.EPOCHS == 1
    assert str(data.resolve() / "train/x") == saved.DATA.TRAIN.PATH
    assert str(data.resolve() / "test/y") == saved.DATA.TEST.GT_PATH


def test_check_warns_about_a_constant_image(cli, tmp_path: Path, data2d: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(data2d, data)
    flat = data / "train" / "x" / "img_001.tif"
    tifffile.imwrite(flat, np.full_like(tifffile.imread(flat), 7))
    code, out, err = cli("check", "--config", write_yaml(tmp_path / "c.yaml", tiny_config(data)))
    assert code == 0, err
    assert f"warning: {flat}: every pixel is 7; a constant image teaches the network nothing" in out
    assert out.count("a constant image") == 1  # the other images vary
