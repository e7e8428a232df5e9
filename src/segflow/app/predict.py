"""``segflow predict``: apply a trained checkpoint to new images, outside an experiment."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segflow.encodings import get_encoding
from segflow.errors import SegflowError
from segflow.inference.package_model import open_model
from segflow.io.formats import SUFFIXES
from segflow.io.images import check_output_suffix, list_images, read_image, write_output
from segflow.progress import each_image


def predict_images(
    model: str | Path,
    image: str | Path | None = None,
    output: str | Path | None = None,
    input_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    tta: bool = False,
    probabilities: bool = False,
    overlap: float | None = None,
    batch_size: int | None = None,
    gpu: str | None = None,
) -> list[Path]:
    """Predict one image or every image of a folder; return the written files.

    Outputs are class labels decoded as the model's encoding says (label image, or bitmask image), or
    with ``probabilities`` the float32 outputs (one channel for binary models, one per class or bit
    otherwise); regression models write their float32 values. A single OUTPUT is written in the format
    its suffix names: ``.tif``/``.tiff`` (ImageJ TIFF), ``.npy``, or for 2D labels ``.png`` (grayscale
    class ids); a folder's outputs are TIFFs named after the inputs. Every argument, input and output
    path is checked before the model is loaded, and nothing is written before every check has passed.
    Under torchrun or srun each process predicts its share of the images (every Nth, by rank) on its own
    GPU (by local rank) and returns what it wrote; no process group is needed.
    """
    import torch

    from segflow.runtime import launch_part, resolve_devices, torch_device

    if (image is None) == (input_dir is None):
        raise SegflowError("segflow predict: give either IMAGE or --input-dir DIR (with --output-dir DIR)")
    if input_dir is not None and output_dir is None:
        raise SegflowError("segflow predict: --input-dir needs --output-dir, where the predictions go")
    if image is None and output is not None:
        raise SegflowError(
            f"segflow predict: OUTPUT {output} goes with IMAGE; with --input-dir the outputs go to --output-dir"
        )
    if overlap is not None and not 0 <= overlap < 1:
        raise SegflowError(f"--overlap {overlap}: must be in [0, 1)")
    if batch_size is not None and batch_size <= 0:
        raise SegflowError(f"--batch-size {batch_size}: must be positive")
    jobs = _jobs(image, output, input_dir, output_dir)
    if output is not None:  # the default names and a folder's outputs are .tif, which holds anything
        check_output_suffix(output, labels=not probabilities)
    part, parts, local_rank = launch_part()
    if gpu is None and parts > 1 and torch.cuda.device_count() > 1:
        gpu = ",".join(map(str, range(torch.cuda.device_count())))  # under torchrun/srun: one GPU per process
    accelerator, devices = resolve_devices(gpu, "auto")
    predictor = open_model(model, torch_device(accelerator, devices, local_rank))
    cfg = predictor.cfg
    if output is not None:  # now the model's dimensionality, and whether it gives labels at all, are known
        check_output_suffix(output, labels=not probabilities and get_encoding(cfg).score_classes() > 0, ndim=cfg.ndim)
    mine = jobs[part::parts]  # under torchrun or srun each process predicts its share, and writes only that
    written = []
    for src, dst in each_image(mine, "predict image", lambda job: job[0].name) if len(jobs) > 1 else mine:
        raw = read_image(src, cfg.ndim, cfg.in_channels, expect=predictor.expects())
        probs = predictor.predict(
            raw,
            overlap=None if overlap is None else [overlap] * cfg.ndim,
            batch_size=batch_size,
            tta=tta,
            progress=len(jobs) == 1,
            source=src,
        )
        labels = None if probabilities else predictor.labels(probs)
        # Without labels (probabilities asked for, or a regression model) the float values are the output.
        write_output(dst, probs.astype(np.float32, copy=False) if labels is None else labels, cfg.ndim, reference=src)
        written.append(dst)
    where = jobs[0][1] if len(jobs) == 1 else Path(output_dir)
    share = f" (process {part + 1} of {parts}: {len(written)} of {len(jobs)})" if parts > 1 else ""
    print(f"Wrote {len(written)} prediction(s){share}: {where}")
    return written


def _jobs(
    image: str | Path | None, output: str | Path | None, input_dir: str | Path | None, output_dir: str | Path | None
) -> list[tuple[Path, Path]]:
    """(input, output) pairs, every input readable and every output writable."""
    if image is not None:
        src = Path(image)
        _check_input(src)
        dst = Path(output) if output else Path.cwd() / f"{src.stem}_pred.tif"
        option = "OUTPUT" if output else "the default OUTPUT"
        if dst.is_dir():
            raise SegflowError(f"{option} {dst} is a folder; give a file name such as {dst / (src.stem + '_pred.tif')}")
        _check_writable(dst.parent, option, dst)
        jobs = [(src, dst)]
    else:
        out = Path(output_dir)
        if out.exists() and not out.is_dir():
            raise SegflowError(f"--output-dir {out} is a file, not a folder; give a folder (it is created if missing)")
        _check_writable(out, "--output-dir", out)
        sources = list_images(input_dir, "--input-dir", advice="give a folder of images to --input-dir")
        for src in sources:
            _check_input(src)
        jobs = [(src, out / f"{src.stem}.tif") for src in sources]
        option = "--output-dir"
    _check_distinct(jobs, option)
    return jobs


def _check_input(src: Path) -> None:
    """An image file that exists, has a readable format and may be read by this user."""
    if src.is_dir():
        raise SegflowError(
            f"IMAGE {src} is a folder; give one image file, or predict a folder with --input-dir {src} --output-dir DIR"
        )
    if not src.is_file():
        raise SegflowError(f"{src}: no such image file")
    if src.suffix.lower() not in SUFFIXES:
        suffix = src.suffix.lower()
        raise SegflowError(f"{src}: unsupported file type '{suffix}'; segflow reads {', '.join(SUFFIXES)}")
    if not os.access(src, os.R_OK):
        raise SegflowError(f"{src}: permission denied; make it readable (chmod a+r) by your user")


def _check_writable(folder: Path, option: str, named: Path) -> None:
    """``folder`` exists or can be made: its nearest existing ancestor is a folder this user may write in."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SegflowError(f"{option} {named}: {existing} is a file, not a folder; choose a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SegflowError(
            f"{option} {named}: permission denied in {existing}; choose {option} in a folder you can write to"
        )


def _check_distinct(jobs: list[tuple[Path, Path]], option: str) -> None:
    """No output may replace an input, and no two inputs may write the same output (a.tif and a.png)."""
    inputs = {src.resolve(): src for src, _ in jobs}
    seen: dict[Path, Path] = {}
    for src, dst in jobs:
        target = dst.resolve()
        if target in inputs:
            raise SegflowError(f"{option} {dst} is the input image {inputs[target]}; write the prediction elsewhere")
        if target in seen:
            raise SegflowError(f"{seen[target].name} and {src.name} would both be written to {dst}; rename one of them")
        seen[target] = src
