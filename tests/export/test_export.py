"""segflow export: ONNX (onnxruntime) and TorchScript (without segflow) give PyTorch's probabilities, at sizes other
than the one exported, in 2D and 3D, for each architecture, with the metadata that says how to feed them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from segflow.app.export import export_model
from segflow.export.base import Sample, activated
from segflow.inference.predictor import Predictor

TOLERANCE = 1e-4  # float32 sums in another order (measured: 6e-7 on a real 64x64 image)


def _untrained(tmp_path: Path, ndim: str, architecture: str, classes: int) -> Path:
    """An untrained model saved as segflow saves a checkpoint (export needs no training)."""
    from segflow.config.loader import build_config
    from segflow.training.module import SegModel

    patch = "(8, 16, 16, 1)" if ndim == "3D" else "(32, 32, 1)"
    tree = {"PROBLEM": {"NDIM": ndim}, "DATA": {"PATCH_SIZE": patch}, "TRAIN": {"ENABLE": False},
            "MODEL": {"ARCHITECTURE": architecture, "FEATURE_MAPS": [4, 8, 16], "N_CLASSES": classes}}  # fmt: skip
    torch.manual_seed(0)
    model = SegModel(build_config(tree)[0].model_dump(mode="json"))
    path = tmp_path / f"{architecture}{ndim}.pth"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def _expected(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    predictor = Predictor.from_checkpoint(checkpoint)
    with torch.no_grad():
        return activated(predictor.net, predictor.cfg)(torch.from_numpy(x)).numpy()


def test_onnx_of_a_trained_model_gives_pytorch_s_probabilities_on_a_real_image(checkpoint, data2d, tmp_path, cli) -> None:
    import onnx
    import onnxruntime

    image = data2d / "test" / "x" / "img_000.tif"
    code, out, err = cli("export", checkpoint, "--format", "onnx", "--out", tmp_path / "m.onnx", "--image", image)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"Wrote {tmp_path / 'm.onnx'} (onnx): input float32 BCYX with 1 channel(s), the image divided by its type's range")
    difference = float(lines[1].rsplit(" ", 1)[1])
    assert lines[1].startswith("Checked: onnx against PyTorch on img_000.tif ((64, 64) of its centre): max |difference| ")
    assert difference < TOLERANCE
    meta = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}["segflow"])
    assert meta["input_axes"] == "bcyx" and meta["normalization"]["TYPE"] == "div" and meta["spatial_multiple_of"] == [4, 4]
    # Another batch and size than exported: the axes are dynamic. The real image, normalised as in training.
    predictor = Predictor.from_checkpoint(checkpoint)
    raw = tifffile.imread(image)[:48, :56]
    x = np.stack([predictor.normalizer(raw[..., None])] * 2).transpose(0, 3, 1, 2).copy()
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    assert got.shape == (2, 1, 48, 56)
    np.testing.assert_allclose(got, _expected(checkpoint, x), atol=TOLERANCE)
    assert got.min() > 0 and got.max() < 1  # sigmoid probabilities


def test_torchscript_runs_without_segflow(checkpoint, tmp_path) -> None:
    path, difference = export_model(checkpoint, "torchscript", tmp_path / "m.pt", say=lambda s: None)
    assert difference < TOLERANCE
    x = np.random.default_rng(1).standard_normal((1, 1, 40, 72), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys; sys.modules['segflow'] = None\n"  # any import of segflow fails
              "import json, numpy as np, torch\n"
              f"files = {{'segflow.json': ''}}; m = torch.jit.load({str(path)!r}, _extra_files=files)\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))).detach().numpy())\n"
              "print(json.loads(files['segflow.json'])['output_channels'])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _expected(checkpoint, x), atol=TOLERANCE)


@pytest.mark.parametrize(("ndim", "architecture", "classes"), [("3D", "unet", 3), ("2D", "resunet", 4), ("3D", "attention_unet", 2), ("2D", "segresnet", 3)])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_format_holds_each_network_in_2d_and_3d(tmp_path, ndim, architecture, classes, fmt) -> None:
    checkpoint = _untrained(tmp_path, ndim, architecture, classes)
    path, difference = export_model(checkpoint, fmt, say=lambda s: None)
    assert path == checkpoint.with_suffix(".onnx" if fmt == "onnx" else ".pt") and difference < TOLERANCE
    shape = (1, 1, 16, 24, 40) if ndim == "3D" else (3, 1, 40, 24)
    x = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    from segflow.export import get_exporter

    got = get_exporter(fmt).run(path, Sample(x, x))
    assert got.shape == (shape[0], 1 if classes == 2 else classes, *shape[2:])
    np.testing.assert_allclose(got, _expected(checkpoint, x), atol=TOLERANCE)
    if classes > 2:
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)  # softmax over the classes


def test_a_bioimage_model_zoo_package_passes_bioimageio_core_s_test(package) -> None:
    """The trained model as a spec 0.5 package: its three weight formats, its preprocessing (scale_linear 1/255 for
    these uint8 images) and its test tensors pass bioimageio.core's own model test, offline."""
    import zipfile

    import imageio.v3 as iio
    import yaml
    from bioimageio.core import test_model

    path, difference, lines = package
    assert difference < TOLERANCE and lines[1].startswith("Checked: bioimageio against PyTorch on img_000.tif ((64, 64) of its centre)")
    with zipfile.ZipFile(path) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        cover = iio.imread(z.read("cover.png"))
    assert rdf["format_version"].startswith("0.5") and set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    steps = rdf["inputs"][0]["preprocessing"]
    assert [s["id"] for s in steps][:2] == ["ensure_dtype", "scale_linear"] and steps[1]["kwargs"]["gain"] == pytest.approx(1 / 255)
    assert cover.shape == (64, 128)  # the image beside its probabilities
    summary = test_model(path)
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]


