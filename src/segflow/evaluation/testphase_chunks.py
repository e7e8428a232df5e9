"""The test phase by chunks (``TEST.BY_CHUNKS``): each test volume predicted chunk by chunk into a Zarr, OME-Zarr
or HDF5 file in ``per_image/``, scored from each chunk's confusion matrix, so neither the volume, its prediction nor
its mask is ever held in memory. Modes ``by chunks`` and, with median filters, ``by chunks - post-processing``."""

from __future__ import annotations

from pathlib import Path

from segflow.config.schema import Config
from segflow.errors import SegflowError
from segflow.evaluation.metrics import Scorer, chunk_score
from segflow.evaluation.postprocess import chunk_filter, filter_halo, median_filters
from segflow.inference.chunked import Job, predict_volume, summed_confusion
from segflow.inference.predictor import Predictor
from segflow.inference.stores import get_store
from segflow.inference.volume_job import build_job
from segflow.io.formats.tiff import write_tiff_slabs
from segflow.io.paths import RunPaths

STORES = {"Zarr": ("zarr", ".zarr"), "OME-Zarr": ("ome-zarr", ".ome.zarr"), "H5": ("h5", ".h5")}
SUFFIXES = (".zarr", ".h5", ".hdf5", ".tif", ".tiff")


def _stem(path: Path) -> str:
    """The name a volume, its mask and its outputs share: the file name up to its first dot (``a.ome.zarr``: ``a``)."""
    return path.name.split(".")[0]


def _inner(cfg: Config) -> tuple[str | None, str | None]:
    """The image's and the mask's arrays inside each test file (INPUT_ZARR_MULTIPLE_DATA), else None: their one array."""
    bc = cfg.TEST.BY_CHUNKS
    if not bc.INPUT_ZARR_MULTIPLE_DATA:
        return None, None
    return bc.INPUT_ZARR_MULTIPLE_DATA_RAW_PATH, bc.INPUT_ZARR_MULTIPLE_DATA_GT_PATH


def test_volumes(cfg: Config) -> list[tuple[Path, Path | None]]:
    """``(volume, mask)`` of every test volume: DATA.TEST.PATH itself or the containers in it, each paired with the
    mask of the same name in DATA.TEST.GT_PATH (or, with INPUT_ZARR_MULTIPLE_DATA, with itself)."""
    t, bc = cfg.DATA.TEST, cfg.TEST.BY_CHUNKS
    root = Path(t.PATH)
    if not root.exists():
        raise SegflowError(f"DATA.TEST.PATH {root}: no such folder, Zarr store, HDF5 file or TIFF")
    volumes = [root] if root.name.lower().endswith(SUFFIXES) else sorted(p for p in root.iterdir() if p.name.lower().endswith(SUFFIXES))
    if not volumes:
        raise SegflowError(f"DATA.TEST.PATH {root}: holds no .zarr, .h5 or .tif volume to predict by chunks (TEST.BY_CHUNKS.ENABLE)")
    if not t.LOAD_GT:
        return [(v, None) for v in volumes]
    if bc.INPUT_ZARR_MULTIPLE_DATA:
        if not bc.INPUT_ZARR_MULTIPLE_DATA_GT_PATH:
            raise SegflowError("TEST.BY_CHUNKS.INPUT_ZARR_MULTIPLE_DATA_GT_PATH: empty; give the mask's array inside each file, or set DATA.TEST.LOAD_GT false")
        return [(v, v) for v in volumes]
    masks = {_stem(p): p for p in Path(t.GT_PATH).iterdir()} if Path(t.GT_PATH).is_dir() else {}
    if Path(t.GT_PATH).name.lower().endswith(SUFFIXES) and len(volumes) == 1:
        masks = {_stem(volumes[0]): Path(t.GT_PATH)}
    missing = [v.name for v in volumes if _stem(v) not in masks]
    if missing:
        raise SegflowError(f"DATA.TEST.GT_PATH {t.GT_PATH}: no mask named like {missing[0]}; give one mask per volume, or set DATA.TEST.LOAD_GT false")
    return [(v, masks[_stem(v)]) for v in volumes]


