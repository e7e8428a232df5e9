"""segflow predict with a BioImage Model Zoo package that another tool made: bioimageio.core runs it with the
package's own preprocessing; segflow reads the image, pads it to a size the package takes and writes the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from segflow.errors import SegflowError
from segflow.inference.package_model import PackageModel, open_model
from segflow.inference.predictor import Predictor

CLASSES = 3


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.jit.ScriptModule]:
    """A spec 0.5 package as another tool writes one: TorchScript weights, per-image zero mean / unit variance as its
    preprocessing, input y and x of 16 + 8n pixels, a softmax over 3 classes; no segflow config inside."""
    from bioimageio.spec import ValidationContext, save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bmz

    folder = tmp_path_factory.mktemp("foreign")
    conv = torch.nn.Conv2d(1, CLASSES, 3, padding=1)
    with torch.no_grad():  # a 3x3 mean, scaled: dark pixels class 0, bright ones class 2, those between class 1
        conv.weight[:] = torch.tensor([-4.0, 0.0, 4.0]).view(CLASSES, 1, 1, 1) / 9
        conv.bias[:] = torch.tensor([0.0, 1.5, 0.0])
    net = torch.nn.Sequential(conv, torch.nn.Softmax(dim=1))
    x = np.random.default_rng(0).gamma(4, 30, (1, 1, 32, 40)).astype(np.float32)
    traced = torch.jit.trace(net.eval(), torch.from_numpy(x))
    traced.save(str(folder / "net.pt"))
    with torch.no_grad():
        np.save(folder / "out.npy", traced(torch.from_numpy((x - x.mean()) / (x.std() + 1e-6))).numpy())
    np.save(folder / "in.npy", x)
    (folder / "README.md").write_text("# A model of another tool\n")
    import imageio.v3 as iio

    iio.imwrite(folder / "cover.png", np.zeros((8, 8), np.uint8))
    space = lambda a: bmz.SpaceInputAxis(id=bmz.AxisId(a), size=bmz.ParameterizedSize(min=16, step=8))  # noqa: E731
    same = lambda a: bmz.SpaceOutputAxis(id=bmz.AxisId(a), size=bmz.SizeReference(tensor_id=bmz.TensorId("raw"), axis_id=bmz.AxisId(a)))  # noqa: E731
    zmuv = bmz.ZeroMeanUnitVarianceDescr(kwargs=bmz.ZeroMeanUnitVarianceKwargs(axes=[bmz.AxisId("y"), bmz.AxisId("x")], eps=1e-6))
    names = lambda prefix, n: [bmz.Identifier(f"{prefix}{i}") for i in range(n)]  # noqa: E731
    descr = bmz.ModelDescr(
        name="another tool model", description="made elsewhere", authors=[bmz.Author(name="Someone")], license=bmz.LicenseId("MIT"),
        cite=[bmz.CiteEntry(text="x", doi=bmz.Doi("10.1000/xyz"))], documentation=bmz.FileDescr(source=folder / "README.md"),
        covers=[bmz.FileDescr(source=folder / "cover.png")],
        inputs=[bmz.InputTensorDescr(id=bmz.TensorId("raw"), axes=[bmz.BatchAxis(), bmz.ChannelAxis(channel_names=names("c", 1)), space("y"), space("x")],
                                     test_tensor=bmz.FileDescr(source=folder / "in.npy"), preprocessing=[zmuv])],
        outputs=[bmz.OutputTensorDescr(id=bmz.TensorId("prob"), axes=[bmz.BatchAxis(), bmz.ChannelAxis(channel_names=names("k", CLASSES)), same("y"), same("x")],
                                       test_tensor=bmz.FileDescr(source=folder / "out.npy"))],
        weights=bmz.WeightsDescr(torchscript=bmz.TorchscriptWeightsDescr(source=folder / "net.pt", pytorch_version=bmz.Version("2.13"))),
    )  # fmt: skip
    with ValidationContext(perform_io_checks=False):
        return Path(save_bioimageio_package(descr, output_path=folder / "other.zip")), traced


def _expected(net: torch.jit.ScriptModule, image: np.ndarray) -> np.ndarray:
    """The package's output by hand: its preprocessing, then its network; channels last."""
    x = image.astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy((x - x.mean()) / (x.std() + 1e-6))[None, None]).numpy()[0]
    return np.moveaxis(y, 0, -1)


def test_segflow_predict_runs_another_tool_s_package(foreign, data2d, tmp_path, cli) -> None:
    image = data2d / "test" / "x" / "img_000.tif"  # 64x64: a size the package takes (16 + 8n)
    for args, out in (((), "labels.tif"), (("--probabilities",), "probs.tif")):
        code, _, err = cli("predict", foreign[0], image, tmp_path / out, "--gpu", "cpu", *args)
        assert code == 0, err
    expected = _expected(foreign[1], tifffile.imread(image))
    np.testing.assert_allclose(np.moveaxis(tifffile.imread(tmp_path / "probs.tif"), 0, -1), expected, atol=1e-5)  # ImageJ's CYX
    labels = tifffile.imread(tmp_path / "labels.tif")
    np.testing.assert_array_equal(labels, expected.argmax(-1))
    assert set(np.unique(labels)) == {0, 1, 2}


def test_an_image_of_another_size_is_padded_and_cropped_back(foreign) -> None:
    model = open_model(foreign[0])
    assert isinstance(model, PackageModel) and (model.cfg.ndim, model.cfg.in_channels) == (2, 1)
    image = np.random.default_rng(4).gamma(4, 30, (50, 61)).astype(np.uint16)
    probs = model.predict(image)
    assert probs.shape == (50, 61, CLASSES)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    # the padded pixels change the package's per-image statistics a little, not the result's layout
    assert np.abs(probs - _expected(foreign[1], image)).mean() < 0.05
    with pytest.raises(SegflowError, match="this model is 2D with 1 channel"):
        model.predict(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SegflowError, match="--tta: test-time augmentation is segflow's own"):
        model.predict(image, tta=True)


def test_segflow_s_own_packages_stay_checkpoints(package) -> None:
    assert isinstance(open_model(package[0]), Predictor)
