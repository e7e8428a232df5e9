"""Label encodings: multi-class, bitmask (overlapping classes), double membrane, regions, regression,
ignored pixels, RGB inputs with palette masks, class-balanced sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import write_yaml
from PIL import Image

from segflow.config.loader import build_config
from segflow.data.normalize import Normalizer
from segflow.data.patches import PatchDataset
from segflow.data.sources import Sample
from segflow.encodings import (
    bits,
    double_membrane,
    from_bits,
    get_encoding,
    region_labels,
)
from segflow.evaluation.metrics import Scorer
from segflow.evaluation.testphase import run_test
from segflow.inference.predictor import Predictor
from segflow.io.formats import voc_colormap
from segflow.io.images import read_image
from segflow.io.paths import RunPaths
from segflow.models.losses import SegmentationLoss


def cfg_for(encoding: str = "categorical", n: int = 2, loss: str | None = None, ignore: int = -1, ndim: str = "2D", **extra: dict):
    tree = {
        "PROBLEM": {"NDIM": ndim, "SEMANTIC_SEG": {"ENCODING": encoding, "IGNORE_CLASS_ID": ignore}},
        "DATA": {"PATCH_SIZE": "(32, 32, 1)" if ndim == "2D" else "(8, 32, 32, 1)"},
        "MODEL": {"N_CLASSES": n, "FEATURE_MAPS": [4, 8, 16]},
        "LOSS": {"TYPE": loss or ("MSE" if encoding in ("linear", "distance") else "CE")},
    }
    for k, v in extra.items():
        tree.setdefault(k, {}).update(v)
    return build_config(tree)[0]


# ------------------------------------------------------------------------------------------ round trips
def test_bits_round_trip_and_overlap():
    mask = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], np.uint8)
    b = bits(mask, 3)
    assert b.shape == (2, 4, 3)
    assert b[0, 3].tolist() == [1, 1, 0]  # value 3 = classes 0 and 1 at once
    np.testing.assert_array_equal(from_bits(b), mask)
    assert from_bits(np.ones((2, 2, 10), np.uint8)).dtype == np.uint16


def test_labels_decode_what_encode_made():
    mask = np.random.default_rng(0).integers(0, 8, (16, 16)).astype(np.uint8)
    cfg = cfg_for("bitmask", 3)
    assert np.array_equal(get_encoding(cfg).labels(get_encoding(cfg).encode(mask)), mask)
    cat = cfg_for("categorical", 5)
    onehot = np.eye(5, dtype=np.float32)[mask % 5]
    np.testing.assert_array_equal(get_encoding(cat).labels(onehot), mask % 5)
    binary = cfg_for("categorical", 2)
    np.testing.assert_array_equal(get_encoding(binary).labels((mask % 2)[..., None].astype(np.float32)), mask % 2)


def test_double_membrane_dilates_each_bit_by_one_pixel_in_plane():
    mask = np.zeros((2, 7, 7), np.uint8)
    mask[0, 3, 3] = 1  # bit 0 only, slice 0 only
    mask[1, 1, 1] = 2
    out = double_membrane(mask, 2)
    assert out[0, ..., 0].sum() == 5 and out[0, 2, 3, 0] == 1 and out[0, 2, 2, 0] == 0  # a cross, not a square
    assert out[1, ..., 0].sum() == 0  # no leaking along z
    assert out[1, ..., 1].sum() == 5


def test_region_labels_membrane_is_class_0_regions_numbered_and_capped():
    skel = np.zeros((9, 9), np.uint8)
    skel[:, 3] = 1
    skel[4, 4:] = 1  # three regions: left, upper right, lower right
    r = region_labels(skel, 4)
    assert (r[skel > 0] == 0).all()
    assert sorted(np.unique(r[skel == 0]).tolist()) == [1, 2, 3]
    capped = region_labels(skel, 3)
    assert sorted(np.unique(capped).tolist()) == [0, 1, 2]  # the third region joins the last class


def test_distance_and_linear_targets_and_ignored_nan():
    mask = np.zeros((9, 9), np.uint16)
    mask[2:7, 2:7] = 1
    mask[0, 0] = 255
    d = get_encoding(cfg_for("distance", ignore=255)).encode(mask)
    assert d.dtype == np.float32 and d[4, 4, 0] == 3.0 and d[1, 1, 0] == 0.0 and np.isnan(d[0, 0, 0])
    lin = np.full((4, 4), 1000, np.uint16)
    t = get_encoding(cfg_for("linear")).encode(lin)
    assert t.dtype == np.float32 and t.max() == 1000  # no wrap-around
    assert (get_encoding(cfg_for("distance")).truth(mask) == (mask > 0)).all()


def test_voc_colormap():
    cmap = voc_colormap()
    assert cmap[0].tolist() == [0, 0, 0] and cmap[1].tolist() == [128, 0, 0] and cmap[15].tolist() == [192, 128, 128]
    assert cmap[255].tolist() == [224, 224, 192]


def test_class_counts_per_encoding():
    mask = np.array([[0, 1], [3, 255]], np.uint8)
    counts, valid = get_encoding(cfg_for("bitmask", 2, ignore=255)).class_counts([get_encoding(cfg_for("bitmask", 2, ignore=255)).encode(mask)])
    assert counts.tolist() == [2, 1] and valid == 3
    counts, valid = get_encoding(cfg_for("categorical", 3)).class_counts([get_encoding(cfg_for("categorical", 3)).encode(mask % 3)])
    assert counts.tolist() == [3, 1, 0] and valid == 4  # 3 % 3 and 255 % 3 are 0


def _scoring_mask(encoding: str, n: int, ignore: int) -> np.ndarray:
    """A 2D mask with every value the encoding reads: classes, overlapping bits, thin membranes, ignored pixels."""
    rng = np.random.default_rng(3)
    if encoding == "linear":
        return rng.uniform(0, 40, (24, 24)).astype(np.float32)
    mask = np.zeros((24, 24), np.uint8)
    mask[3:10, 4:12] = 1
    mask[14:20, 2:9] = n - 1 if encoding == "categorical" else 1
    mask[8:16, 10:18] |= 2 if encoding in ("bitmask", "double_membrane") else 0
    mask[:, 20] = 1  # a one-pixel line: dilated by double_membrane, a membrane for region
    if ignore >= 0:
        mask[0, :6] = ignore
    return mask


def _perfect_outputs(target: np.ndarray, cfg) -> np.ndarray:
    """Network outputs (after activation) that predict ``target`` exactly: probabilities of its class ids,
    or its values."""
    n = cfg.MODEL.N_CLASSES
    if np.issubdtype(target.dtype, np.integer):
        ids = np.clip(target[..., 0], 0, n - 1)
        return ids[..., None].astype(np.float32) if n == 2 else np.eye(n, dtype=np.float32)[ids]
    return np.nan_to_num(target)


@pytest.mark.parametrize(
    ("encoding", "n", "ignore"),
    [
        ("categorical", 2, -1),
        ("categorical", 4, 255),
        ("bitmask", 2, -1),
        ("bitmask", 3, 255),
        ("double_membrane", 2, -1),
        ("double_membrane", 2, 255),
        ("region", 2, -1),
        ("region", 4, 255),
        ("linear", 2, -1),
        ("distance", 2, 255),
    ],
)
def test_a_perfect_prediction_of_the_learned_target_scores_iou_1(encoding: str, n: int, ignore: int):
    """The test phase scores the target the network learns: predicting it exactly gives IoU 1 (MSE 0 for regression)."""
    cfg = cfg_for(encoding, n, ignore=ignore)
    mask = _scoring_mask(encoding, n, ignore)
    outputs = _perfect_outputs(get_encoding(cfg).encode(mask), cfg)
    scorer = Scorer(cfg)
    row = scorer.add("a", outputs, get_encoding(cfg).labels(outputs), mask)
    for scores in (row, scorer.pooled()):
        if encoding == "linear":
            assert scores["mse"] == 0 and np.isnan(scores["mean_iou"])
        else:
            assert scores["foreground_iou"] == scores["mean_iou"] == 1.0, scores
        if encoding == "distance":
            assert scores["mse"] == 0


def test_double_membrane_does_not_dilate_ignored_pixels():
    cfg = cfg_for("double_membrane", 2, ignore=255)
    mask = np.zeros((5, 5), np.uint8)
    mask[2, 2] = 255  # its bits (11) must not spread to the neighbours
    target = get_encoding(cfg).encode(mask)
    assert np.isnan(target[2, 2]).all() and np.nansum(target) == 0


# ------------------------------------------------------------------------------------------ ignored pixels
@pytest.mark.parametrize(
    ("encoding", "n", "loss"),
    [("categorical", 2, "CE"), ("categorical", 2, "W_CE_DICE"), ("categorical", 4, "CE"), ("categorical", 4, "DICE"), ("bitmask", 3, "W_CE_DICE"), ("distance", 2, "MSE"), ("linear", 2, "LOGMSE")],
)
def test_loss_ignores_ignored_pixels(encoding, n, loss):
    cfg = cfg_for(encoding, n, loss, ignore=255)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, n if encoding != "bitmask" else 2**n, (2, 16, 16)).astype(np.uint8)
    mask[:, :4] = 255
    target = torch.from_numpy(np.stack([np.moveaxis(get_encoding(cfg).encode(m), -1, 0) for m in mask]))
    if not target.is_floating_point():
        target = target.long()
    fn = SegmentationLoss(cfg)
    channels = n if encoding == "bitmask" or (encoding == "categorical" and n > 2) else 1
    logits = torch.randn(2, channels, 16, 16)
    base = fn(logits, target)
    changed = logits.clone()
    changed[..., :4, :] = torch.randn_like(changed[..., :4, :]) * 10  # other predictions where pixels are ignored
    assert torch.isfinite(base) and fn(changed, target).item() == pytest.approx(base.item(), rel=1e-6)
    # ...while a change elsewhere does change it.
    elsewhere = logits.clone()
    elsewhere[:, 0, 8:, :] += 3  # one channel only: softmax ignores a shift of all channels
    assert fn(elsewhere, target).item() != pytest.approx(base.item(), rel=1e-6)


def test_metrics_ignore_ignored_pixels():
    cfg = cfg_for("categorical", 3, ignore=255)
    mask = np.array([[0, 1, 2, 255]], np.uint8)
    good = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]][None]
    a = Scorer(cfg).add("a", good, get_encoding(cfg).labels(good), mask)
    other = good.copy()
    other[0, 3] = [0, 0, 1]
    b = Scorer(cfg).add("b", other, get_encoding(cfg).labels(other), mask)
    assert a["mean_iou"] == b["mean_iou"] == 1.0


# ------------------------------------------------------------------------------------------ training
def _blobs(root: Path, n_images: int, kind: str, seed: int, size: int = 64) -> None:
    """Synthetic data whose classes are told apart by intensity (and, for bitmasks, by sums of intensities)."""
    rng = np.random.default_rng(seed)
    for sub in ("x", "y"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n_images):
        image = np.zeros((size, size), np.float32)
        mask = np.zeros((size, size), np.uint8)
        if kind == "multiclass":
            for c in range(1, 5):
                for _ in range(2):
                    cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(5, 9)
                    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                    mask[disc] = c
            image = mask * 0.25
        else:  # two overlapping shapes: A adds 0.4, B adds 0.6; the mask holds A as bit 0 and B as bit 1
            cy, cx = rng.integers(16, size - 16, 2)
            a = (yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2
            by, bx = cy + rng.integers(-10, 10), cx + rng.integers(-10, 10)
            b = (abs(yy - by) <= 9) & (abs(xx - bx) <= 9)
            image = 0.4 * a + 0.6 * b
            mask = (a * 1 + b * 2).astype(np.uint8)
        image = np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1)
        tifffile.imwrite(root / "x" / f"im_{i:02d}.tif", (image * 255).astype(np.uint8))
        tifffile.imwrite(root / "y" / f"im_{i:02d}.tif", mask)


def _train_and_test(cli, tmp_path: Path, kind: str, cfg_tree: dict) -> dict:
    _blobs(tmp_path / "train", 10, kind, seed=1)
    _blobs(tmp_path / "test", 3, kind, seed=2)
    tree = {
        "SYSTEM": {"NUM_WORKERS": 0, "SEED": 0},
        "DATA": {
            "PATCH_SIZE": "(32, 32, 1)",
            "EXTRACT_RANDOM_PATCH": True,
            "TRAIN": {"PATH": str(tmp_path / "train/x"), "GT_PATH": str(tmp_path / "train/y"), "REPLICATE": 8},
            "VAL": {"SPLIT_TRAIN": 0.2},
            "TEST": {"PATH": str(tmp_path / "test/x"), "GT_PATH": str(tmp_path / "test/y"), "PADDING": "(8, 8)"},
        },
        "AUGMENTOR": {"ENABLE": True, "VFLIP": True, "HFLIP": True},
        "MODEL": {"FEATURE_MAPS": [8, 16, 32]},
        "TRAIN": {"ENABLE": True, "EPOCHS": 12, "BATCH_SIZE": 8, "OPTIMIZER": "ADAMW", "LR": 0.01, "LR_SCHEDULER": {"NAME": "onecycle"}},
        "TEST": {"ENABLE": True},
    }
    for k, v in cfg_tree.items():
        tree[k] = {**tree.get(k, {}), **v}
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path / "res", "--name", "e")
    assert code == 0, err
    return {"out": out, "run": tmp_path / "res" / "e" / "results" / "e_1", "ckpt": tmp_path / "res" / "e" / "checkpoints" / "e_1-checkpoint-best.pth"}


def test_softmax_five_classes_reach_iou_080_each(cli, tmp_path):
    res = _train_and_test(cli, tmp_path, "multiclass", {"MODEL": {"N_CLASSES": 5, "FEATURE_MAPS": [16, 32, 64]}, "LOSS": {"TYPE": "W_CE_DICE", "WEIGHTS": "(0.5, 0.5)"}, "TRAIN": {"EPOCHS": 20}})
    import csv

    rows = list(csv.DictReader((res["run"] / "test_metrics.csv").read_text().splitlines()))
    pooled = next(r for r in rows if r["mode"] == "merge patches" and r["image"] == "POOLED")
    ious = [float(pooled[f"iou_class_{c}"]) for c in range(5)]
    assert min(ious) >= 0.8, ious
    assert read_image(res["run"] / "per_image_binarized" / "im_00.tif", 2).max() <= 4


def test_bitmask_learns_two_overlapping_shapes(cli, tmp_path):
    res = _train_and_test(cli, tmp_path, "bitmask", {"PROBLEM": {"SEMANTIC_SEG": {"ENCODING": "bitmask"}}, "MODEL": {"N_CLASSES": 2, "FEATURE_MAPS": [8, 16, 32]}})
    import csv

    rows = list(csv.DictReader((res["run"] / "test_metrics.csv").read_text().splitlines()))
    pooled = next(r for r in rows if r["mode"] == "merge patches" and r["image"] == "POOLED")
    assert float(pooled["iou_class_0"]) >= 0.8 and float(pooled["iou_class_1"]) >= 0.8
    # Written back as a bitmask image (3 where both shapes overlap) and as per-class channels.
    bitmask = tifffile.imread(res["run"] / "per_image_binarized" / "im_00.tif")
    truth_mask = tifffile.imread(tmp_path / "test/y/im_00.tif")
    assert set(np.unique(bitmask)) <= {0, 1, 2, 3} and 3 in np.unique(bitmask)
    assert (bitmask == truth_mask).mean() > 0.9
    assert read_image(res["run"] / "per_image" / "im_00.tif", 2).shape == (64, 64, 2)
    # The checkpoint carries the encoding: `segflow predict` writes the same bitmask image.
    from segflow.app.cli import main

    assert main(["predict", str(res["ckpt"]), str(tmp_path / "test/x/im_00.tif"), str(tmp_path / "p.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif"), bitmask)


def test_distance_regression_trains_and_writes_float(cli, tmp_path):
    res = _train_and_test(cli, tmp_path, "bitmask", {"PROBLEM": {"SEMANTIC_SEG": {"ENCODING": "distance"}}, "LOSS": {"TYPE": "MSE"}})
    pred = tifffile.imread(res["run"] / "per_image" / "im_00.tif")
    assert pred.dtype == np.float32 and pred.max() > 2  # distances, not probabilities
    assert "MSE" in res["out"]


def test_regression_output_is_not_wrapped_into_uint8(tmp_path):
    cfg = cfg_for("linear", loss="MSE", SYSTEM={})
    big = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        big.weight.fill_(0)
        big.bias.fill_(1000.0)
    p = Predictor(net=big, cfg=cfg, normalizer=Normalizer(cfg.DATA.NORMALIZATION), device=torch.device("cpu"))
    (tmp_path / "d/x").mkdir(parents=True)
    (tmp_path / "d/y").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "d/x/a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "d/y/a.tif", np.full((32, 32), 990, np.uint16))
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.DATA.TEST.PATH, run_cfg.DATA.TEST.GT_PATH = str(tmp_path / "d/x"), str(tmp_path / "d/y")
    result = run_test(run_cfg, RunPaths(tmp_path / "r", "t", "1"), p)
    out = tifffile.imread(tmp_path / "r/t/results/t_1/per_image/a.tif")
    assert out.dtype == np.float32 and np.allclose(out, 1000)
    assert result["merge patches"]["per_image_mean"]["mae"] == pytest.approx(10, rel=1e-4)
    assert not (tmp_path / "r/t/results/t_1/per_image_binarized").exists()  # 'linear' has no labels


def test_rgb_inputs_and_palette_masks_give_palette_predictions(cli, tmp_path):
    rng = np.random.default_rng(3)
    for split, n in (("train", 4), ("test", 1)):
        for sub in ("x", "y"):
            (tmp_path / split / sub).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((64, 64), np.uint8)
            mask[8:30, 8:30] = 1
            mask[34:56, 30:60] = 2
            mask[0:2] = 255  # VOC's void border
            colour = np.array([[20, 20, 20], [200, 40, 40], [40, 200, 40], [0, 0, 0]], np.uint8)[np.where(mask == 255, 3, mask)]
            Image.fromarray(np.clip(colour + rng.integers(0, 20, colour.shape), 0, 255).astype(np.uint8)).save(tmp_path / split / "x" / f"i{i}.png")
            pal = Image.fromarray(mask, mode="P")
            pal.putpalette(voc_colormap().ravel().tolist())
            pal.save(tmp_path / split / "y" / f"i{i}.png")
    tree = {
        "SYSTEM": {"NUM_WORKERS": 0},
        "PROBLEM": {"SEMANTIC_SEG": {"IGNORE_CLASS_ID": 255}},
        "DATA": {
            "PATCH_SIZE": "(32, 32, 3)",
            "TRAIN": {"PATH": str(tmp_path / "train/x"), "GT_PATH": str(tmp_path / "train/y")},
            "VAL": {"SPLIT_TRAIN": 0.25},
            "TEST": {"PATH": str(tmp_path / "test/x"), "GT_PATH": str(tmp_path / "test/y")},
        },
        "MODEL": {"N_CLASSES": 3, "FEATURE_MAPS": [8, 16, 32]},
        "TRAIN": {"ENABLE": True, "EPOCHS": 2, "BATCH_SIZE": 4, "OPTIMIZER": "ADAMW", "LR": 0.01},
        "TEST": {"ENABLE": True},
    }
    code, _out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path / "res", "--name", "v")
    assert code == 0, err
    png = Image.open(tmp_path / "res/v/results/v_1/per_image_binarized/i0.png")
    assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]
    assert set(np.unique(np.asarray(png))) <= {0, 1, 2}


def test_class_balanced_sampling_draws_classes_uniformly():
    mask = np.zeros((64, 64), np.uint8)
    mask[:4, :4] = 2  # a rare class: 16 of 4096 pixels
    mask[32:, :] = 1
    s = Sample("a", np.zeros((64, 64, 1), np.float32), mask, Path("a.tif"))
    ds = PatchDataset([s], (16, 16), mode="random", replicate=1, class_balanced=True)
    ds.set_random_state(0)
    centres = [ds.random_start(0)[2] for _ in range(3000)]
    share = np.bincount([mask[c] for c in centres], minlength=3) / len(centres)
    assert share == pytest.approx([1 / 3] * 3, abs=0.04)