CLIP = {"TYPE": "zero_mean_unit_variance", "PERC_CLIP": True, "PERC_LOWER": 1, "PERC_UPPER": 99}


@pytest.mark.parametrize(
    ("normalization", "tolerance"),
    [({"TYPE": "zero_mean_unit_variance"}, 1e-3), ({"TYPE": "scale_range"}, 1e-3), ({"TYPE": "custom", "CUSTOM_MEAN": 300.0, "CUSTOM_STD": 80.0}, 1e-3),
     (CLIP, 0.05)],
)  # fmt: skip
def test_each_normalisation_becomes_the_package_s_preprocessing(tmp_path, normalization, tolerance) -> None:
    """The package's own prediction of a raw uint16 image (bioimageio.core: its preprocessing, then the network)
    against PyTorch on segflow's normalisation of it: within 1e-3 (the package's eps of 1e-6 added to std and range).
    PERC_CLIP's percentiles are the package's clip, which takes them by the inverted CDF where segflow interpolates
    (numpy's 'linear'): on this 72x64 image the clip bounds differ by up to a neighbouring value (measured 0.016)."""
    from segflow.config.loader import build_config
    from segflow.training.module import SegModel

    tree = {"PROBLEM": {"NDIM": "2D"}, "DATA": {"PATCH_SIZE": "(32, 32, 1)", "NORMALIZATION": normalization},
            "TRAIN": {"ENABLE": False}, "MODEL": {"FEATURE_MAPS": [4, 8, 16]}}  # fmt: skip
    torch.manual_seed(0)
    model = SegModel(build_config(tree)[0].model_dump(mode="json"), normalizer={"mean": 300.0, "std": 80.0})
    checkpoint = tmp_path / "m.pth"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, checkpoint)
    image = tmp_path / "raw.tif"
    tifffile.imwrite(image, np.random.default_rng(3).gamma(4, 80, (72, 64)).astype(np.uint16))
    _, difference = export_model(checkpoint, "bioimageio", tmp_path / "m.zip", image, say=lambda s: None)
    assert difference < tolerance


def test_a_package_segflow_wrote_predicts_and_fine_tunes_as_its_checkpoint(package, checkpoint, data2d, tmp_path, cli) -> None:
    """The package read back: ``segflow predict`` gives the checkpoint's labels exactly, and a run starts from its
    weights (PATHS.CHECKPOINT_FILE with MODEL.LOAD_CHECKPOINT)."""
    from conftest import tiny_config, write_yaml

    image, package = data2d / "test" / "x" / "img_001.tif", package[0]
    for model, out in ((package, "from_package.tif"), (checkpoint, "from_checkpoint.tif")):
        code, _, err = cli("predict", model, image, tmp_path / out, "--gpu", "cpu")
        assert code == 0, err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "from_package.tif"), tifffile.imread(tmp_path / "from_checkpoint.tif"))
    tree = tiny_config(data2d, MODEL={"LOAD_CHECKPOINT": True}, PATHS={"CHECKPOINT_FILE": str(package)},
                       TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False})  # fmt: skip
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path / "res", "--name", "ft", "--gpu", "cpu")
    assert code == 0, err
    assert f"Starting from the weights in {package}" in out


def test_a_run_with_biapy_s_bmz_export_keys_ends_with_the_package(data2d, tmp_path, cli) -> None:
    """MODEL.BMZ.EXPORT.ENABLE (BiaPy's keys): after the test phase the run writes <run>/BMZ_files/<job>.zip, its name,
    authors, license, tags, citations and version from the config, its test input the first training image (no test phase)."""
    import zipfile

    import yaml
    from conftest import tiny_config, write_yaml

    export = {"ENABLE": True, "MODEL_NAME": "Tiny blobs", "DESCRIPTION": "Blobs on noise", "LICENSE": "MIT", "MODEL_VERSION": "1.2.0",
              "AUTHORS": [{"name": "Ada", "github_user": "ada"}], "TAGS": ["fluorescence"], "CITE": [{"text": "data", "doi": "10.1000/xyz"}],
              "DATASET_INFO": [{"name": "blobs", "image_modality": "synthetic"}]}  # fmt: skip
    tree = tiny_config(data2d, TRAIN={"EPOCHS": 1}, MODEL={"BMZ": {"EXPORT": export}}, TEST={"ENABLE": False})
    code, out, err = cli("run", "--config", write_yaml(tmp_path / "c.yaml", tree), "--result_dir", tmp_path, "--name", "b", "--gpu", "cpu")
    assert code == 0, err
    package = tmp_path / "b" / "results" / "b_1" / "BMZ_files" / "b_1.zip"
    assert f"Wrote {package} (bioimageio)" in out and out.index(f"Wrote {package}") < out.index("FINISHED JOB b_1")
    assert "against PyTorch on img_000.tif" in out  # the first training image
    with zipfile.ZipFile(package) as z:
        rdf, readme = yaml.safe_load(z.read("rdf.yaml")), z.read("README.md").decode()
    assert (rdf["name"], rdf["description"], rdf["license"], rdf["version"]) == ("Tiny blobs", "Blobs on noise", "MIT", "1.2.0")
    assert rdf["authors"] == [{"name": "Ada", "github_user": "ada"}] and rdf["tags"][-1] == "fluorescence"
    assert [c["text"] for c in rdf["cite"]] == ["data", "segflow: semantic segmentation of 2D and 3D images"] and "training data: name blobs, image_modality synthetic" in readme
    code, _, err = cli("predict", package, data2d / "test" / "x" / "img_000.tif", tmp_path / "p.tif", "--gpu", "cpu")
    assert code == 0, err
