"""``segflow predict MODEL in.zarr out.zarr``: a Zarr or HDF5 volume of any size predicted chunk by chunk into Zarr."""

from __future__ import annotations

from pathlib import Path

from segflow.errors import SegflowError

VOLUME_SUFFIXES = (".zarr", ".h5", ".hdf5")


def is_volume(image: str | Path | None, output: str | Path | None) -> bool:
    """Whether ``segflow predict`` reads a container (Zarr, HDF5) or writes a Zarr store: the chunked path."""
    return any(p is not None and Path(p).suffix.lower() in VOLUME_SUFFIXES for p in (image, output))


def _chunk(text: str | None, patch: tuple[int, ...], spatial: tuple[int, ...]) -> tuple[int, ...]:
    from segflow.inference.chunked import default_chunk

    if not text:
        return default_chunk(patch, spatial)
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SegflowError(f"--chunk {text}: give sizes separated by commas, one per spatial axis (e.g. 256,256,256)") from None


def predict_volume_cli(
    model: str | Path, image: str | Path, output: str | Path | None, chunk: str | None = None, workers: int | None = None,
    scheduler: str | None = None, overwrite: bool = False, tta: bool = False, overlap: float | None = None,
    batch_size: int | None = None, gpu: str | None = None, axes: str = "TZCYX", array: str | None = None,
    dtype: str = "float16",
) -> Path:  # fmt: skip
    """Predict the array ``array`` (None: its one array, or level 0 of an OME-Zarr image) of the Zarr store, HDF5
    file or TIFF ``image``, stored in ``axes`` (BiaPy's letters), into the Zarr group ``output`` (see
    ``inference.chunked``); ``chunk`` is the work's and the output's chunk, ``"z,y,x"``."""
    from segflow.data.sources import Hdf5Source, TiffSource, ZarrSource
    from segflow.encodings import get_encoding
    from segflow.inference.chunked import Job, default_workers, predict_volume
    from segflow.inference.predictor import Predictor
    from segflow.runtime import resolve_devices, torch_device

    src = Path(image)
    suffix = src.suffix.lower()
    if suffix not in VOLUME_SUFFIXES + TiffSource.suffixes:
        raise SegflowError(f"IMAGE {src}: a Zarr output is predicted from a Zarr store, an HDF5 file or a TIFF (.zarr, .h5, .hdf5, .tif)")
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
    device = torch_device(*resolve_devices(gpu, "auto"))
    predictor = Predictor.from_checkpoint(model, device)
    cfg = predictor.cfg
    # A TIFF is memory-mapped or read tile by tile (tifffile's Zarr view), in the axes it records.
    source = ZarrSource() if suffix == ".zarr" else TiffSource() if suffix in TiffSource.suffixes else Hdf5Source()
    lazy = source.lazy_array(cfg, src, array, axes, "--axes", True)
    predictor.as_image(lazy, src, finite=False)
    spatial = tuple(lazy.shape[:-1])
    job = Job(
        checkpoint=str(model), image=lazy, output=str(dst), chunk=_chunk(chunk, cfg.spatial_patch, spatial),
        stats=predictor.normalizer.stats(lazy, str(src)), overlap=None if overlap is None else (overlap,) * cfg.ndim,
        batch_size=batch_size, tta=tta, dtype=dtype, labels=get_encoding(cfg).score_classes() > 0, device=str(device),
    )  # fmt: skip
    workers = workers or default_workers(job.device)
    print(f"Predicting {src} {spatial} in chunks of {job.chunk} into {dst}" + (f" on {scheduler}" if scheduler else f" ({workers} worker thread(s))"))
    predict_volume(job, scheduler=scheduler, workers=workers, overwrite=overwrite)
    print(f"Wrote {dst}: probabilities" + (" and labels" if job.labels else "") + f" (open the labels in napari: napari {dst}/labels)")
    return dst
