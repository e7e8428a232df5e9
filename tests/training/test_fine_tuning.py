"""MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS (BiaPy's key): fine-tuning from a checkpoint's weights alone, or from its
optimizer's state too, parameter by parameter."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import tiny_config
from lightning.pytorch.callbacks import Callback

from segflow.config.loader import build_config
from segflow.errors import SegflowError
from segflow.io.paths import RunPaths
from segflow.training.trainer import train


class _OptimizerAtStart(Callback):
    """The optimizer's state as the first step finds it, by parameter name."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = trainer.optimizers[0].state
        self.state = {name: {k: v.clone() for k, v in state[p].items()} for name, p in pl_module.net.named_parameters() if p in state}


@pytest.fixture(scope="module")
def first(data2d: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last checkpoint of one epoch with AdamW."""
    cfg, _ = build_config(tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}))
    run = RunPaths(tmp_path_factory.mktemp("first"), "a", "1")
    train(cfg, run, "cpu")
    return run.checkpoint("last")


def _fine_tune(data2d: Path, tmp_path: Path, start: Path, capsys, **model) -> tuple[dict, str]:
    cfg, _ = build_config(tiny_config(data2d, MODEL={"LOAD_CHECKPOINT": True, **model}, PATHS={"CHECKPOINT_FILE": str(start)},
                                      TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}))  # fmt: skip
    probe = _OptimizerAtStart()
    train(cfg, RunPaths(tmp_path, "b", "1"), "cpu", callbacks=[probe])
    return probe.state, capsys.readouterr().out


def test_the_optimizer_s_state_comes_with_the_weights_when_asked(first, data2d, tmp_path, capsys) -> None:
    saved = torch.load(first, weights_only=True)["optimizer_states"][0]["state"]
    state, out = _fine_tune(data2d, tmp_path / "all", first, capsys, LOAD_CHECKPOINT_ONLY_WEIGHTS=False)
    names = list(state)
    assert len(state) == len(saved) > 0
    for i, name in enumerate(names):  # a parameter's place in the optimizer is its place in the network
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state[name][key], saved[i][key], rtol=0, atol=0)
    assert f"the optimizer's state of {len(saved)} of the network's {len(saved)} parameters from the checkpoint" in out
    alone, _ = _fine_tune(data2d, tmp_path / "weights", first, capsys)
    assert alone == {}  # the default: a fresh optimizer


def test_another_class_count_takes_every_state_but_the_output_layer_s(first, data2d, tmp_path, capsys) -> None:
    state, out = _fine_tune(data2d, tmp_path, first, capsys, LOAD_CHECKPOINT_ONLY_WEIGHTS=False, N_CLASSES=3)
    total = len(torch.load(first, weights_only=True)["optimizer_states"][0]["state"])
    assert len(state) == total - 2  # the output convolution's weight and bias start anew
    assert f"the optimizer's state of {total - 2} of the network's {total} parameters" in out


def test_another_optimizer_or_a_package_is_one_line(first, package, data2d, tmp_path, capsys) -> None:
    with pytest.raises(SegflowError, match="holds the state of a ADAMW optimizer, not of TRAIN.OPTIMIZER SGD; set TRAIN.OPTIMIZER ADAMW"):
        cfg, _ = build_config(tiny_config(data2d, MODEL={"LOAD_CHECKPOINT": True, "LOAD_CHECKPOINT_ONLY_WEIGHTS": False},
                                          PATHS={"CHECKPOINT_FILE": str(first)}, TRAIN={"OPTIMIZER": "SGD"}))  # fmt: skip
        train(cfg, RunPaths(tmp_path, "c", "1"), "cpu")
    with pytest.raises(SegflowError, match="holds no optimizer state .* set MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS: true"):
        _fine_tune(data2d, tmp_path / "p", package[0], capsys, LOAD_CHECKPOINT_ONLY_WEIGHTS=False)
