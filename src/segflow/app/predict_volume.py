"""``segflow predict MODEL in.zarr out.zarr``: a Zarr or HDF5 volume of any size predicted chunk by chunk into Zarr."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import SegflowError


def is_volume(image: str | Path | None, output: str | Path | None) -> bool:
    """Whether ``segflow predict`` reads a container (Zarr, HDF5) or writes a Zarr store: the chunked path."""
    from segflow.data.sources import Hdf5Source, ZarrSource

    containers = ZarrSource.suffixes + Hdf5Source.suffixes
    return any(p is not None and Path(p).suffix.lower() in containers for p in (image, output))


def _chunk(text: str | None, patch: tuple[int, ...], spatial: tuple[int, ...]) -> tuple[int, ...]:
    from segflow.inference.chunked import default_chunk

    if not text:
        return default_chunk(patch, spatial)
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SegflowError(f"--chunk {text}: give sizes separated by commas, one per spatial axis (e.g. 256,256,256)") from None


def _source(path: Path) -> Any:
    """The source class whose files ``path`` is (Zarr, HDF5, TIFF), to read it lazily; a TIFF is memory-mapped or
    read tile by tile (tifffile's Zarr view), in the axes it records."""
    from segflow.data.sources import Hdf5Source, TiffSource, ZarrSource

    kind = path.suffix.lower()
    found = next((cls for cls in (ZarrSource, Hdf5Source, TiffSource) if kind in cls.suffixes), None)
    if found is None:
        raise SegflowError(f"IMAGE {path}: a Zarr output is predicted from a Zarr store, an HDF5 file or a TIFF (.zarr, .h5, .hdf5, .tif)")
    return found()


def _truth(cfg: Any, encoding: Any, gt: str | Path, gt_array: str | None, image: Any, src: Path) -> Any:
    """The ground-truth mask ``gt`` read lazily as ``(*spatial)``, checked against the model and the image."""
    if encoding.bitwise or encoding.score_classes() == 0:
        raise SegflowError(f"--gt {gt}: IoU by chunks needs a model that gives one class per pixel, not {encoding.name}")
    if not Path(gt).exists():
        raise SegflowError(f"--gt {gt}: no such Zarr store, HDF5 file or TIFF")
    truth = _source(Path(gt)).lazy_array(cfg, Path(gt), gt_array, "TZCYX", "--gt", False)
    if tuple(truth.shape) != tuple(image.shape[:-1]):
        raise SegflowError(f"--gt {gt}: shape {tuple(truth.shape)} but the image {src} has {tuple(image.shape[:-1])}; give its mask")
    return truth


def _report_iou(output: Path, chunks: int) -> None:
    """The whole volume's IoU per class (evaluation's scores of the chunks' confusion matrices summed), printed and
    kept in the output's attributes."""
    import zarr

    from segflow.evaluation.metrics import scores
    from segflow.inference.chunked import summed_confusion

    ious = np.asarray(scores(summed_confusion(str(output)))["iou_per_class"])
    group = zarr.open_group(str(output), mode="r+")
    group.attrs["segflow"] = {**group.attrs["segflow"], "iou_per_class": [None if np.isnan(v) else float(v) for v in ious]}
    shown = ", ".join(f"{k}: {v:.4f}" for k, v in enumerate(ious) if not np.isnan(v))
    print(f"IoU per class over the whole volume ({chunks} chunks' confusion matrices summed): {shown}; mean {np.nanmean(ious):.4f}")


def predict_volume_cli(
    model: str | Path, image: str | Path, output: str | Path | None, chunk: str | None = None, workers: int | None = None,
    scheduler: str | None = None, overwrite: bool = False, tta: bool = False, overlap: float | None = None,
    batch_size: int | None = None, gpu: str | None = None, axes: str = "TZCYX", array: str | None = None,
    dtype: str = "float16", gt: str | Path | None = None, gt_array: str | None = None,
) -> Path:  # fmt: skip
    """Predict the array ``array`` (None: its one array, or level 0 of an OME-Zarr image) of the Zarr store, HDF5
    file or TIFF ``image``, stored in ``axes`` (BiaPy's letters), into the Zarr group ``output`` (see
    ``inference.chunked``); ``chunk`` is the work's and the output's chunk, ``"z,y,x"``. With ``gt`` (a mask of
    class ids, stored as the image is, ``gt_array`` inside it) each chunk's confusion matrix is kept and the volume's
    IoU per class said at the end, exact whatever the volume's size."""
    from segflow.encodings import get_encoding
    from segflow.evaluation.metrics import confusion
    from segflow.inference.chunked import Job, cached_predictor, cores, default_workers, predict_volume
    from segflow.runtime import resolve_devices, torch_device

    src = Path(image)
    source = _source(src)
    if not src.exists():
        raise SegflowError(f"{src}: no such Zarr store, HDF5 file or TIFF")
    dst = Path(output) if output else Path.cwd() / f"{src.stem}_pred.zarr"
    if dst.suffix.lower() != ".zarr":
        raise SegflowError(f"OUTPUT {dst}: a volume is predicted into a Zarr store; name it with .zarr")
    if dst.resolve() == src.resolve():
        raise SegflowError(f"OUTPUT {dst} is the input; write the prediction elsewhere")
    if workers is not None and workers < 1:
        raise SegflowError(f"--workers {workers}: must be at least 1")
    if dtype not in ("float16", "float32"):
        raise SegflowError(f"--dtype {dtype}: choose float16 or float32")
    device = str(torch_device(*resolve_devices(gpu, "auto")))
    predictor = cached_predictor(str(model), device)  # the one the chunk tasks of this process use
    cfg, encoding = predictor.cfg, get_encoding(predictor.cfg)
    lazy = source.lazy_array(cfg, src, array, axes, "--axes", True)
    truth = None if gt is None else _truth(cfg, encoding, gt, gt_array, lazy, src)
    predictor.as_image(lazy, src, finite=False)
    spatial = tuple(lazy.shape[:-1])
    n = cfg.MODEL.N_CLASSES
    job = Job(
        checkpoint=str(model), image=lazy, output=str(dst), chunk=_chunk(chunk, cfg.spatial_patch, spatial),
        stats=predictor.normalizer.stats(lazy, str(src)), overlap=None if overlap is None else (overlap,) * cfg.ndim,
        batch_size=batch_size, tta=tta, dtype=dtype, labels=encoding.score_classes() > 0, device=device,
        truth=truth, n_classes=n, score=functools.partial(confusion, n_classes=n, ignore_id=cfg.PROBLEM.SEMANTIC_SEG.IGNORE_CLASS_ID),
    )  # fmt: skip
    workers = workers or default_workers(job.device)
    print(f"Predicting {src} {spatial} in chunks of {job.chunk} into {dst}" + (f" on {scheduler}" if scheduler else f" ({workers} worker thread(s))"))
    predict_volume(job, scheduler=scheduler, workers=workers, overwrite=overwrite)
    if truth is not None:
        _report_iou(dst, len(cores(spatial, job.chunk)))
    print(f"Wrote {dst}: probabilities" + (" and labels" if job.labels else "") + f" (open the labels in napari: napari {dst}/labels)")
    return dst
