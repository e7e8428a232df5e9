"""Prediction and the test phase: seamless stitching, TTA, full image, per patch, metrics, outputs, memory."""

from __future__ import annotations

import csv
import itertools
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from segflow.config.loader import build_config
from segflow.data.normalize import Normalizer
from segflow.errors import SegflowError
from segflow.evaluation.postprocess import apply_median_filters, median_filters
from segflow.evaluation.testphase import run_test
from segflow.inference.predictor import Predictor
from segflow.inference.windows import gaussian_1d, predict_windows, tta_views, window_batch
from segflow.io.images import read_image
from segflow.io.paths import RunPaths


class Logit(torch.nn.Module):
    """A 'model' whose logits are a fixed function of the input: x > 0.5 is foreground."""

    def __init__(self, n_out: int = 1) -> None:
        super().__init__()
        self.n_out = n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_out == 1:
            return (x[:, :1] - 0.5) * 50
        # Class c wins where the input is closest to c / (n_out - 1).
        centres = torch.linspace(0, 1, self.n_out).view(1, -1, *[1] * (x.dim() - 2))
        return -((x[:, :1] - centres) ** 2) * 200


def predictor(net: torch.nn.Module, ndim: str = "2D", patch: str = "(32, 32, 1)", n_classes: int = 2, **sections: dict) -> Predictor:
    tree = {"PROBLEM": {"NDIM": ndim}, "DATA": {"PATCH_SIZE": patch}, "MODEL": {"N_CLASSES": n_classes, "FEATURE_MAPS": [4, 8, 16]}}
    for k, v in sections.items():
        for kk, vv in v.items():
            if isinstance(vv, dict):
                tree.setdefault(k, {}).setdefault(kk, {}).update(vv)
            else:
                tree.setdefault(k, {})[kk] = vv
    cfg, _ = build_config(tree)
    return Predictor(net=net.eval(), cfg=cfg, normalizer=Normalizer(cfg.DATA.NORMALIZATION), device=torch.device("cpu"))


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [((70, 45), (32, 32), (0.5, 0.5)), ((64, 64), (32, 32), (0.0, 0.0)), ((20, 50), (32, 32), (0.25, 0.25)), ((20, 37, 29), (8, 16, 16), (0.5, 0.25, 0.0))],
)
def test_identity_model_is_stitched_back_exactly(shape, patch, overlap):
    image = np.random.default_rng(0).random((*shape, 2), dtype=np.float32)
    out = predict_windows(image, lambda x: x, patch, overlap, batch_size=3)
    assert out.shape == (2, *shape)
    np.testing.assert_allclose(np.moveaxis(out, 0, -1), image, rtol=1e-5, atol=1e-6)


def test_gaussian_weight_is_centred_and_positive():
    g = gaussian_1d(32)
    assert g.min() > 0 and g[15] == g[16] == g.max() and g[0] < 0.01


def _symmetric_conv(ndim: int) -> torch.nn.Module:
    """A convolution whose kernel is invariant under flips and 90-degree rotations: D4 (x z-flip) equivariant."""
    conv = (torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d)(1, 1, 3, padding=1, bias=True)
    k = torch.rand((3,) * ndim)
    k = sum(torch.rot90(torch.flip(k, [ndim - 1]) if f else k, r, dims=(-2, -1)) for r in range(4) for f in (0, 1))
    if ndim == 3:
        k = k + torch.flip(k, [0])
    with torch.no_grad():
        conv.weight.copy_(k[None, None] / k.sum())
    return conv


@pytest.mark.parametrize(("ndim", "patch", "shape"), [("2D", "(32, 32, 1)", (50, 41)), ("3D", "(8, 16, 16, 1)", (12, 30, 22))])
def test_tta_of_equivariant_model_equals_plain(ndim, patch, shape):
    p = predictor(_symmetric_conv(int(ndim[0])), ndim, patch)
    image = (np.random.default_rng(1).random(shape) * 255).astype(np.uint8)
    plain = p.predict(image)
    tta = p.predict(image, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-5)
    # Views really differ for a model that is not equivariant.
    lopsided = torch.nn.Conv2d(1, 1, 3, padding=1) if ndim == "2D" else torch.nn.Conv3d(1, 1, 3, padding=1)
    p2 = predictor(lopsided, ndim, patch)
    assert not np.allclose(p2.predict(image, tta=True), p2.predict(image), atol=1e-4)


