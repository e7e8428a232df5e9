"""Training end to end on tiny data: result folders, checkpoints, logs, charts, seeds, schedulers, early stopping."""

from __future__ import annotations

import csv
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import tiny_config, write_yaml

from segflow.config.loader import build_config
from segflow.config.schema import Config
from segflow.data.patches import PatchDataset
from segflow.errors import SegflowError
from segflow.inference.predictor import Predictor
from segflow.runtime import cpu_bf16_native, num_workers, precision, resolve_devices
from segflow.training import sampler as sampler_module
from segflow.training.callbacks import EpochLog
from segflow.training.datasets import load_data, make_datasets
from segflow.training.module import SegModel
from segflow.training.sampler import EpochSeededSampler


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
    assert (root / "config_files" / "t_1.yaml").is_file()
    for which in ("best", "last"):
        assert (root / "checkpoints" / f"t_1-checkpoint-{which}.pth").is_file()
    assert (run / "charts" / "t_1_loss.png").is_file() and (run / "charts" / "t_1_jaccard_index.png").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "aug").glob("aug_*")) == ["aug_000_x.tif", "aug_000_y.tif", "aug_001_x.tif", "aug_001_y.tif"]
    assert sorted(p.name for p in (run / "per_image").iterdir()) == ["img_000.tif", "img_001.tif"]
    assert "FINISHED JOB t_1" in out

    rows = _log(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "time", "data_wait", "lr", "loss", "IoU", "val_loss", "val_IoU"]
    assert all(0 <= float(r["data_wait"]) < float(r["time"]) for r in rows)
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
    written = first.stat().st_mtime_ns
    assert _run(cli, tmp_path, cfg, "--overwrite")[0] == 0
    assert first.stat().st_mtime_ns != written  # trained and written again (deterministic: maybe the same bytes)
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


def test_class_pixels_are_counted_for_class_rebalance_only(cli, tmp_path, data2d):
    """With LOSS.CLASS_REBALANCE the loss weighs classes by the training pixels of each (stored in the checkpoint);
    without it no mask is read for counts (slow on a large volume read patch by patch)."""
    from segflow.encodings import get_encoding

    cfg = tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}, LOSS={"CLASS_REBALANCE": True})
    assert _run(cli, tmp_path, cfg, run_id="r")[0] == 0
    assert _run(cli, tmp_path, {**cfg, "LOSS": {}}, run_id="p")[0] == 0
    ck = tmp_path / "res" / "t" / "checkpoints"
    rebalanced, plain = (torch.load(ck / f"t_{r}-checkpoint-last.pth", weights_only=False)["hyper_parameters"] for r in "rp")
    built = build_config(cfg)[0]
    data = load_data(built)
    counts = get_encoding(built).class_counts([get_encoding(built).encode(s.mask) for s in data.train])[0]
    assert rebalanced["class_counts"] == counts.tolist() and sum(counts) == sum(s.mask.size for s in data.train)
    assert plain["class_counts"] is None and plain["n_valid"] is None


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
    code, _out, err = _run(cli, tmp_path, tiny_config(data2d, TRAIN={"ENABLE": False}))
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


@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_segresnet_trains_tests_and_predicts(cli, tmp_path, data2d, data3d, ndim):
    """MONAI's SegResNet through the whole job: 2 steps of training, the test phase, and segflow predict."""
    data = data2d if ndim == "2D" else data3d
    tree = tiny_config(data, ndim, MODEL={"ARCHITECTURE": "segresnet"}, TRAIN={"EPOCHS": 1, "BATCH_SIZE": 2},
                       DATA={"TRAIN": {"REPLICATE": 1}, "EXTRACT_RANDOM_PATCH": True})  # fmt: skip
    code, out, err = _run(cli, tmp_path, tree)
    assert code == 0, err
    assert "Model: segresnet" in out and "Test Foreground IoU" in out
    best = tmp_path / "res" / "t" / "checkpoints" / "t_1-checkpoint-best.pth"
    image = next((data / "test" / "x").iterdir())
    code, _, err = cli("predict", best, image, tmp_path / "p.tif", "--gpu", "cpu")
    assert code == 0, err
    assert tifffile.imread(tmp_path / "p.tif").shape == tifffile.imread(image).shape


def test_fine_tuning_with_another_class_count_starts_the_output_layer_anew(cli, checkpoint, data2d, tmp_path):
    """A 2-class checkpoint into a 3-class network: every tensor but the output layer's is the checkpoint's, the
    output layer keeps its fresh initialisation, and the run says so and trains."""
    from segflow.checkpoint import load_checkpoint, load_weights
    from segflow.models.networks import build_model

    cfg, _ = build_config(tiny_config(data2d, MODEL={"N_CLASSES": 3}))
    net = build_model(cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    saved = load_checkpoint(checkpoint)
    fresh = load_weights(net, saved, checkpoint, "MODEL.*", skip="shape")
    assert fresh and all("output" in k or "out" in k for k in fresh), fresh
    for key, value in net.state_dict().items():
        expected = before[key] if key in fresh else saved["state_dict"]["net." + key]
        assert torch.equal(value, expected), key
    tree = tiny_config(data2d, MODEL={"N_CLASSES": 3, "LOAD_CHECKPOINT": True}, PATHS={"CHECKPOINT_FILE": str(checkpoint)},
                       TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False})  # fmt: skip
    code, out, err = _run(cli, tmp_path, tree)
    assert code == 0, err
    assert f"MODEL.N_CLASSES 3: the checkpoint was trained for 2; its output layer ({', '.join(fresh)}) starts anew" in out


