"""The fast paths give the results of the plain ones.

- batched windows (``predict_windows``) equal MONAI's ``sliding_window_inference`` with one window at a
  time, exactly when both use the same blending weights, and closely with MONAI's own Gaussian map;
- bfloat16 autocast agrees with fp32 within bfloat16 tolerance (probabilities and labels);
- ``channels_last`` equals the contiguous layout within fp32 tolerance, in prediction and in a training step.

``bench/suite.py`` measures how much faster each path is; these tests keep them correct.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from segflow.config import build_config
from segflow.data import Normalizer
from segflow.inference import Predictor, gaussian_1d, predict_windows
from segflow.models import build_model
from segflow.training import SegModel

CASES = {
    # ndim: (patch with channels, image shape (not multiples of the patch), overlap)
    "2D": ("(32, 32, 1)", (70, 45), (0.5, 0.5)),
    "3D": ("(8, 16, 16, 1)", (12, 30, 22), (0.5, 0.5, 0.5)),
}


def config(ndim: str, patch: str | None = None):
    tree = {"PROBLEM": {"NDIM": ndim}, "DATA": {"PATCH_SIZE": patch or CASES[ndim][0]}, "MODEL": {"FEATURE_MAPS": [4, 8, 16]}}
    return build_config(tree)[0]


def small_net(ndim: str, seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A small random-weight U-Net (MONAI DynUNet, as segflow builds it), in eval mode."""
    cfg = config(ndim)
    torch.manual_seed(seed)
    return build_model(cfg).eval(), cfg


def smooth_image(shape: tuple[int, ...], seed: int = 0, sigma: float = 3.0) -> np.ndarray:
    """A smooth float image in [0, 1]: a random network's decision boundary is then a thin curve."""
    image = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def separable_weight(patch: tuple[int, ...]) -> torch.Tensor:
    """segflow's window weight: the product of its 1D Gaussians."""
    weight = torch.ones(())
    for p in patch:
        weight = weight[..., None] * torch.as_tensor(gaussian_1d(p), dtype=torch.float32)
    return weight[None, None]


