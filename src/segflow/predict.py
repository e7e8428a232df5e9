"""``segflow predict``: apply a trained checkpoint to new images, outside an experiment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from segflow.errors import SegflowError
from segflow.images import list_images, read_image, write_palette_png, write_tiff
from segflow.inference import Predictor


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

    Outputs are TIFFs named after the inputs: class labels decoded as the model's encoding says
    (label image, or bitmask image), or with ``probabilities`` the float32 outputs (one channel for
    binary models, one per class or bit otherwise); regression models write their float32 values.
    A single output named ``.png`` is written as a palette PNG with VOC's colours (2D labels).
    """
    from segflow.training import resolve_devices

    if (image is None) == (input_dir is None):
        raise SegflowError("segflow predict: give either IMAGE or --input-dir DIR (with --output-dir DIR)")
    if input_dir is not None and output_dir is None:
        raise SegflowError("segflow predict: --input-dir needs --output-dir, where the predictions go")
    if overlap is not None and not 0 <= overlap < 1:
        raise SegflowError(f"--overlap {overlap}: must be in [0, 1)")
    if batch_size is not None and batch_size <= 0:
        raise SegflowError(f"--batch-size {batch_size}: must be positive")
    accelerator, devices = resolve_devices(gpu, "auto")
    predictor = Predictor.from_checkpoint(model, f"cuda:{devices[0]}" if accelerator == "gpu" else "cpu")
    cfg = predictor.cfg
    if image is not None:
        src = Path(image)
        jobs = [(src, Path(output) if output else Path.cwd() / f"{src.stem}_pred.tif")]
    else:
        jobs = [(p, Path(output_dir) / f"{p.stem}.tif") for p in list_images(input_dir, "--input-dir")]
    written = []
    for src, dst in tqdm(jobs, desc="Predicting", unit="img", disable=len(jobs) == 1):
        if not src.is_file():
            raise SegflowError(f"{src}: no such image file")
        raw = read_image(src, cfg.ndim, cfg.in_channels)
        probs = predictor.predict(
            raw,
            overlap=None if overlap is None else [overlap] * cfg.ndim,
            batch_size=batch_size,
            tta=tta,
            progress=len(jobs) == 1,
        )
        labels = None if probabilities else predictor.labels(probs)
        if labels is None:  # probabilities asked for, or a regression model: its values are the output
            write_tiff(dst, probs.astype(np.float32, copy=False), cfg.ndim, reference=src)
        elif dst.suffix.lower() == ".png" and cfg.ndim == 2 and labels.dtype == np.uint8:
            write_palette_png(dst, labels)
        else:
            write_tiff(dst, labels, cfg.ndim, reference=src)
        written.append(dst)
    print(f"Wrote {len(written)} prediction(s): {written[0] if len(written) == 1 else Path(output_dir)}")
    return written