def test_tta_uses_8_views_in_2d_and_16_in_3d():
    calls = []
    fn = tta_views(lambda x: calls.append(1) or x, 2)
    fn(torch.zeros(1, 1, 4, 4))
    assert len(calls) == 8
    calls.clear()
    tta_views(lambda x: calls.append(1) or x, 3)(torch.zeros(1, 1, 4, 4, 4))
    assert len(calls) == 16


def test_full_image_equals_merge_for_pointwise_model():
    p = predictor(torch.nn.Conv2d(1, 1, 1))
    image = (np.random.default_rng(2).random((45, 70)) * 255).astype(np.uint8)
    np.testing.assert_allclose(p.predict(image, full_image=True), p.predict(image), atol=1e-5)


def test_median_filters_match_scipy():
    probs = np.random.default_rng(3).random((9, 12, 10, 1)).astype(np.float32)
    for axes, size in (("z", (5, 1, 1)), ("yz", (5, 5, 1)), ("xy", (1, 5, 5)), ("zx", (5, 1, 5))):
        out = apply_median_filters(probs, [(axes, 5)])
        np.testing.assert_array_equal(out[..., 0], ndimage.median_filter(probs[..., 0], size=size, mode="reflect"))
    cfg = predictor(Logit(), TEST={"POST_PROCESSING": {"Z_FILTERING": True, "MEDIAN_FILTER": True, "MEDIAN_FILTER_AXIS": ["z", "yx"], "MEDIAN_FILTER_SIZE": [3, 7]}}).cfg
    assert median_filters(cfg) == [("z", 5), ("z", 3), ("xy", 7)]
    # In 2D only the x-y filter applies.
    flat = probs[0]
    np.testing.assert_array_equal(apply_median_filters(flat, median_filters(cfg))[..., 0], ndimage.median_filter(flat[..., 0], size=(7, 7), mode="reflect"))
    with pytest.raises(SegflowError, match="one size per MEDIAN_FILTER_AXIS"):
        predictor(Logit(), TEST={"POST_PROCESSING": {"MEDIAN_FILTER": True, "MEDIAN_FILTER_AXIS": ["z"], "MEDIAN_FILTER_SIZE": [3, 3]}})


def _write_case(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None, resolution=None) -> None:
    (root / "x").mkdir(parents=True)
    (root / "y").mkdir(parents=True)
    for name, im in images.items():
        tifffile.imwrite(root / "x" / name, im, resolution=resolution)
    for name, m in (masks or {}).items():
        tifffile.imwrite(root / "y" / name, m)


def _run(p: Predictor, tmp_path: Path, **test: object) -> tuple[dict, Path]:
    cfg = p.cfg.model_copy(deep=True)
    cfg.DATA.TEST.PATH = str(tmp_path / "data" / "x")
    cfg.DATA.TEST.GT_PATH = str(tmp_path / "data" / "y")
    for k, v in test.items():
        setattr(cfg.TEST, k, v)
    paths = RunPaths(tmp_path / "res", "t", "1")
    return run_test(cfg, paths, p), paths.run


