"""The ``export`` command: a checkpoint to ONNX or TorchScript, checked against PyTorch with the format's own runtime."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segflow.errors import SegflowError
from segflow.export.base import Sample


def _sample(predictor, image: str | os.PathLike | None) -> tuple[Sample, str]:
    """``(the check's sample, what it is)``: ``image``'s centre, cut to a multiple of the network's size divisor (at
    most 512 a side), as read and normalised as the model was trained; without ``image``, noise twice the patch."""
    from segflow.export.base import example_input
    from segflow.io.images import read_image
    from segflow.models.networks import divisor

    cfg = predictor.cfg
    if image is None:
        x = example_input(cfg, scale=2).numpy()
        return Sample(x, x), f"normal noise of {tuple(x.shape[2:])} (twice the training patch)"
    raw = predictor.as_image(read_image(image, cfg.ndim, cfg.in_channels, expect=predictor.expects()), image)
    sizes = [min(n, 512) // d * d for n, d in zip(raw.shape[:-1], divisor(cfg))]
    if 0 in sizes:
        raise SegflowError(f"--image {image}: of shape {raw.shape[:-1]}, smaller than the network's size multiple {divisor(cfg)}; give a larger image")
    starts = [(n - s) // 2 for n, s in zip(raw.shape[:-1], sizes)]
    crop = np.asarray(raw[tuple(slice(a, a + s) for a, s in zip(starts, sizes))])
    x = predictor.normalizer(crop)  # the crop's own statistics: a package's preprocessing measures those it is given
    first = lambda a: np.ascontiguousarray(np.moveaxis(a, -1, 0)[None])  # noqa: E731  (channels last -> (1, C, ...))
    return Sample(first(crop), first(x).astype(np.float32)), f"{Path(image).name} ({tuple(sizes)} of its centre)"


def export_model(
    checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, image: str | os.PathLike | None = None,
    say: Callable[[str], None] = print, opset: int | None = None,
) -> tuple[Path, float]:  # fmt: skip
    """Write ``checkpoint``'s model as ``fmt`` to ``out`` (default: beside the checkpoint, the format's suffix), then
    run the file with its format's runtime and PyTorch on ``image`` (or noise); return ``(path, max |difference|)``."""
    import torch

    from segflow.export import get_exporter
    from segflow.export.base import activated, describe_normalization, example_input, metadata
    from segflow.export.onnx_format import OnnxExporter
    from segflow.inference.predictor import Predictor

    exporter = get_exporter(fmt)
    if opset is not None:
        if fmt != "onnx":
            raise SegflowError(f"--opset {opset}: only --format onnx has an opset; drop --opset")
        exporter = OnnxExporter(opset)
    predictor = Predictor.from_checkpoint(checkpoint)
    cfg = predictor.cfg
    target = Path(out) if out is not None else Path(checkpoint).with_suffix(exporter.suffix)
    module, meta = activated(predictor.net, cfg), metadata(cfg, predictor.normalizer)
    sample, what = _sample(predictor, image)
    exporter.write(module, example_input(cfg), target, meta, sample if image is not None else None)
    with torch.no_grad():
        expected = module(torch.from_numpy(sample.x)).numpy()
    difference = float(np.abs(exporter.run(target, sample) - expected).max())
    axes = meta["input_axes"].upper()
    say(f"Wrote {target} ({fmt}): input float32 {axes} with {meta['input_channels']} channel(s), the image "
        f"{describe_normalization(meta)}, spatial sizes multiples of {tuple(meta['spatial_multiple_of'])}; "
        f"output {axes} with {meta['output_channels']} channel(s), {meta['output']}")  # fmt: skip
    say(f"Checked: {fmt} against PyTorch on {what}: max |difference| {difference:.1e}")
    return target, difference


def package_image(cfg) -> Path:
    """The image MODEL.BMZ.EXPORT.ENABLE's package carries as its test input: the first test image, else the first
    training image; checked, with the package's other fields, before the run does any work."""
    from segflow.data.pairs import list_pairs
    from segflow.export.bioimageio_format import check_package_fields

    check_package_fields(cfg.MODEL.BMZ.EXPORT.model_dump(mode="json"))
    key, folder = ("DATA.TEST.PATH", cfg.DATA.TEST.PATH) if cfg.TEST.ENABLE and cfg.DATA.TEST.PATH else ("DATA.TRAIN.PATH", cfg.DATA.TRAIN.PATH)
    if not Path(folder).is_dir():
        raise SegflowError(f"MODEL.BMZ.EXPORT.ENABLE: the package's test input is the first image of {key}, but {folder} is not a folder "
                           "of images (TIFF, PNG); set MODEL.BMZ.EXPORT.ENABLE: false and run segflow export --format bioimageio --image IMAGE")  # fmt: skip
    return list_pairs(folder, None, "test")[0][0]


def export_after_run(cfg, job: str, run_folder: Path, checkpoint: str | os.PathLike) -> Path:
    """MODEL.BMZ.EXPORT.ENABLE: write the run's model as ``<PATHS.BMZ_EXPORT_PATH or run folder/BMZ_files>/<job>.zip``."""
    folder = Path(cfg.PATHS.BMZ_EXPORT_PATH) if cfg.PATHS.BMZ_EXPORT_PATH else run_folder / "BMZ_files"
    folder.mkdir(parents=True, exist_ok=True)
    return export_model(checkpoint, "bioimageio", folder / f"{job}.zip", package_image(cfg))[0]
