"""Training end to end on tiny data: result folders, checkpoints, logs, charts, seeds, schedulers, early stopping."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from conftest import tiny_config, write_yaml
from segflow.config import build_config
from segflow.errors import SegflowError
from segflow.inference import Predictor
from segflow.training import SegModel, precision, resolve_devices


def _run(cli, tmp_path: Path, cfg: dict, *extra: str, name: str = "t", run_id: str = "1") -> tuple[int, str, str]:
    config = write_yaml(tmp_path / "job.yaml", cfg)
    return cli("run", "--config", config, "--result_dir", tmp_path / "res", "--name", name, "--run_id", run_id, *extra)


def _log(tmp_path: Path, job: str = "t_1", name: str = "t") -> list[dict[str, str]]:
    with open(tmp_path / "res" / name / "results" / job / "train_logs" / f"{job}_log.csv") as f:
        return list(csv.DictReader(f))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_run_writes_biapy_result_tree_and_full_checkpoints(cli, tmp_path, data2d):
    code, out, err = _run(cli, tmp_path, tiny_config(data2d, AUGMENTOR={"ENABLE": True, "HFLIP": True, "AUG_NUM_SAMPLES": 2}))
    assert code == 0, err
    root = tmp_path / "res" / "t"
    run = root / "results" / "t_1"
    assert (root / "config_files" / "job.yaml").is_file()
    for which in ("best", "last"):
        assert (root / "checkpoints" / f"t_1-checkpoint-{which}.pth").is_file()
    assert (run / "charts" / "t_1_loss.png").is_file() and (run / "charts" / "t_1_jaccard_index.png").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "aug").glob("aug_*")) == ["aug_000_x.tif", "aug_000_y.tif", "aug_001_x.tif", "aug_001_y.tif"]
    assert sorted(p.name for p in (run / "per_image").iterdir()) == ["img_000.tif", "img_001.tif"]
    assert "FINISHED JOB t_1" in out

    rows = _log(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "time", "lr", "loss", "IoU", "val_loss", "val_IoU"]
    assert all(0 <= float(r["val_IoU"]) <= 1 and float(r["loss"]) > 0 for r in rows)

    ckpt = torch.load(root / "checkpoints" / "t_1-checkpoint-last.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["optimizer_states"] and ckpt["segflow_version"]
    cfg = build_config(ckpt["hyper_parameters"]["config"])[0]
    assert cfg.MODEL.FEATURE_MAPS == [4, 8, 16] and cfg.TRAIN.EPOCHS == 2
    # The checkpoint alone is enough to predict.
    predictor = Predictor.from_checkpoint(root / "checkpoints" / "t_1-checkpoint-best.pth")
    image = tifffile.imread(data2d / "test" / "x" / "img_000.tif")[..., None]
    probs = predictor.predict(image)
    assert probs.shape == (64, 64, 1) and probs.dtype == np.float32 and 0 <= probs.min() <= probs.max() <= 1


def test_run_ids_never_overwrite_and_a_finished_run_is_not_retrained(cli, tmp_path, data2d):
    cfg = tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False})
    assert _run(cli, tmp_path, cfg)[0] == 0
    first = tmp_path / "res" / "t" / "checkpoints" / "t_1-checkpoint-last.pth"
    before = first.read_bytes()
    assert _run(cli, tmp_path, cfg, run_id="2")[0] == 0
    assert first.read_bytes() == before
    assert (tmp_path / "res" / "t" / "results" / "t_2" / "train_logs" / "t_2_log.csv").is_file()
    code, out, _ = _run(cli, tmp_path, cfg)
    assert code == 0 and "already finished" in out
    assert first.read_bytes() == before
    assert _run(cli, tmp_path, cfg, "--overwrite")[0] == 0
    assert first.read_bytes() != before
    code, _, err = _run(cli, tmp_path, cfg, "--resume", run_id="7")
    assert code == 2 and "no checkpoint" in err


def test_same_seed_same_weights_other_seed_differs(cli, tmp_path, data2d):
    cfg = tiny_config(data2d, DATA={"EXTRACT_RANDOM_PATCH": True}, AUGMENTOR={"ENABLE": True, "VFLIP": True, "ROT90": True}, TEST={"ENABLE": False})
    assert _run(cli, tmp_path, cfg, run_id="a")[0] == 0
    assert _run(cli, tmp_path, cfg, run_id="b")[0] == 0
    cfg["SYSTEM"]["SEED"] = 7
    assert _run(cli, tmp_path, cfg, run_id="c")[0] == 0
    ck = tmp_path / "res" / "t" / "checkpoints"
    a, b, c = (_weights(ck / f"t_{r}-checkpoint-last.pth") for r in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_3d_training_and_test_phase(cli, tmp_path, data3d):
    code, out, err = _run(cli, tmp_path, tiny_config(data3d, ndim="3D", AUGMENTOR={"ENABLE": True, "ZFLIP": True}))
    assert code == 0, err
    pred = tifffile.imread(tmp_path / "res" / "t" / "results" / "t_1" / "per_image_binarized" / "img_000.tif")
    assert pred.shape == (16, 48, 48) and set(np.unique(pred)) <= {0, 1}
    assert "Test Foreground IoU" in out


@pytest.mark.parametrize("name", ["onecycle", "warmupcosine"])
def test_step_schedulers_change_the_learning_rate(cli, tmp_path, data2d, name):
    cfg = tiny_config(data2d, TRAIN={"EPOCHS": 4, "LR": 0.01, "LR_SCHEDULER": {"NAME": name, "WARMUP_COSINE_DECAY_EPOCHS": 1}}, TEST={"ENABLE": False})
    assert _run(cli, tmp_path, cfg)[0] == 0
    lrs = [float(r["lr"]) for r in _log(tmp_path)]
    assert lrs[-1] < lrs[1] < 0.0101  # decays to the end, never above the peak
    assert lrs[-1] < 0.001


def _frozen(data: Path, **train: object) -> dict:
    """A config whose weights cannot change (SGD with a vanishing LR), so validation loss is flat."""
    return tiny_config(data, MODEL={"NORMALIZATION": "none"}, TRAIN={"OPTIMIZER": "SGD", "LR": 1e-30, **train}, TEST={"ENABLE": False})


def test_early_stopping_on_flat_validation_loss(cli, tmp_path, data2d):
    assert _run(cli, tmp_path, _frozen(data2d, EPOCHS=10, PATIENCE=2))[0] == 0
    rows = _log(tmp_path)
    assert len(rows) == 3  # the first epoch sets the best, two more without improvement stop it
    assert len({r["val_loss"] for r in rows}) == 1


def test_reduce_on_plateau_lowers_lr(cli, tmp_path, data2d):
    cfg = _frozen(data2d, EPOCHS=3, LR_SCHEDULER={"NAME": "reduceonplateau", "REDUCEONPLATEAU_PATIENCE": 0, "MIN_LR": 0})
    assert _run(cli, tmp_path, cfg)[0] == 0
    lrs = [float(r["lr"]) for r in _log(tmp_path)]
    assert lrs[0] == pytest.approx(1e-30) and lrs[-1] == pytest.approx(0.25e-30)


def test_test_only_run_uses_the_jobs_checkpoint(cli, tmp_path, data2d):
    assert _run(cli, tmp_path, tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}))[0] == 0
    code, out, err = _run(cli, tmp_path, tiny_config(data2d, TRAIN={"ENABLE": False}))
    assert code == 0, err
    assert (tmp_path / "res" / "t" / "results" / "t_1" / "per_image" / "img_000.tif").is_file()
    code, _, err = _run(cli, tmp_path, tiny_config(data2d, TRAIN={"ENABLE": False}), run_id="9")
    assert code == 2 and "t_9-checkpoint-best.pth not found" in err


def test_load_checkpoint_from_other_architecture_is_a_clear_error(cli, tmp_path, data2d):
    assert _run(cli, tmp_path, tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}))[0] == 0
    ckpt = tmp_path / "res" / "t" / "checkpoints" / "t_1-checkpoint-best.pth"
    cfg = tiny_config(data2d, MODEL={"FEATURE_MAPS": [4, 8, 32], "LOAD_CHECKPOINT": True}, PATHS={"CHECKPOINT_FILE": str(ckpt)})
    code, _, err = _run(cli, tmp_path, cfg, run_id="2")
    assert code == 2 and "do not fit" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("name", "cls"), [("SGD", torch.optim.SGD), ("ADAM", torch.optim.Adam), ("ADAMW", torch.optim.AdamW)])
def test_optimizers(name, cls, data2d):
    cfg, _ = build_config(tiny_config(data2d, TRAIN={"OPTIMIZER": name, "LR": 0.003}))
    opt = SegModel(cfg.model_dump(mode="json")).configure_optimizers()["optimizer"]
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.003


def test_precision_and_devices():
    assert precision("auto", "cpu") == "32-true"
    assert precision("bf16", "gpu") == "bf16-mixed"
    assert precision("16", "gpu") == "16-mixed"
    assert resolve_devices("cpu", "auto") == ("cpu", 1)
    assert resolve_devices(None, "cpu") == ("cpu", 1)
    if not torch.cuda.is_available():
        with pytest.raises(SegflowError, match="--gpu 3: this machine has no CUDA GPU"):
            resolve_devices("3", "auto")