def test_a_deeper_network_starts_from_a_smaller_one_s_matching_layers(cli, checkpoint, data2d, tmp_path):
    """MODEL.SKIP_UNMATCHED_LAYERS (the Crick's transfer_weights): a 4-level network from the 3-level checkpoint takes
    every tensor of the same name and shape, the others keep their fresh values; off, the same config is refused."""
    from segflow.checkpoint import load_checkpoint, load_weights
    from segflow.models.networks import build_model

    model = {"FEATURE_MAPS": [4, 8, 16, 32], "LOAD_CHECKPOINT": True, "SKIP_UNMATCHED_LAYERS": True}
    cfg, _ = build_config(tiny_config(data2d, MODEL=model))
    net = build_model(cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    saved = load_checkpoint(checkpoint)["state_dict"]
    fresh = load_weights(net, {"state_dict": saved}, checkpoint, "MODEL.*", skip="unmatched")
    params = dict(net.named_parameters())  # each tensor under its first name (DynUNet has aliases)
    first = {*params, *(k for k, b in net.named_buffers() if b.numel())}
    assert 0 < len(set(fresh) & set(params)) < len(params)
    for key, value in params.items():
        assert torch.equal(value, before[key] if key in fresh else saved["net." + key]), key
    tree = tiny_config(data2d, MODEL=model, PATHS={"CHECKPOINT_FILE": str(checkpoint)}, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False})
    code, out, err = _run(cli, tmp_path, tree)
    assert code == 0, err
    assert f"MODEL.SKIP_UNMATCHED_LAYERS: {len(first) - len(fresh)} of the network's {len(first)} tensors from the checkpoint, {len(fresh)} start anew" in out
    tree["MODEL"]["SKIP_UNMATCHED_LAYERS"] = False
    code, _, err = _run(cli, tmp_path, tree, run_id="2")
    assert code == 2 and "MODEL.FEATURE_MAPS=[4, 8, 16] in the checkpoint, [4, 8, 16, 32] in the config" in err


@pytest.mark.parametrize(("name", "cls"), [("SGD", torch.optim.SGD), ("ADAM", torch.optim.Adam), ("ADAMW", torch.optim.AdamW)])
def test_optimizers(name, cls, data2d):
    cfg, _ = build_config(tiny_config(data2d, TRAIN={"OPTIMIZER": name, "LR": 0.003}))
    opt = SegModel(cfg.model_dump(mode="json")).configure_optimizers()["optimizer"]
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.003


def _cfg(precision_: str, ndim: str = "2D", patch: str = "(32, 32, 1)", levels: int = 3) -> Config:
    return build_config({"PROBLEM": {"NDIM": ndim}, "DATA": {"PATCH_SIZE": patch}, "MODEL": {"FEATURE_MAPS": [4, 8, 16, 32][:levels]}, "TRAIN": {"PRECISION": precision_}})[0]


def test_precision_and_devices(capsys):
    assert precision(_cfg("32"), "cpu") == "32-true"
    # 'auto' on the CPU is bf16 exactly where the CPU has native bfloat16 (bench/README.md: about 2x faster).
    assert precision(_cfg("auto"), "cpu") == ("bf16-mixed" if cpu_bf16_native() else "32-true")
    assert precision(_cfg("bf16"), "cpu") == "bf16-mixed"
    assert precision(_cfg("bf16"), "gpu") == "bf16-mixed"
    assert precision(_cfg("16"), "gpu") == "16-mixed"
    # A 3D network whose bottleneck is 2 deep (8 -> 4 -> 2) would get wrong bf16 gradients from torch's CPU
    # Conv3d (tests/test_fast_paths.py): it trains in fp32, with a warning when bf16 was asked for.
    assert precision(_cfg("auto", "3D", "(8, 16, 16, 1)"), "cpu") == "32-true"
    assert capsys.readouterr().out == ""
    assert precision(_cfg("bf16", "3D", "(8, 16, 16, 1)"), "cpu") == "32-true"
    assert "2 voxels deep" in capsys.readouterr().out
    assert precision(_cfg("bf16", "3D", "(16, 16, 16, 1)"), "cpu") == "bf16-mixed"  # 16 -> 8 -> 4
    assert precision(_cfg("auto", "3D", "(16, 16, 16, 1)", levels=4), "cpu") == "32-true"  # 16 -> 8 -> 4 -> 2
    assert precision(_cfg("bf16", "3D", "(8, 16, 16, 1)"), "gpu") == "bf16-mixed"
    assert resolve_devices("cpu", "auto") == ("cpu", 1)
    assert resolve_devices(None, "cpu") == ("cpu", 1)
    if not torch.cuda.is_available():
        with pytest.raises(SegflowError, match="--gpu 3: this machine has no CUDA GPU"):
            resolve_devices("3", "auto")


