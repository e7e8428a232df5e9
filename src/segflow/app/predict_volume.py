"""``segflow predict MODEL in.zarr out.zarr``: a Zarr, HDF5 or TIFF volume of any size predicted chunk by chunk
into Zarr, OME-Zarr or HDF5."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.errors import SegflowError


def is_volume(image: str | Path | None, output: str | Path | None, output_format: str | None = None) -> bool:
    """Whether ``segflow predict`` reads a container (Zarr, HDF5) or writes one: the chunked path."""
    from segflow.data.sources import Hdf5Source, ZarrSource

    containers = ZarrSource.suffixes + Hdf5Source.suffixes
    return output_format is not None or any(p is not None and Path(p).suffix.lower() in containers for p in (image, output))


def median_filters(texts: list[str]) -> list[tuple[str, int]]:
    """``--median-filter z:5`` (repeatable) as ``(axes, size)`` filters, as TEST.POST_PROCESSING.MEDIAN_FILTER gives them."""
    from segflow.evaluation.postprocess import CANONICAL

    out = []
    for text in texts:
        axes, _, size = text.partition(":")
        axes = CANONICAL.get(axes.lower(), axes.lower())
        if axes not in ("z", "yz", "xy", "zx") or not size.isdigit() or int(size) < 1:
            raise SegflowError(f"--median-filter {text}: give AXES:SIZE, AXES one of z, yz, xy, zx and SIZE a positive whole number (e.g. z:5)")
        out.append((axes, int(size)))
    return out


def report_iou(job: object, chunks: int, say: object = print) -> list[float]:
    """The whole volume's IoU per class (evaluation's scores of the chunks' confusion matrices summed), printed and
    kept in the output's attributes, for the raw and the post-processed labels."""
    from segflow.evaluation.metrics import scores
    from segflow.inference.chunked import summed_confusion
    from segflow.inference.stores import get_store

    kept = {}
    for suffix in job.suffixes:
        ious = np.asarray(scores(summed_confusion(job, f"confusion{suffix}"))["iou_per_class"])
        kept[f"iou_per_class{suffix}"] = [None if np.isnan(v) else float(v) for v in ious]
        shown = ", ".join(f"{k}: {v:.4f}" for k, v in enumerate(ious) if not np.isnan(v))
        what = " after the median filters" if suffix else ""
        say(f"IoU per class over the whole volume{what} ({chunks} chunks' confusion matrices summed): {shown}; mean {np.nanmean(ious):.4f}")
    get_store(job.store).update_attrs(job.output, **kept)
    return kept["iou_per_class"]


def _open_hint(dst: Path, store: str, labels: bool) -> str:
    if store == "ome-zarr":
        return f"open it in napari as layers: napari --plugin napari-ome-zarr {dst}"
    if store == "zarr" and labels:
        return f"open the labels in napari: napari {dst}/labels"
    return "read it with h5py" if store == "h5" else f"read it with zarr.open_group('{dst}')"


def predict_volume_cli(
    model: str | Path, image: str | Path, output: str | Path | None, chunk: str | None = None, workers: int | None = None,
    scheduler: str | None = None, overwrite: bool = False, tta: bool = False, overlap: float | None = None,
    batch_size: int | None = None, gpu: str | None = None, axes: str = "TZCYX", array: str | None = None,
    dtype: str = "float16", gt: str | Path | None = None, gt_array: str | None = None,
    output_format: str | None = None, median: list[str] | None = None,
) -> Path:  # fmt: skip
    """Predict the array ``array`` (None: its one array, or level 0 of an OME-Zarr image) of the Zarr store, HDF5
    file or TIFF ``image``, stored in ``axes`` (BiaPy's letters), into ``output`` (``inference.chunked``) in
    ``output_format`` (None: by its suffix); ``chunk`` is the work's and the output's chunk, ``"z,y,x"``. With ``gt``
    (a mask of class ids, stored as the image is) each chunk's confusion matrix is kept and the volume's IoU per class
    said at the end, exact whatever the volume's size. ``median``: ``AXES:SIZE`` median filters, by chunks with halo."""
    from segflow.evaluation.metrics import chunk_score
    from segflow.evaluation.postprocess import chunk_filter, filter_halo
    from segflow.inference.chunk_grid import cores
    from segflow.inference.chunked import cached_predictor, default_workers, predict_volume
    from segflow.inference.stores import store_for
    from segflow.inference.volume_job import build_job, check_output, container_source
    from segflow.runtime import resolve_devices, torch_device

    src = Path(image)
    container_source(src)
    dst = Path(output) if output else Path.cwd() / f"{src.stem}_pred.zarr"
    store = store_for(dst, output_format)
    check_output(src, dst)
    if workers is not None and workers < 1:
        raise SegflowError(f"--workers {workers}: must be at least 1")
    if dtype not in ("float16", "float32"):
        raise SegflowError(f"--dtype {dtype}: choose float16 or float32")
    device = str(torch_device(*resolve_devices(gpu, "auto")))
    cfg = cached_predictor(str(model), device).cfg
    filters = median_filters(median or [])
    job = build_job(
        str(model), device, src, array, axes, dst, store.name, chunk, {"dtype": dtype, "tta": tta, "overlap": overlap, "batch_size": batch_size},
        truth=None if gt is None else (Path(gt), gt_array, "TZCYX"), score=chunk_score(cfg),
        post=chunk_filter(filters, cfg.ndim), halo=filter_halo(filters, cfg.ndim),
    )  # fmt: skip
    workers = workers or default_workers(job.device)
    where = f" on {scheduler}" if scheduler else f" ({workers} worker thread(s))"
    print(f"Predicting {src} {job.spatial} in chunks of {job.chunk} into {dst} ({store.name}){where}")
    predict_volume(job, scheduler=scheduler, workers=workers, overwrite=overwrite)
    if job.truth is not None:
        report_iou(job, len(cores(job.spatial, job.chunk)))
    kinds = "probabilities" + (" and labels" if job.labels else "") + (", also median-filtered" if job.post is not None else "")
    print(f"Wrote {dst}: {kinds} ({_open_hint(dst, store.name, job.labels)})")
    return dst