def check_test_volumes(cfg: Config) -> list[tuple[Path, tuple[int, ...]]]:
    """Open every test volume and mask lazily before anything is written or trained (names, arrays, axes, shapes,
    channels; no voxel read); returns each volume with its ``(*spatial, C)`` shape, and says what it found."""
    from segflow.inference.volume_job import container_source, open_truth

    bc = cfg.TEST.BY_CHUNKS
    raw, gt = _inner(cfg)
    shapes = []
    for src, mask in test_volumes(cfg):
        image = container_source(src, "DATA.TEST.PATH").lazy_array(cfg, src, raw, bc.INPUT_IMG_AXES_ORDER, "TEST.BY_CHUNKS.INPUT_IMG_AXES_ORDER", True)
        if image.shape[-1] != cfg.in_channels:
            raise SegflowError(f"{src}: {image.shape[-1]} channel(s) but DATA.PATCH_SIZE says {cfg.in_channels}; check TEST.BY_CHUNKS.INPUT_IMG_AXES_ORDER")
        if mask is not None:
            open_truth(cfg, mask, gt, bc.INPUT_MASK_AXES_ORDER, image, src, "DATA.TEST.GT_PATH")
        shapes.append((src, tuple(image.shape)))
    print(f"test (by chunks): {len(shapes)} volume(s) from {cfg.DATA.TEST.PATH}: " + ", ".join(f"{p.name} {s[:-1]}" for p, s in shapes[:3]))
    return shapes


def _job(cfg: Config, checkpoint: str, device: str, src: Path, mask: Path | None, out: Path, store: str, model_cfg: Config) -> Job:
    bc = cfg.TEST.BY_CHUNKS
    filters = median_filters(cfg)
    raw, gt = _inner(cfg)
    truth = None if mask is None else (mask, gt, bc.INPUT_MASK_AXES_ORDER)
    chunk = ",".join(map(str, bc.CHUNK_SIZE)) or None
    return build_job(
        checkpoint, device, src, raw, bc.INPUT_IMG_AXES_ORDER, out, store, chunk,
        {"dtype": "float32", "tta": cfg.TEST.AUGMENTATION}, truth=truth, score=chunk_score(model_cfg),
        post=chunk_filter(filters, model_cfg.ndim), halo=filter_halo(filters, model_cfg.ndim),
    )  # fmt: skip


def run_test_by_chunks(cfg: Config, paths: RunPaths, predictor: Predictor, checkpoint: str) -> dict[str, Scorer]:
    """Predict every test volume by chunks into ``per_image/NAME.zarr`` (``.ome.zarr``, ``.h5``); returns the scorers
    of the modes (empty without masks). An output left by a killed run of the same job is finished; one made by
    another model or options is predicted anew."""
    bc = cfg.TEST.BY_CHUNKS
    store, suffix = STORES[bc.FORMAT]
    modes: dict[str, Scorer] = {}
    for n, (src, mask) in enumerate(test_volumes(cfg), 1):
        out = paths.per_image() / f"{_stem(src)}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        job = _job(cfg, checkpoint, str(predictor.device), src, mask, out, store, predictor.cfg)
        print(f"[by chunks] test volume {n}: {src.name} {job.spatial} in chunks of {job.chunk} into {out}")
        predict_volume(job, scheduler=bc.SCHEDULER or None, workers=bc.WORKERS or None, key="TEST.BY_CHUNKS.SCHEDULER", replace_stale=True)
        if bc.SAVE_OUT_TIF:
            _save_tifs(job, paths, src)
        for kind in job.suffixes if job.truth is not None else ():
            mode = "by chunks" + (" - post-processing" if kind else "")
            modes.setdefault(mode, Scorer(predictor.cfg)).add_confusion(src.name, summed_confusion(job, f"confusion{kind}"))
    return modes


def _save_tifs(job: Job, paths: RunPaths, src: Path) -> None:
    """The probabilities into ``per_image/NAME.tif`` and the labels into ``per_image_binarized/NAME.tif``, page by page."""
    store, name = get_store(job.store), f"{_stem(src)}.tif"
    write_tiff_slabs(paths.per_image() / name, store.read(job.output, "probabilities"), channels=True)
    if job.labels:
        paths.per_image("_binarized").mkdir(parents=True, exist_ok=True)
        write_tiff_slabs(paths.per_image("_binarized") / name, store.read(job.output, "labels"), channels=False)