def test_workers_default_to_none_on_the_cpu_and_spare_cores_on_a_gpu():
    """bench/README.md: on the CPU a worker process competes with the network for the cores."""
    assert num_workers(-1, "cpu") == 0
    assert num_workers(-1, "gpu") == max(0, min(4, (os.cpu_count() or 1) - 1))
    assert num_workers(2, "cpu") == num_workers(2, "gpu") == 2


def test_waiting_for_data_is_logged_and_warned_once(cli, tmp_path, data2d, monkeypatch):
    """NIST's "input queue starvation": every patch takes 30 ms to load, so the steps of this tiny network
    spend most of each epoch waiting; the log has the seconds and one warning says what to change."""
    delay = 0.03
    get = PatchDataset.__getitem__

    def slow(self: PatchDataset, index: int) -> dict:
        time.sleep(delay)
        return get(self, index)

    monkeypatch.setattr(PatchDataset, "__getitem__", slow)
    monkeypatch.setattr(EpochLog, "STARVED_MIN_S", 0.0)  # the epochs of this test are short
    code, out, err = _run(cli, tmp_path, tiny_config(data2d, TRAIN={"EPOCHS": 3}, TEST={"ENABLE": False}))
    assert code == 0, err
    patches = int(re.search(r"(\d+) patches per epoch", out).group(1))
    rows = _log(tmp_path)
    assert len(rows) == 3
    for r in rows:
        assert delay * patches <= float(r["data_wait"]) < float(r["time"])
    assert out.count("for data, so loading and augmenting patches, not the network, sets the speed") == 1
    assert re.search(r"warning: epoch 1: training waited [\d.]+ s of [\d.]+ s \(\d+%\) for data.*raise SYSTEM.NUM_WORKERS \(now 0;", out)
    assert "caught up" not in out


def test_the_end_of_starvation_is_said_once(cli, tmp_path, data2d, monkeypatch):
    """NIST's "Input Queue Starvation Over": loading is slow in the first epoch only, so epoch 2 says it caught up."""
    get, calls = PatchDataset.__getitem__, []

    def slow_at_first(self: PatchDataset, index: int) -> dict:
        calls.append(index)
        if len(calls) <= 12:  # the first epoch's training patches
            time.sleep(0.05)
        return get(self, index)

    monkeypatch.setattr(PatchDataset, "__getitem__", slow_at_first)
    monkeypatch.setattr(EpochLog, "STARVED_MIN_S", 0.0)
    code, out, err = _run(cli, tmp_path, tiny_config(data2d, TRAIN={"EPOCHS": 3}, TEST={"ENABLE": False}))
    assert code == 0, err
    assert re.search(r"^warning: epoch 1: training waited", out, re.M)
    assert re.search(r"^epoch 2: data loading caught up: training waited [\d.]+ s of [\d.]+ s \(\d+%\) for data$", out, re.M)
    assert out.count("caught up") == 1 and out.count("sets the speed") == 1


def test_ddp_ranks_draw_different_patches_from_one_order(monkeypatch, data2d):
    """Under DDP every rank reseeds from (SEED, epoch, rank): one shared order, split between the 2 ranks (each
    takes every second patch), but each rank its own random patch positions and augmentations; rank 0 draws as a
    single-process run does."""
    cfg, _ = build_config(tiny_config(data2d, DATA={"EXTRACT_RANDOM_PATCH": True}, AUGMENTOR={"ENABLE": True, "HFLIP": True, "VFLIP": True, "ROT90": True}))
    train_ds, _ = make_datasets(cfg, load_data(cfg))
    sampler = EpochSeededSampler(train_ds, cfg.SYSTEM.SEED, shuffle=True)

    def draws(rank: int, world: int = 2) -> tuple[list[int], list[torch.Tensor]]:
        monkeypatch.setattr(sampler_module, "distributed_rank", lambda: rank)
        monkeypatch.setattr(sampler_module, "distributed_world", lambda: world)
        sampler.set_epoch(3)
        return list(sampler), [torch.as_tensor(train_ds[i]["image"]) for i in range(len(train_ds))]

    order0, patches0 = draws(0)
    order1, patches1 = draws(1)
    again0, repeat0 = draws(0)
    whole, _ = draws(0, world=1)
    padded = (whole * 2)[: 2 * len(order0)]  # an odd count is padded with the order's first patch
    assert order0 == again0 == padded[0::2] and order1 == padded[1::2] and len(order0) == len(order1) == -(-len(train_ds) // 2)
    assert sorted(whole) == list(range(len(train_ds))) and set(order0 + order1) == set(whole)
    assert all(torch.equal(a, b) for a, b in zip(patches0, repeat0))
    assert not any(torch.equal(a, b) for a, b in zip(patches0, patches1))