def channels_last(ndim: int) -> torch.memory_format:
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_batched_windows_equal_monai_one_window_at_a_time(ndim):
    net, cfg = small_net(ndim)
    _, shape, overlap = CASES[ndim]
    patch = cfg.spatial_patch
    image = smooth_image(shape)
    with torch.inference_mode():
        ours = predict_windows(image[..., None], net, patch, overlap, batch_size=5)
        # MONAI with segflow's weight map: the same windows, the same blend, one window per forward pass.
        monai = sliding_window_inference(
            torch.from_numpy(image)[None, None], patch, 1, net, overlap=overlap, mode="gaussian", roi_weight_map=separable_weight(patch)
        )[0].numpy()
    assert ours.shape == monai.shape == (1, *shape)
    np.testing.assert_allclose(ours, monai, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_blend_is_close_to_monai_default_gaussian(ndim):
    """MONAI clamps the product of its 1D Gaussians at 1e-3, segflow each 1D Gaussian: the blends differ only
    where every covering window is near its own border, i.e. along the image border; inside they agree."""
    net, cfg = small_net(ndim)
    _, shape, overlap = CASES[ndim]
    patch = cfg.spatial_patch
    image = smooth_image(shape)
    with torch.inference_mode():
        ours = torch.sigmoid(torch.from_numpy(predict_windows(image[..., None], net, patch, overlap, batch_size=4))).numpy()
        monai = torch.sigmoid(
            sliding_window_inference(torch.from_numpy(image)[None, None], patch, 1, net, overlap=overlap, mode="gaussian")[0]
        ).numpy()
    inside = (slice(None), *(slice(p // 2, s - p // 2) for p, s in zip(patch, shape)))
    assert np.abs(ours - monai)[inside].max() < 2e-3
    assert np.abs(ours - monai).mean() < 5e-3


def predictor(ndim: str, seed: int = 0) -> Predictor:
    net, cfg = small_net(ndim, seed)
    return Predictor(net=net, cfg=cfg, normalizer=Normalizer(cfg.DATA.NORMALIZATION), device=torch.device("cpu"))


@pytest.mark.parametrize(("ndim", "shape"), [("2D", (96, 96)), ("3D", (16, 40, 40))])
def test_bf16_autocast_agrees_with_fp32(ndim, shape):
    p = predictor(ndim)
    image = (smooth_image(shape, seed=1, sigma=4.0) * 255).astype(np.uint8)
    fp32 = p.predict(image, overlap=[0.5] * len(shape))
    p.autocast = torch.bfloat16  # what a checkpoint trained with TRAIN.PRECISION: bf16 gets
    bf16 = p.predict(image, overlap=[0.5] * len(shape))
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    # bfloat16 keeps 8 bits of mantissa: probabilities move by a few thousandths at most.
    assert np.abs(bf16 - fp32).max() < 0.03
    assert np.abs(bf16 - fp32).mean() < 3e-3
    assert ((bf16 > 0.5) == (fp32 > 0.5)).mean() >= 0.99


@pytest.mark.parametrize(("ndim", "shape"), [("2D", (80, 70)), ("3D", (12, 36, 30))])
def test_channels_last_prediction_equals_contiguous(ndim, shape):
    p = predictor(ndim)
    image = (smooth_image(shape, seed=2) * 255).astype(np.uint8)
    plain = p.predict(image, overlap=[0.5] * len(shape), batch_size=3)
    p.net.to(memory_format=channels_last(len(shape)))
    assert p.net.input_block.conv1.conv.weight.is_contiguous(memory_format=channels_last(len(shape)))
    fast = p.predict(image, overlap=[0.5] * len(shape), batch_size=3)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5)


# 3D training patch whose levels never have a depth of 2 (16 -> 8 -> 4): see the test at the end.
TRAIN_PATCH = {"2D": "(32, 32, 1)", "3D": "(16, 16, 16, 1)"}


def training_step(ndim: str, memory_format: torch.memory_format, autocast: bool, patch: str | None = None) -> tuple[float, torch.Tensor]:
    """Loss and flattened gradient of one SegModel step on a fixed batch of two patches."""
    cfg = config(ndim, patch or TRAIN_PATCH[ndim])
    torch.manual_seed(0)
    model = SegModel(cfg.model_dump(mode="json"))
    model.net.to(memory_format=memory_format)
    patch = cfg.spatial_patch
    x = torch.from_numpy(np.stack([smooth_image(patch, seed=s)[None] for s in range(2)]))
    y = (x > 0.5).long()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    loss = model.loss_fn(logits.float(), y)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.net.parameters() if p.grad is not None])
    return float(loss.detach()), grad


@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_training_step_fast_paths(ndim):
    loss, grad = training_step(ndim, torch.contiguous_format, autocast=False)
    cl_loss, cl_grad = training_step(ndim, channels_last(int(ndim[0])), autocast=False)
    assert cl_loss == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(cl_grad, grad, rtol=1e-3, atol=1e-5)
    for memory_format in (torch.contiguous_format, channels_last(int(ndim[0]))):
        bf_loss, bf_grad = training_step(ndim, memory_format, autocast=True)
        assert bf_loss == pytest.approx(loss, rel=2e-2)
        # A 4-channel network has few terms per gradient entry to average bfloat16 rounding over.
        assert torch.isfinite(bf_grad).all()
        assert torch.nn.functional.cosine_similarity(bf_grad, grad, dim=0) > 0.98


@pytest.mark.xfail(reason="torch 2.13 CPU (oneDNN) bug: bf16 Conv3d weight gradients are wrong when a level is 2 deep "
                   "and the batch holds 2 or more patches; bf16 training must not be a default for such 3D patches", strict=False)
def test_bf16_3d_training_step_with_a_level_two_deep():
    """Patch depth 8 with 3 levels gives depths 8, 4, 2: the bottleneck convolutions are 2 deep."""
    _, grad = training_step("3D", torch.contiguous_format, autocast=False, patch="(8, 16, 16, 1)")
    for _ in range(3):  # wrong in most draws, sometimes non-finite
        _, bf_grad = training_step("3D", torch.contiguous_format, autocast=True, patch="(8, 16, 16, 1)")
        assert torch.isfinite(bf_grad).all()
        assert torch.nn.functional.cosine_similarity(bf_grad, grad, dim=0) > 0.98
