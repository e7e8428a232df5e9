"""Networks, losses and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import AttentionUnet, DynUNet, SegResNet

from segflow.config.loader import build_config
from segflow.errors import SegflowError
from segflow.evaluation.metrics import confusion, scores
from segflow.models.losses import SegmentationLoss, class_weights
from segflow.models.networks import build_model, check_model, divisor, strides


def _cfg(**sections):
    tree = {"PROBLEM": {"NDIM": "2D"}, "DATA": {"PATCH_SIZE": "(32, 32, 1)"}, "MODEL": {"FEATURE_MAPS": [4, 8, 16]}}
    for k, v in sections.items():
        tree.setdefault(k, {}).update(v)
    return build_config(tree)[0]


@pytest.mark.parametrize("arch", ["unet", "resunet", "attention_unet", "segresnet"])
@pytest.mark.parametrize(("ndim", "patch", "shape"), [("2D", "(32, 32, 2)", (32, 32)), ("3D", "(8, 16, 16, 1)", (8, 16, 16))])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_architectures_2d_3d_output_channels(arch, ndim, patch, shape, n_classes):
    cfg = _cfg(PROBLEM={"NDIM": ndim}, DATA={"PATCH_SIZE": patch}, MODEL={"ARCHITECTURE": arch, "N_CLASSES": n_classes, "FEATURE_MAPS": [4, 8, 16]})
    net = build_model(cfg)
    x = torch.randn(2, cfg.in_channels, *shape)
    y = net(x)
    assert y.shape == (2, 1 if n_classes == 2 else n_classes, *shape)
    assert isinstance(net, {"attention_unet": AttentionUnet, "segresnet": SegResNet}.get(arch, DynUNet))


def test_segresnet_s_rules_are_one_line_each():
    with pytest.raises(SegflowError, match=r"MODEL.FEATURE_MAPS \[4, 8, 32\]: segresnet doubles its channels at each level; give \[4, 8, 16\]"):
        check_model(build_config({"MODEL": {"ARCHITECTURE": "segresnet", "FEATURE_MAPS": [4, 8, 32]}})[0])
    with pytest.raises(SegflowError, match="segresnet halves every axis at every level"):
        check_model(build_config({"PROBLEM": {"NDIM": "3D"}, "DATA": {"PATCH_SIZE": "(8, 16, 16, 1)"},
                                  "MODEL": {"ARCHITECTURE": "segresnet", "FEATURE_MAPS": [4, 8, 16], "Z_DOWN": [1, 2]}})[0])  # fmt: skip


def test_resunet_has_residual_blocks_and_dropout_is_used():
    plain = build_model(_cfg(MODEL={"ARCHITECTURE": "unet"}))
    res = build_model(_cfg(MODEL={"ARCHITECTURE": "resunet", "DROPOUT_VALUES": [0.0, 0.1, 0.3]}))
    assert sum(p.numel() for p in res.parameters()) > sum(p.numel() for p in plain.parameters())
    rates = {m.p for m in res.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)}
    assert rates == {0.3}


_NORM_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


@pytest.mark.parametrize(
    ("arch", "norm", "layer"),
    [("unet", "none", None), ("resunet", "none", None), ("unet", "bn", torch.nn.BatchNorm2d), ("resunet", "in", torch.nn.InstanceNorm2d)],
)
def test_model_normalization_builds_the_layers_it_names(arch, norm, layer):
    net = build_model(_cfg(MODEL={"ARCHITECTURE": arch, "NORMALIZATION": norm}))
    found = {type(m) for m in net.modules() if isinstance(m, _NORM_LAYERS)}
    assert found == (set() if layer is None else {layer})
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_z_down_keeps_z_resolution():
    cfg = _cfg(PROBLEM={"NDIM": "3D"}, DATA={"PATCH_SIZE": "(4, 16, 16, 1)"}, MODEL={"Z_DOWN": [1, 2]})
    assert strides(cfg) == [(1, 2, 2), (2, 2, 2)]
    assert divisor(cfg) == (2, 4, 4)
    assert build_model(cfg)(torch.randn(1, 1, 4, 16, 16)).shape == (1, 1, 4, 16, 16)


def test_class_weights_inverse_frequency():
    w = class_weights(np.array([90, 10, 0]))
    assert w.tolist() == pytest.approx([100 / 180, 100 / 20, 0.0])


def test_loss_types_and_weighting():
    labels = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    labels[:, :, 2:6, 2:6] = 1
    good = (labels.float() * 2 - 1) * 10
    bad = -good
    for kind in ("CE", "DICE", "W_CE_DICE"):
        loss = SegmentationLoss(_cfg(LOSS={"TYPE": kind}))
        assert loss(good, labels) < 0.01 < loss(bad, labels)
    logits = torch.randn(2, 1, 8, 8)
    ce = SegmentationLoss(_cfg(LOSS={"TYPE": "CE"}))(logits, labels)
    dice = SegmentationLoss(_cfg(LOSS={"TYPE": "DICE"}))(logits, labels)
    both = SegmentationLoss(_cfg(LOSS={"TYPE": "W_CE_DICE", "WEIGHTS": "(0.7, 0.3)"}))(logits, labels)
    assert both.item() == pytest.approx((0.7 * ce + 0.3 * dice).item(), rel=1e-5)


def test_class_rebalance_weights_rare_class():
    labels = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    labels[..., 0, 0] = 1
    logits = torch.zeros(1, 1, 8, 8)
    plain = SegmentationLoss(_cfg())(logits, labels)
    rebalanced = SegmentationLoss(_cfg(LOSS={"CLASS_REBALANCE": True}), np.array([63, 1]))(logits, labels)
    assert rebalanced > plain
    multi = SegmentationLoss(_cfg(MODEL={"N_CLASSES": 3}, LOSS={"CLASS_REBALANCE": True}), np.array([80, 15, 5]))
    assert multi.weight.tolist() == pytest.approx(class_weights(np.array([80, 15, 5])).tolist())


def test_scores_known_values_and_absent_class():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])
    s = scores(confusion(pred, gt, 3))
    # class 0: tp 3, fp 1, fn 1 -> 3/5; class 1: tp 3, fp 1, fn 1 -> 3/5; class 2 absent from both -> NaN
    assert s["iou_per_class"][:2] == pytest.approx([0.6, 0.6]) and np.isnan(s["iou_per_class"][2])
    assert s["mean_iou"] == pytest.approx(0.6) and s["foreground_iou"] == pytest.approx(0.6)
    assert s["accuracy"] == pytest.approx(6 / 8) and s["foreground_dice"] == pytest.approx(0.75)
    ignored = scores(confusion(pred, np.where(gt == 1, 255, gt), 2, ignore_id=255))
    assert ignored["accuracy"] == pytest.approx(3 / 4)
