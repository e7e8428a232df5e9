"""Shared fixtures: small synthetic datasets, config files and an in-process CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segflow.app.cli import main
from segflow.data.synthetic import make_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared"
BIAPY_TEMPLATES = SHARED / "biapy-templates"
ISBI = SHARED / "data" / "isbi2012_em_membranes"


def tiny_config(data: Path, ndim: str = "2D", **sections: dict) -> dict:
    """A config that trains in seconds on ``data`` (made by ``make_dataset``); ``sections`` update it."""
    patch = "(32, 32, 1)" if ndim == "2D" else "(16, 32, 32, 1)"
    cfg = {
        "SYSTEM": {"NUM_WORKERS": 0, "SEED": 0},
        "PROBLEM": {"NDIM": ndim},
        "DATA": {
            "PATCH_SIZE": patch,
            "TRAIN": {"PATH": str(data / "train/x"), "GT_PATH": str(data / "train/y")},
            "VAL": {"SPLIT_TRAIN": 0.25},
            "TEST": {"PATH": str(data / "test/x"), "GT_PATH": str(data / "test/y")},
        },
        "MODEL": {"FEATURE_MAPS": [4, 8, 16]},
        "TRAIN": {"ENABLE": True, "EPOCHS": 2, "BATCH_SIZE": 4, "OPTIMIZER": "ADAMW", "LR": 0.01},
        "TEST": {"ENABLE": True},
    }
    for section, values in sections.items():
        _merge(cfg.setdefault(section, {}), values)
    return cfg


def _merge(into: dict, values: dict) -> None:
    for k, v in values.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def write_yaml(path: Path, tree: dict) -> Path:
    """Write ``tree`` as a YAML config file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def data2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training and 2 test 64x64 images (read-only: copy before changing)."""
    return make_dataset(tmp_path_factory.mktemp("data2d"), ndim=2, n_train=4, n_test=2, shape=(64, 64), seed=1)


@pytest.fixture(scope="session")
def data3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 training and 1 test 16x48x48 stacks (read-only: copy before changing)."""
    return make_dataset(tmp_path_factory.mktemp("data3d"), ndim=3, n_train=2, n_test=1, shape=(16, 48, 48), seed=2)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, data2d: Path) -> Path:
    """A 2D model trained for one epoch on ``data2d`` (read-only: its best checkpoint)."""
    root = tmp_path_factory.mktemp("model")
    cfg = write_yaml(root / "c.yaml", tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}))
    assert main(["run", "--config", str(cfg), "--result_dir", str(root), "--name", "m"]) == 0
    return root / "m" / "checkpoints" / "m_1-checkpoint-best.pth"


@pytest.fixture(scope="session")
def package(checkpoint: Path, data2d: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, list[str]]:
    """``checkpoint`` exported once as a BioImage Model Zoo package (read-only): ``(its path, the check's difference,
    what export said)``."""
    from segflow.app.export import export_model

    lines: list[str] = []
    path, difference = export_model(checkpoint, "bioimageio", tmp_path_factory.mktemp("bmz") / "m.zip", data2d / "test" / "x" / "img_000.tif",
                                    say=lines.append)  # fmt: skip
    return path, difference, lines


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run ``segflow ARGS`` in-process; return ``(exit_code, stdout, stderr)``."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
