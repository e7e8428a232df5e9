"""BioImage Model Zoo: a spec 0.5 package (zip) for Fiji/deepImageJ, napari and bioimageio.core, with the weights
as pytorch_state_dict, torchscript and onnx, segflow's normalisation as the package's preprocessing, a real image as
test input with its output, a cover and documentation. A normalisation the package cannot describe is refused."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from segflow.errors import SegflowError
from segflow.export.base import Activated, Sample
from segflow.export.onnx_format import OPSET, OnnxExporter
from segflow.export.torchscript_format import TorchScriptExporter
from segflow.io.atomic import atomic_write


def preprocessing(meta: dict, dtype: np.dtype) -> list:
    """The package's preprocessing that repeats segflow's normalisation of an image of ``dtype``: statistics over
    the whole image and every channel together, as segflow measures them. A 'div' model's scale is that of
    ``dtype`` (the test image's: uint8 / 255, uint16 / 65535), so its users must give images of that type."""
    from bioimageio.spec.model import v0_5 as bmz

    n = meta["normalization"]
    per_image = [bmz.AxisId("channel"), *(bmz.AxisId(a) for a in meta["input_axes"][2:])]  # each image of a batch alone
    steps: list = [bmz.EnsureDtypeDescr(kwargs=bmz.EnsureDtypeKwargs(dtype="float32"))]
    if n["PERC_CLIP"]:
        clip = bmz.ClipKwargs(min_percentile=n["PERC_LOWER"], max_percentile=n["PERC_UPPER"], axes=per_image)
        steps.append(bmz.ClipDescr(kwargs=clip))
    kind = n["TYPE"]
    if kind == "div" and np.issubdtype(dtype, np.integer):
        if np.dtype(dtype).itemsize > 2:
            raise SegflowError(f"--image: of type {np.dtype(dtype)}; a BioImage Model Zoo package of a 'div' model takes uint8 or uint16 images")
        steps.append(bmz.ScaleLinearDescr(kwargs=bmz.ScaleLinearKwargs(gain=1.0 / float(np.iinfo(dtype).max))))
    elif kind == "scale_range":
        steps.append(bmz.ScaleRangeDescr(kwargs=bmz.ScaleRangeKwargs(min_percentile=0.0, max_percentile=100.0, axes=per_image)))
    elif kind == "zero_mean_unit_variance":
        steps.append(bmz.ZeroMeanUnitVarianceDescr(kwargs=bmz.ZeroMeanUnitVarianceKwargs(axes=per_image)))
    elif kind == "custom":
        steps.append(bmz.FixedZeroMeanUnitVarianceDescr(kwargs=bmz.FixedZeroMeanUnitVarianceKwargs(mean=n["mean"], std=n["std"])))
    return steps


def _axes(meta: dict, output: bool) -> list:
    """The tensor's axes: batch, channel, then y, x (z, y, x) of any multiple of the network's divisor; the output's
    spatial sizes are the input's."""
    from bioimageio.spec.model import v0_5 as bmz

    channels = meta["output_channels" if output else "input_channels"]
    names = [bmz.Identifier(f"{'class' if output else 'channel'}{i}") for i in range(channels)]
    spatial = []
    for axis, step in zip(meta["input_axes"][2:], meta["spatial_multiple_of"]):
        if output:
            size = bmz.SizeReference(tensor_id=bmz.TensorId("input"), axis_id=bmz.AxisId(axis))
            spatial.append(bmz.SpaceOutputAxis(id=bmz.AxisId(axis), size=size))
        else:
            spatial.append(bmz.SpaceInputAxis(id=bmz.AxisId(axis), size=bmz.ParameterizedSize(min=step, step=step)))
    return [bmz.BatchAxis(), bmz.ChannelAxis(channel_names=names), *spatial]


def check_package_fields(bmz_cfg: dict) -> None:
    """Refuse, before any work, MODEL.BMZ.EXPORT values the package cannot hold: a license the Zoo does not take, a
    documentation file that is not there."""
    from bioimageio.spec.model import v0_5 as bmz
    from pydantic import ValidationError

    for key, kind, example in (("LICENSE", bmz.LicenseId, "an SPDX id such as CC-BY-4.0 or MIT"), ("MODEL_VERSION", bmz.Version, "e.g. 0.1.0")):
        try:
            kind(bmz_cfg[key])
        except (ValidationError, ValueError):
            raise SegflowError(f"MODEL.BMZ.EXPORT.{key} {bmz_cfg[key]!r}: not what the BioImage Model Zoo takes; give {example}") from None
    doc = bmz_cfg["DOCUMENTATION"]
    if doc and not Path(doc).is_file():
        raise SegflowError(f"MODEL.BMZ.EXPORT.DOCUMENTATION {doc}: no such file; give a Markdown file, or '' for segflow's own")


def _description(meta: dict, steps: list, folder: Path):
    """The package's ``ModelDescr`` (spec 0.5), its files in ``folder``, its name, authors, license, tags,
    citations and version from MODEL.BMZ.EXPORT (``meta["bmz"]``)."""
    from bioimageio.spec.model import v0_5 as bmz

    user = _reused(meta, folder) or meta["bmz"]
    check_package_fields(user)
    version = bmz.Version(torch.__version__.split("+")[0])
    architecture = bmz.ArchitectureFromLibraryDescr(import_from="segflow.export.base", callable=bmz.Identifier("network"),
                                                    kwargs={"config": meta["config"]})  # fmt: skip
    ndim = len(meta["input_axes"]) - 2
    file = lambda name: bmz.FileDescr(source=folder / name)  # noqa: E731
    ours = bmz.CiteEntry(text=_OWN_CITE, url="https://github.com/segflow/segflow")
    cites = [bmz.CiteEntry(text=c["text"], doi=c["doi"] or None, url=c["url"] or None) for c in user["CITE"]]
    authors = [bmz.Author(**{k: v for k, v in a.items() if v}) for a in user["AUTHORS"]] or [bmz.Author(name="segflow user")]
    return bmz.ModelDescr(
        config=bmz.Config(segflow={"config": meta["config"], "normalizer": meta["normalizer"]}),  # read back by checkpoint.py
        name=user["MODEL_NAME"] or f"segflow {meta['architecture']} {ndim}D",
        description=user["DESCRIPTION"] or f"{ndim}D semantic segmentation into {max(2, meta['output_channels'])} classes, trained with segflow",
        version=bmz.Version(user["MODEL_VERSION"]),
        authors=authors,
        cite=[*cites, ours],
        license=bmz.LicenseId(user["LICENSE"]),
        documentation=bmz.FileDescr(source=Path(user["DOCUMENTATION"])) if user["DOCUMENTATION"] else file("README.md"),
        covers=[file("cover.png")],
        tags=["segflow", "semantic-segmentation", f"{ndim}d", *user["TAGS"]],
        inputs=[bmz.InputTensorDescr(id=bmz.TensorId("input"), axes=_axes(meta, False), test_tensor=file("test_input.npy"), preprocessing=steps)],
        outputs=[bmz.OutputTensorDescr(id=bmz.TensorId("output"), axes=_axes(meta, True), test_tensor=file("test_output.npy"))],
        weights=bmz.WeightsDescr(
            pytorch_state_dict=bmz.PytorchStateDictWeightsDescr(source=folder / "weights.pt", architecture=architecture, pytorch_version=version),
            torchscript=bmz.TorchscriptWeightsDescr(source=folder / "model.pt", pytorch_version=version),
            onnx=bmz.OnnxWeightsDescr(source=folder / "model.onnx", opset_version=OPSET),
        ),
    )


# The tags and citation every segflow package carries: not the user's, so not carried over by REUSE_BMZ_CONFIG.
_OWN_CITE = "segflow: semantic segmentation of 2D and 3D images"


def _reused(meta: dict, folder: Path) -> dict | None:
    """MODEL.BMZ.EXPORT.REUSE_BMZ_CONFIG with MODEL.SOURCE bmz: the source package's name, description, authors,
    license, tags, citations, documentation and version, as MODEL.BMZ.EXPORT values; None when not asked."""
    from segflow.config.bmz import read_package

    model = meta["config"]["MODEL"]
    if model["SOURCE"] != "bmz" or not meta["bmz"]["REUSE_BMZ_CONFIG"]:
        return None
    source = Path(model["BMZ"]["SOURCE_MODEL_ID"])
    if not source.exists():
        raise SegflowError(f"MODEL.BMZ.EXPORT.REUSE_BMZ_CONFIG: the source package {source} is gone; put it back, or set the MODEL.BMZ.EXPORT keys")
    rdf, read = read_package(source)
    ndim = len(meta["input_axes"]) - 2
    documentation = read(str(rdf.get("documentation", ""))) or b""
    (folder / "source_README.md").write_bytes(documentation)
    return {**meta["bmz"], "MODEL_NAME": rdf["name"], "DESCRIPTION": rdf["description"], "LICENSE": rdf["license"],
            "MODEL_VERSION": str(rdf.get("version") or meta["bmz"]["MODEL_VERSION"]), "DOCUMENTATION": str(folder / "source_README.md"),
            "AUTHORS": [{"affiliation": "", "github_user": "", "orcid": "", "email": "", **a} for a in rdf.get("authors", [])],
            "TAGS": [t for t in rdf.get("tags", []) if t not in ("segflow", "semantic-segmentation", f"{ndim}d")],
            "CITE": [{"doi": "", "url": "", **c} for c in rdf.get("cite", []) if c.get("text") != _OWN_CITE]}  # fmt: skip


def _documentation(meta: dict) -> str:
    n = {k: v for k, v in meta["normalization"].items() if v is not None}
    data = [d for d in meta["bmz"]["DATASET_INFO"] if any(d.values())]
    trained_on = "".join(f"- training data: {', '.join(f'{k} {v}' for k, v in d.items() if v)}\n" for d in data)
    return (
        f"# {meta['bmz']['MODEL_NAME'] or 'segflow ' + meta['architecture']}\n\nTrained with segflow {meta['segflow_version']}.\n\n"
        f"- input: axes {meta['input_axes']}, {meta['input_channels']} channel(s), spatial sizes multiples of {meta['spatial_multiple_of']}\n"
        f"- normalisation (the package's preprocessing): {n}\n- output: {meta['output_channels']} channel(s), {meta['output']}\n{trained_on}"
    )


def _cover(raw: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """The test image beside its last channel's probabilities (the middle slice in 3D), one PNG."""
    import imageio.v3 as iio

    image, prediction = raw[0, 0].astype(np.float64), probabilities[0, -1]
    while image.ndim > 2:
        image, prediction = image[image.shape[0] // 2], prediction[prediction.shape[0] // 2]
    lo, hi = float(image.min()), float(image.max())
    left = ((image - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    iio.imwrite(path, np.concatenate([left, (prediction * 255).astype(np.uint8)], axis=1))


class BioimageioExporter:
    name, suffix = "bioimageio", ".zip"

    def write(self, module: Activated, example: torch.Tensor, out: Path, meta: dict, sample: Sample | None = None) -> None:
        """``sample``: the package's test input (the raw image) and cover."""
        from bioimageio.spec import ValidationContext, save_bioimageio_package

        if sample is None:
            raise SegflowError("--format bioimageio needs --image: a real image is the package's test input and cover")
        steps = preprocessing(meta, sample.raw.dtype)
        with tempfile.TemporaryDirectory() as work:
            folder = Path(work)
            with torch.no_grad():
                expected = module(torch.from_numpy(sample.x)).numpy()
            np.save(folder / "test_input.npy", sample.raw.astype(np.float32))
            np.save(folder / "test_output.npy", expected)
            OnnxExporter().write(module, example, folder / "model.onnx", meta)
            TorchScriptExporter().write(module, example, folder / "model.pt", meta)
            torch.save(module.state_dict(), folder / "weights.pt")
            (folder / "README.md").write_text(_documentation(meta))
            _cover(sample.raw, expected, folder / "cover.png")
            with ValidationContext(perform_io_checks=False):  # no network at run time: GitHub users and DOIs unverified
                descr = _description(meta, steps, folder)
                atomic_write(out, lambda tmp: shutil.move(save_bioimageio_package(descr, output_path=folder / "package.zip"), tmp))

    def run(self, path: Path, sample: Sample) -> np.ndarray:
        """The package's own prediction of the raw image: its preprocessing, then its first weights."""
        from bioimageio.core import load_model_description, predict

        result = predict(model=load_model_description(path, perform_io_checks=False), inputs=sample.raw.astype(np.float32))
        return next(iter(result.members.values())).data.to_numpy()
