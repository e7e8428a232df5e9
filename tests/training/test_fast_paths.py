"""The fast paths give the results of the plain ones.

- batched windows (``predict_windows``) equal MONAI's ``sliding_window_inference`` with one window at a
  time, exactly when both use the same blending weights, and closely with MONAI's own Gaussian map;
- bfloat16 autocast agrees with fp32 within bfloat16 tolerance (probabilities and labels);
- ``channels_last`` equals the contiguous layout within fp32 tolerance, in prediction and in a training step;
- a bf16 training step stays close to fp32; one known torch CPU bug (bf16 Conv3d weight gradients on inputs
  2 deep) is kept as an expected failure, so that it shows when a torch upgrade fixes it.

``bench/suite.py`` measures how much faster each path is; these tests keep them correct.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from segflow.config.loader import build_config
from segflow.data.normalize import Normalizer
from segflow.inference.predictor import Predictor
from segflow.inference.windows import gaussian_1d, predict_windows
from segflow.models.networks import build_model, memory_format
from segflow.training.module import SegModel

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


@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_batched_windows_equal_monai_one_window_at_a_time(ndim):
    net, cfg = small_net(ndim)
    _, shape, overlap = CASES[ndim]
    patch = cfg.spatial_patch
    image = smooth_image(shape)
    x = torch.from_numpy(image)[None, None]
    with torch.inference_mode():
        ours = predict_windows(image[..., None], net, patch, overlap, batch_size=5)
        # MONAI with segflow's weight map: the same windows, the same blend, one window per forward pass.
        same = sliding_window_inference(x, patch, 1, net, overlap=overlap, mode="gaussian", roi_weight_map=separable_weight(patch))[0].numpy()
        # MONAI's own Gaussian map: it clamps the product of the 1D Gaussians at 1e-3 where segflow clamps each
        # 1D Gaussian, so the blends differ only where every covering window is near its own border, i.e.
        # along the image border.
        default = sliding_window_inference(x, patch, 1, net, overlap=overlap, mode="gaussian")[0].numpy()
    assert ours.shape == same.shape == (1, *shape)
    np.testing.assert_allclose(ours, same, rtol=1e-5, atol=2e-5)
    ours, default = (1 / (1 + np.exp(-v)) for v in (ours, default))
    inside = (slice(None), *(slice(p // 2, s - p // 2) for p, s in zip(patch, shape)))
    assert np.abs(ours - default)[inside].max() < 2e-3
    assert np.abs(ours - default).mean() < 5e-3


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
    conv = next(m for m in p.net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert conv.weight.is_contiguous(memory_format=memory_format(len(shape)))  # segflow builds networks channels-last
    image = (smooth_image(shape, seed=2) * 255).astype(np.uint8)
    fast = p.predict(image, overlap=[0.5] * len(shape), batch_size=3)
    p.net.to(memory_format=torch.contiguous_format)
    assert conv.weight.is_contiguous()
    plain = p.predict(image, overlap=[0.5] * len(shape), batch_size=3)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5)


# 3D training patch whose levels never have a depth of 2 (16 -> 8 -> 4): see the test at the end.
TRAIN_PATCH = {"2D": "(32, 32, 1)", "3D": "(16, 16, 16, 1)"}


def training_step(ndim: str, layout: torch.memory_format, autocast: bool, patch: str | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients (per parameter) of one SegModel step on a fixed batch of two patches."""
    cfg = config(ndim, patch or TRAIN_PATCH[ndim])
    torch.manual_seed(0)
    model = SegModel(cfg.model_dump(mode="json"))
    model.net.to(memory_format=layout)
    x = torch.from_numpy(np.stack([smooth_image(cfg.spatial_patch, seed=s)[None] for s in range(2)]))
    y = (x > 0.5).long()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    loss = model.loss_fn(logits.float(), y)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.net.named_parameters() if p.grad is not None}


def cosine(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Cosine similarity of two whole gradients."""
    flat, flat_ref = (torch.cat([g[n].reshape(-1) for n in ref]) for g in (grads, ref))
    return float(torch.nn.functional.cosine_similarity(flat, flat_ref, dim=0))


@pytest.mark.parametrize("ndim", ["2D", "3D"])
def test_training_step_fast_paths(ndim):
    loss, grads = training_step(ndim, torch.contiguous_format, autocast=False)
    cl_loss, cl_grads = training_step(ndim, memory_format(int(ndim[0])), autocast=False)
    assert cl_loss == pytest.approx(loss, rel=1e-5)
    for name in grads:
        torch.testing.assert_close(cl_grads[name], grads[name], rtol=1e-3, atol=1e-5)
    for layout in (torch.contiguous_format, memory_format(int(ndim[0]))):
        bf_loss, bf_grads = training_step(ndim, layout, autocast=True)
        assert bf_loss == pytest.approx(loss, rel=2e-2)
        assert all(torch.isfinite(g).all() for g in bf_grads.values())
        # A 4-channel network has few terms per gradient entry to average bfloat16 rounding over.
        assert cosine(bf_grads, grads) > 0.98


def conv3d_weight_grad_error(shape: tuple[int, int, int], layout: torch.memory_format = torch.contiguous_format, batch: int = 2, channels: int = 16) -> float:
    """Relative error of a Conv3d's bf16-autocast weight gradient against fp32, on inputs of ``shape``."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1).to(memory_format=layout)
    x = torch.randn(batch, channels, *shape).to(memory_format=layout)
    g = torch.randn(batch, channels, *shape)
    (conv(x) * g).sum().backward()
    ref = conv.weight.grad.clone()
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    (y.float() * g).sum().backward()
    err = float((conv.weight.grad - ref).norm() / ref.norm())
    return err if np.isfinite(err) else float("inf")


LAYOUTS = [torch.contiguous_format, torch.channels_last_3d]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8), (4, 8, 8), (8, 2, 8), (8, 8, 2)])
def test_bf16_conv3d_weight_gradient(shape, layout):
    """Only a depth of 2 is hit (segflow.training.precision avoids exactly that), not 2 along y or x."""
    assert conv3d_weight_grad_error(shape, layout) < 0.02  # bfloat16 rounding: about 0.3%


@pytest.mark.xfail(reason="torch 2.13 CPU (oneDNN) bug: the bf16 Conv3d weight gradient is wrong (about 90% off, "
                   "sometimes not finite) for inputs 2 deep with 2 or more patches a batch: 3D U-Nets whose patch depth "
                   "halves to 2 at some level must not train in bf16 on the CPU", strict=False)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bf16_conv3d_weight_gradient_two_deep(layout):
    assert conv3d_weight_grad_error((2, 8, 8), layout) < 0.02