def test_known_predictions_give_known_iou_and_outputs(tmp_path):
    image = np.zeros((64, 64), np.uint8)
    image[:, :32] = 255  # predicted foreground: left half
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :48] = 1  # true foreground: left three quarters
    _write_case(tmp_path / "data", {"a.tif": image}, {"a.tif": mask}, resolution=(2.0, 4.0))
    result, run = _run(predictor(Logit()), tmp_path, FULL_IMG=True)
    merged = result["merge patches"]
    # foreground: 32 / 48; background: predicted 32 columns, true 16 -> 16 / 32
    assert merged["per_image_mean"]["foreground_iou"] == pytest.approx(2 / 3)
    assert merged["pooled"]["iou_per_class"] == pytest.approx([0.5, 2 / 3])
    assert merged["per_image_mean"]["mean_iou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert merged["per_image_mean"]["accuracy"] == pytest.approx(0.75)
    assert result["full image"]["per_image_mean"]["foreground_iou"] == pytest.approx(2 / 3)
    # per patch: 4 patches of 32x32; two fully foreground in both (IoU 1), two with no predicted foreground and half true foreground (IoU 0)
    assert result["per patch"]["per_image_mean"]["foreground_iou"] == pytest.approx(0.5)
    for folder in ("per_image", "per_image_binarized", "full_image", "full_image_binarized"):
        assert [p.name for p in (run / folder).iterdir()] == ["a.tif"]
    binarized = tifffile.imread(run / "per_image_binarized" / "a.tif")
    np.testing.assert_array_equal(binarized, (image > 0).astype(np.uint8))  # the same labels the IoU used
    with tifffile.TiffFile(run / "per_image" / "a.tif") as tif:
        assert tif.pages[0].dtype == np.float32
        assert tif.pages[0].tags["XResolution"].value == (2, 1) and tif.pages[0].tags["YResolution"].value == (4, 1)
    rows = list(csv.DictReader((run / "test_metrics.csv").read_text().splitlines()))
    assert {(r["mode"], r["image"]) for r in rows} >= {("merge patches", "a.tif"), ("merge patches", "POOLED"), ("per patch", "MEAN"), ("full image", "a.tif")}
    assert float(next(r for r in rows if r["mode"] == "merge patches" and r["image"] == "a.tif")["foreground_iou"]) == pytest.approx(2 / 3, abs=1e-4)


def test_empty_image_does_not_distort_the_mean(tmp_path):
    empty = np.zeros((32, 32), np.uint8)
    half = np.zeros((32, 32), np.uint8)
    half[:16] = 255
    _write_case(tmp_path / "data", {"a.tif": empty, "b.tif": half}, {"a.tif": np.zeros((32, 32), np.uint8), "b.tif": (half > 0).astype(np.uint8)})
    result, _ = _run(predictor(Logit()), tmp_path)
    rows = result["merge patches"]["per_image"]
    assert np.isnan(rows[0]["foreground_iou"])  # no foreground in mask or prediction: undefined, not 0 or 1
    assert result["merge patches"]["per_image_mean"]["foreground_iou"] == pytest.approx(1.0)


@pytest.mark.parametrize("argmax", [True, False])
def test_multiclass_argmax_on_and_off(tmp_path, argmax):
    image = np.repeat(np.array([0, 128, 255], np.uint8), [10, 12, 10])[None].repeat(32, 0)
    mask = np.repeat(np.array([0, 1, 2], np.uint8), [10, 12, 10])[None].repeat(32, 0)
    _write_case(tmp_path / "data", {"m.tif": image}, {"m.tif": mask})
    p = predictor(Logit(3), n_classes=3, DATA={"TEST": {"ARGMAX_TO_OUTPUT": argmax}})
    result, run = _run(p, tmp_path)
    assert result["merge patches"]["pooled"]["iou_per_class"] == pytest.approx([1, 1, 1])
    probs = read_image(run / "per_image" / "m.tif", 2)
    binarized = read_image(run / "per_image_binarized" / "m.tif", 2)
    assert probs.shape == (32, 32, 3) and probs.dtype == np.float32
    assert tifffile.TiffFile(run / "per_image" / "m.tif").series[0].axes == "CYX"  # one ImageJ channel per class
    if argmax:
        np.testing.assert_array_equal(binarized[..., 0], mask)
    else:
        assert binarized.shape == (32, 32, 3)
        np.testing.assert_array_equal(binarized.argmax(-1), mask)


def test_3d_post_processing_and_2d_stack(tmp_path):
    vol = np.zeros((12, 32, 32), np.uint8)
    vol[:, 8:24, 8:24] = 255
    noisy = vol.copy()
    noisy[5, 0:8, 0:8] = 255  # a speck on one slice only: the z median filter removes it
    truth = (vol > 0).astype(np.uint8)
    _write_case(tmp_path / "data", {"v.tif": noisy}, {"v.tif": truth})
    p = predictor(Logit(), "3D", "(8, 16, 16, 1)", TEST={"POST_PROCESSING": {"Z_FILTERING": True, "Z_FILTERING_SIZE": 3}})
    result, run = _run(p, tmp_path)
    assert result["merge patches"]["per_image_mean"]["foreground_iou"] < 1
    assert result["merge patches - post-processing"]["per_image_mean"]["foreground_iou"] == pytest.approx(1.0)
    assert tifffile.imread(run / "per_image_post_processing" / "v.tif").shape == (12, 32, 32)

    slices = {f"s{i:02d}.tif": noisy[i] for i in range(12)}
    _write_case(tmp_path / "d2", slices, {k: truth[i] for i, k in enumerate(slices)})
    p2 = predictor(Logit(), TEST={"ANALIZE_2D_IMGS_AS_3D_STACK": True, "POST_PROCESSING": {"Z_FILTERING": True, "Z_FILTERING_SIZE": 3}})
    (tmp_path / "data").rename(tmp_path / "d3")
    (tmp_path / "d2").rename(tmp_path / "data")
    result, run = _run(p2, tmp_path)
    assert result["as 3D stack"]["per_image_mean"]["foreground_iou"] < 1
    assert result["as 3D stack - post-processing"]["per_image_mean"]["foreground_iou"] == pytest.approx(1.0)
    for folder in ("as_3d_stack", "as_3d_stack_binarized", "as_3d_stack_post_processing"):
        assert tifffile.imread(run / folder / "s00_stack.tif").shape == (12, 32, 32)


def test_stitching_memory_is_output_plus_bounded_buffer():
    image = np.zeros((1024, 1024, 1), np.uint8)
    out_bytes = 1024 * 1024 * 4
    tracemalloc.start()
    predict_windows(image, lambda x: x, (128, 128), (0.5, 0.5), batch_size=8, prepare=lambda w: w.astype(np.float32))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    window_buffers = 8 * 128 * 128 * 4 * 4  # a batch of windows, a few copies of it
    assert peak < out_bytes + window_buffers + 2**20


@pytest.mark.parametrize(("ndim", "patch", "cpu"), [("2D", "(256, 256, 1)", 4), ("2D", "(512, 512, 1)", 1), ("2D", "(32, 32, 1)", 256), ("3D", "(64, 64, 64, 1)", 1)])
def test_window_batch_holds_a_fixed_number_of_voxels_on_the_cpu(ndim, patch, cpu):
    """TEST.BATCH_SIZE -1: on the CPU a batch holds about 2**18 pixels/voxels (bench/README.md: the fastest);
    on a GPU twice the training batch; a set TEST.BATCH_SIZE always wins."""
    cfg = build_config({"PROBLEM": {"NDIM": ndim}, "DATA": {"PATCH_SIZE": patch}, "TRAIN": {"BATCH_SIZE": 6}})[0]
    assert window_batch(cfg, torch.device("cpu")) == cpu
    assert window_batch(cfg, torch.device("cuda")) == 12
    cfg.TEST.BATCH_SIZE = 3
    assert window_batch(cfg, torch.device("cpu")) == window_batch(cfg, torch.device("cuda")) == 3


# ------------------------------------------------------------------------------------------ test-phase outputs
def _png_case(root: Path, palette: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """One 2D PNG image; its mask as a palette PNG, a grayscale PNG, or (None) no mask at all."""
    import imageio.v3 as iio
    from PIL import Image

    image = np.zeros((32, 32), np.uint8)
    image[:, :12] = 255
    mask = (image > 0).astype(np.uint8)
    (root / "x").mkdir(parents=True)
    (root / "y").mkdir(parents=True)
    iio.imwrite(root / "x" / "a.png", image)
    if palette is not None:
        im = Image.fromarray(mask, mode="P" if palette else "L")
        if palette:
            im.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)
        im.save(root / "y" / "a.png")
    return image, mask


@pytest.mark.parametrize("masks", ["grayscale_png", "palette_png", "tiff", "npy", "none"])
def test_labels_take_the_form_of_the_masks(tmp_path, masks):
    """Grayscale PNG masks give grayscale PNG labels (imageio reads the class ids), palette ones palette PNGs,
    TIFF masks TIFF, NumPy masks .npy; without masks the labels are TIFF."""
    import imageio.v3 as iio
    from PIL import Image

    _image, mask = _png_case(tmp_path / "data", {"grayscale_png": False, "palette_png": True}.get(masks))
    if masks == "tiff":
        tifffile.imwrite(tmp_path / "data" / "y" / "a.tif", mask)
    if masks == "npy":
        np.save(tmp_path / "data" / "y" / "a.npy", mask)
    p = predictor(Logit())
    cfg = p.cfg.model_copy(deep=True)
    cfg.DATA.TEST.PATH, cfg.DATA.TEST.GT_PATH = str(tmp_path / "data" / "x"), str(tmp_path / "data" / "y")
    cfg.DATA.TEST.LOAD_GT = masks != "none"
    paths = RunPaths(tmp_path / "res", "t", "1")
    run_test(cfg, paths, p)
    written = [f.name for f in paths.sub("per_image_binarized").iterdir()]
    out = paths.sub("per_image_binarized") / written[0]
    expected = {"tiff": "a.tif", "npy": "a.npy", "none": "a.tif"}.get(masks, "a.png")
    assert written == [expected]
    if masks.endswith("png"):
        assert Image.open(out).mode == ("P" if masks == "palette_png" else "L")
        np.testing.assert_array_equal(read_image(out, 2, palette_indices=True)[..., 0], mask)
        if masks == "grayscale_png":
            np.testing.assert_array_equal(iio.imread(out), mask)  # what a user's own scoring script reads
    else:
        np.testing.assert_array_equal(np.load(out) if masks == "npy" else tifffile.imread(out), mask)


def test_test_phase_prints_one_line_per_image_when_not_a_terminal(tmp_path, capsys):
    blank = np.zeros((32, 32), np.uint8)
    _write_case(tmp_path / "data", {"a.tif": blank, "b.tif": blank}, {"a.tif": blank, "b.tif": blank})
    _run(predictor(Logit()), tmp_path, FULL_IMG=True)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("test image ")]
    assert [line.split(":")[0] for line in lines] == ["test image 1/2 a.tif", "test image 2/2 b.tif"]
    assert all(line.endswith(" s") for line in lines) and "\r" not in out + err and "img/s" not in err


