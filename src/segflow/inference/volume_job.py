"""A chunked prediction's ``Job`` from paths and options: what ``segflow predict`` and the test phase by chunks share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from segflow.errors import SegflowError
from segflow.inference.chunk_grid import default_chunk
from segflow.inference.chunked import Job, cached_predictor
from segflow.inference.stores import get_store


def container_source(path: Path, key: str = "IMAGE") -> Any:
    """The source class whose files ``path`` is (Zarr, HDF5, TIFF), to read it lazily; a TIFF is memory-mapped or
    read tile by tile (tifffile's Zarr view), in the axes it records."""
    from segflow.data.sources import Hdf5Source, TiffSource, ZarrSource

    kind = path.suffix.lower()
    found = next((cls for cls in (ZarrSource, Hdf5Source, TiffSource) if kind in cls.suffixes), None)
    if found is None:
        raise SegflowError(f"{key} {path}: a volume is predicted by chunks from a Zarr store, an HDF5 file or a TIFF (.zarr, .h5, .hdf5, .tif)")
    if not path.exists():
        raise SegflowError(f"{key} {path}: no such Zarr store, HDF5 file or TIFF")
    return found()


def open_truth(cfg: Any, gt: Path, gt_array: str | None, axes: str, image: Any, src: Path, key: str = "--gt") -> Any:
    """The ground-truth mask ``gt`` read lazily as ``(*spatial)``, checked against the model and the image."""
    from segflow.encodings import get_encoding

    encoding = get_encoding(cfg)
    if encoding.bitwise or encoding.score_classes() == 0:
        raise SegflowError(f"{key} {gt}: IoU by chunks needs a model that gives one class per pixel, not {encoding.name}")
    truth = container_source(gt, key).lazy_array(cfg, gt, gt_array, axes, key, False)
    if tuple(truth.shape) != tuple(image.shape[:-1]):
        raise SegflowError(f"{key} {gt}: shape {tuple(truth.shape)} but the image {src} has {tuple(image.shape[:-1])}; give its mask")
    return truth


def parse_chunk(text: str | None, patch: tuple[int, ...], spatial: tuple[int, ...], key: str = "--chunk") -> tuple[int, ...]:
    """``"z,y,x"`` as sizes; empty: ``default_chunk``."""
    if not text:
        return default_chunk(patch, spatial)
    try:
        return tuple(int(v) for v in str(text).strip("()[] ").split(",") if v.strip())
    except ValueError:
        raise SegflowError(f"{key} {text}: give sizes separated by commas, one per spatial axis (e.g. 256,256,256)") from None


def build_job(
    checkpoint: str, device: str, src: Path, array: str | None, axes: str, output: Path, store: str, chunk: str | None,
    options: dict, truth: tuple[Path, str | None, str] | None = None,
    score: Callable | None = None, post: Callable | None = None, halo: tuple[int, ...] = (),
) -> Job:  # fmt: skip
    """The job predicting the array ``array`` of ``src`` (stored in ``axes``, BiaPy's letters) into ``output`` in the
    format ``store``; ``options``: ``dtype``, ``tta``, ``overlap`` (one fraction or None), ``batch_size``. ``truth``
    ``(path, array, axes)`` of the mask, scored per chunk by ``score``; ``post`` filters each chunk, reading ``halo``."""
    predictor = cached_predictor(checkpoint, device)  # the one the chunk tasks of this process use
    cfg = predictor.cfg
    source = container_source(src)
    lazy = source.lazy_array(cfg, src, array, axes, "--axes", True)
    mask = None if truth is None else open_truth(cfg, truth[0], truth[1], truth[2], lazy, src)
    predictor.as_image(lazy, src, finite=False)
    spatial = tuple(lazy.shape[:-1])
    overlap = options.get("overlap")
    from segflow.encodings import get_encoding

    encoding = get_encoding(cfg)
    return Job(
        checkpoint=checkpoint, image=lazy, output=str(output), chunk=parse_chunk(chunk, cfg.spatial_patch, spatial),
        stats=predictor.normalizer.stats(lazy, str(src)), overlap=None if overlap is None else (overlap,) * cfg.ndim,
        batch_size=options.get("batch_size"), tta=bool(options.get("tta")), dtype=options.get("dtype", "float16"),
        labels=encoding.score_classes() > 0, device=device, store=get_store(store).name, truth=mask,
        n_classes=encoding.score_classes(), score=score, post=post, halo=halo if post is not None else (),
        voxel_size=source.voxel_size(src, array, cfg.ndim),
    )  # fmt: skip


def check_output(src: Path, output: Path) -> None:
    """The output is not the input."""
    if output.resolve() == src.resolve():
        raise SegflowError(f"OUTPUT {output} is the input; write the prediction elsewhere")

