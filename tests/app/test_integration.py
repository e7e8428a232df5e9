"""Integration: real EM data (ISBI 2012, from ../shared/data) and the built-in demo."""

from __future__ import annotations

import csv

import pytest
from conftest import ISBI, write_yaml

from segflow.app.demo import demo


@pytest.mark.skipif(not ISBI.is_dir(), reason="../shared/data/isbi2012_em_membranes is not present")
def test_isbi_training_raises_validation_iou(cli, tmp_path):
    cfg = {
        "SYSTEM": {"NUM_WORKERS": 1, "SEED": 0},
        "DATA": {
            "PATCH_SIZE": "(128, 128, 1)",
            "EXTRACT_RANDOM_PATCH": True,
            "TRAIN": {"PATH": str(ISBI / "train/x"), "GT_PATH": str(ISBI / "train/y"), "REPLICATE": 2},
            "VAL": {"SPLIT_TRAIN": 0.2},
        },
        "AUGMENTOR": {"ENABLE": True, "VFLIP": True, "HFLIP": True, "ROT90": True},
        "MODEL": {"FEATURE_MAPS": [16, 32, 64, 128]},
        "TRAIN": {"ENABLE": True, "EPOCHS": 4, "BATCH_SIZE": 8, "OPTIMIZER": "ADAMW", "LR": 0.002},
    }
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "isbi.yaml", cfg), "--result_dir", tmp_path, "--name", "isbi")
    assert code == 0, err
    run = tmp_path / "isbi" / "results" / "isbi_1"
    with open(run / "train_logs" / "isbi_1_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    val_iou = [float(r["val_IoU"]) for r in rows]
    assert max(val_iou[1:]) > val_iou[0] + 0.01 and max(val_iou) > 0.75
    assert (tmp_path / "isbi" / "checkpoints" / "isbi_1-checkpoint-best.pth").is_file()
    assert (run / "charts" / "isbi_1_loss.png").is_file()
    assert "Training on 16 image(s)" in out


def test_demo_reaches_iou_080(tmp_path):
    result = demo(tmp_path / "demo")
    assert result["merge patches"]["per_image_mean"]["foreground_iou"] >= 0.80
    assert (tmp_path / "demo" / "demo" / "results" / "demo_1" / "test_metrics.csv").is_file()