def test_summary_table_columns_align_whatever_the_mode_names(capsys):
    from segflow.evaluation.testphase import print_summary

    nan = float("nan")
    row = {"foreground_iou": 0.5, "mean_iou": 0.6, "foreground_dice": 0.7, "accuracy": 0.8, "mse": nan, "mae": nan}
    modes = ["per patch", "merge patches", "merge patches - post-processing", "as 3D stack - post-processing"]
    pooled = {**row, "iou_per_class": [0.1, 0.2]}
    print_summary({m: {"per_image_mean": row, "pooled": None if m == "per patch" else pooled} for m in modes})
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Test")]
    assert len(lines) == 1 + len(modes)
    # Each column ends at the same place on every row: the header's and the values' right edges line up.
    header = lines[0]
    for title in ("Foreground IoU", "(pooled)", "mean IoU", "Dice", "accuracy"):
        end = header.index(title) + len(title)
        assert all(line[end - 1] != " " and (len(line) == end or line[end] == " ") for line in lines), title
    assert {line.index("0.5000") for line in lines[1:]} == {header.index("Foreground IoU") + len("Foreground IoU") - 6}


def _before_sinks(image, fn, patch, overlap, batch_size):
    """predict_windows as it was before sinks (frozen copy), the oracle for bit-for-bit equality."""
    spatial = tuple(image.shape[:-1])
    if any(s < p for s, p in zip(spatial, patch)):
        pad = [(0, max(0, p - s)) for s, p in zip(spatial, patch)]
        mode = "reflect" if all(s > pw for s, (_, pw) in zip(spatial, pad)) else "edge"
        out = _before_sinks(np.pad(image, pad + [(0, 0)], mode=mode), fn, patch, overlap, batch_size)
        return out[(slice(None), *(slice(0, s) for s in spatial))]
    from segflow.data.patches import axis_starts

    starts = [axis_starts(s, p, ov) for s, p, ov in zip(spatial, patch, overlap)]
    w1 = [gaussian_1d(p) for p in patch]
    norms = []
    for s, p, st, w in zip(spatial, patch, starts, w1):
        acc = np.zeros(s)
        for a in st:
            acc[a : a + p] += w
        norms.append(acc)
    weight = torch.as_tensor(np.multiply.outer(*w1), dtype=torch.float32)
    corners = list(itertools.product(*starts))
    out = None
    for b in range(0, len(corners), batch_size):
        regions = [tuple(slice(a, a + p) for a, p in zip(c, patch)) for c in corners[b : b + batch_size]]
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.stack([image[r] for r in regions]), -1, 1), dtype=np.float32))
        y = (fn(x).float() * weight).numpy()
        out = np.zeros((y.shape[1], *spatial), dtype=np.float32) if out is None else out
        for r, yw in zip(regions, y):
            out[(slice(None), *r)] += yw
    rest = norms[1].astype(np.float32)
    for i, n0 in enumerate(norms[0]):
        out[:, i] /= np.float32(n0) * rest
    return out


@pytest.mark.parametrize("shape", [(70, 53, 2), (20, 45, 2)])
def test_array_sink_gives_the_same_bits_as_before(shape):
    image = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    fn = lambda x: torch.cat([x * 2 + 1, x.sum(1, keepdim=True)], 1)  # noqa: E731
    ours = predict_windows(image, fn, (32, 32), (0.5, 0.3), batch_size=3)
    assert ours.shape == (3, *shape[:-1])
    assert np.array_equal(ours, _before_sinks(image, fn, (32, 32), (0.5, 0.3), 3))
