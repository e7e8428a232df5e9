"""Run orchestration: one config copy per run, checks before writes (resume, split, 3D stack), --overwrite."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from conftest import tiny_config, write_yaml
from test_cli import one_error


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data2d: Path) -> tuple[Path, Path]:
    """A finished one-epoch run ``job_1`` with a one-cycle schedule: (its config, its --result_dir)."""
    from segflow.app.cli import main

    root = tmp_path_factory.mktemp("finished")
    config = write_yaml(root / "c.yaml", tiny_config(data2d, TRAIN={"EPOCHS": 1, "LR_SCHEDULER": {"NAME": "onecycle"}}, TEST={"ENABLE": False}))
    assert main(["run", "--config", str(config), "--result_dir", str(root / "res"), "--name", "job"]) == 0
    return config, root / "res"


@pytest.fixture
def earlier(finished: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the finished run's results, safe to change."""
    config, results = finished
    return config, Path(shutil.copytree(results, tmp_path / "res"))


def _run(config: Path, results: Path, *extra: str) -> list[str]:
    return ["run", "--config", str(config), "--result_dir", str(results), "--name", "job", *extra]


def test_each_run_keeps_its_own_config_copy(cli, earlier) -> None:
    config, results = earlier
    copies = results / "job" / "config_files"
    first = (copies / "job_1.yaml").read_bytes()
    # Run 2 only tests run 1's model, with another LR in its config (a quick run that writes a config copy).
    best = results / "job/checkpoints/job_1-checkpoint-best.pth"
    overrides = ("-D", "TRAIN.LR=0.005", "-D", "TRAIN.ENABLE=false", "-D", "TEST.ENABLE=true", "-D", f"PATHS.CHECKPOINT_FILE={best}")
    code, _, err = cli(*_run(config, results, "--run_id", "2", *overrides))
    assert code == 0, err
    assert sorted(p.name for p in copies.iterdir()) == ["job_1.yaml", "job_2.yaml"]
    assert (copies / "job_1.yaml").read_bytes() == first  # run 2 never replaces run 1's copy
    assert yaml.safe_load((copies / "job_2.yaml").read_text())["TRAIN"]["LR"] == 0.005
    assert yaml.safe_load(first)["TRAIN"]["LR"] == 0.01


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("TRAIN.EPOCHS=3", ("TRAIN.EPOCHS 3", "run job_1 was started with 1 epochs", "onecycle")),
        ("MODEL.FEATURE_MAPS=[8, 16, 32]", ("run job_1 cannot resume", "MODEL.FEATURE_MAPS=[4, 8, 16] in the checkpoint", "--overwrite")),
        ("MODEL.ARCHITECTURE=resunet", ("run job_1 cannot resume", "MODEL.ARCHITECTURE=unet in the checkpoint, resunet", "--overwrite")),
        ("TRAIN.OPTIMIZER=SGD", ("TRAIN.OPTIMIZER 'SGD'", "run job_1 was started with 'ADAMW'", "--overwrite")),
    ],
)
def test_refused_resume_changes_nothing(cli, earlier, override: str, needles: tuple[str, ...]) -> None:
    # The finished marker and the config copy survive: the refusal comes before anything is written.
    config, results = earlier
    before = _snapshot(results)
    assert (results / "job/results/job_1/train_logs/job_1_finished.json") in before
    code, _, err = cli(*_run(config, results, "--resume", "-D", override))
    one_error(code, err, *needles)
    assert _snapshot(results) == before


def test_overwrite_removes_only_this_runs_training_outputs(cli, earlier) -> None:
    config, results = earlier
    job = results / "job"
    stale = [
        job / "checkpoints/job_1-checkpoint-last.prev.pth",
        job / "checkpoints/job_1-checkpoint-best.pth.part",
        job / "results/job_1/tensorboard/events.out.tfevents.0.old.0",
        job / "results/job_1/charts/job_1_old_chart.png",
        job / "results/job_1/aug/aug_009_x.tif",
    ]
    others = [
        job / "checkpoints/job_2-checkpoint-best.pth",
        job / "checkpoints/job_10-checkpoint-last.prev.pth",  # starts with "job_1" but is run 10's
        job / "results/job_2/tensorboard/events.out.tfevents.0.run2.0",
        job / "results/job_1/per_image/img_000.tif",  # a test output: the test phase rewrites those
    ]
    for path in stale + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"from before")
    old_best = (job / "checkpoints/job_1-checkpoint-best.pth").read_bytes()
    code, _, err = cli(*_run(config, results, "--overwrite"))
    assert code == 0, err
    assert [p for p in stale if p.exists()] == []
    assert all(p.read_bytes() == b"from before" for p in others)
    assert (job / "checkpoints/job_1-checkpoint-best.pth").read_bytes() != old_best
    assert len(list((job / "results/job_1/tensorboard").glob("events.out.tfevents.*"))) == 1  # the new run's only
    assert (job / "results/job_1/train_logs/job_1_finished.json").is_file()


def _single_image(tmp_path: Path, data2d: Path) -> Path:
    data = Path(shutil.copytree(data2d, tmp_path / "data"))
    for i in (1, 2, 3):
        (data / f"train/x/img_00{i}.tif").unlink()
        (data / f"train/y/img_00{i}.tif").unlink()
    return data


def test_single_image_whose_validation_part_is_smaller_than_the_patch(cli, tmp_path: Path, data2d: Path) -> None:
    # A 64x64 image, DATA.VAL.SPLIT_TRAIN 0.25: 16 rows for validation, patch 32x32.
    data = _single_image(tmp_path, data2d)
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data))
    needles = (
        str(data / "train/x/img_000.tif"), "DATA.VAL.SPLIT_TRAIN=0.25", "16 to validation (16, 64)",
        "smaller than DATA.PATCH_SIZE (32, 32)", "set DATA.VAL.SPLIT_TRAIN to 0.5", "DATA.VAL.FROM_TRAIN: false",
    )  # fmt: skip
    code, out, err = cli("check", "--config", config)
    one_error(code, err, *needles)
    assert "OK:" not in out
    code, _, err = cli(*_run(config, tmp_path / "res"))
    one_error(code, err, *needles)
    assert not (tmp_path / "res").exists()
    code, out, err = cli("check", "--config", config, "-D", "DATA.VAL.SPLIT_TRAIN=0.5")
    assert code == 0, err
    assert "validation: the last 50% of the single training image, (32, 64)" in out


def test_3d_stack_of_test_images_of_mixed_sizes_fails_before_training(cli, tmp_path: Path, data2d: Path) -> None:
    data = Path(shutil.copytree(data2d, tmp_path / "data"))
    for folder in ("x", "y"):
        tifffile.imwrite(data / f"test/{folder}/img_001.tif", np.zeros((48, 64), np.uint8))
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data, TEST={"ANALIZE_2D_IMGS_AS_3D_STACK": True}))
    needles = ("TEST.ANALIZE_2D_IMGS_AS_3D_STACK", "img_000.tif is (64, 64) and img_001.tif is (48, 64)", "one size")
    code, _, err = cli("check", "--config", config)
    one_error(code, err, *needles)
    code, _, err = cli(*_run(config, tmp_path / "res"))
    one_error(code, err, *needles)
    assert not (tmp_path / "res").exists()  # before training, before the config copy
