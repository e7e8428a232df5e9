"""``segflow build-lmdb``: two folders of 2D images and masks into NIST-style training databases,
``<output>/<name>-train.lmdb`` and ``<name>-val.lmdb``, one record per image or per tile (the record format is
``data.sources.lmdb_records``'s). Both are built in a temporary folder next to them and renamed into place at the
end, so an interrupted build leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from segflow.data.pairs import check_finite, check_same_size, pair_files
from segflow.data.sources.lmdb_records import FORMAT, META_KEY, SUFFIX, VERSION, npy_bytes, record_key
from segflow.errors import SegflowError
from segflow.io.images import list_images, read_image, read_mask

PARTS = ("train", "val")
# A write transaction keeps its pages in memory until it commits: commit every 64 MiB of records.
COMMIT_BYTES = 2**26
_ALIASES = {"tif": {"tif", "tiff"}, "tiff": {"tif", "tiff"}, "jpg": {"jpg", "jpeg"}, "jpeg": {"jpg", "jpeg"}}


@dataclass(frozen=True)
class Plan:
    """One image/mask pair and the ``(y, x)`` origins of its records: tiles of ``size`` (``tiled``), or the whole
    image; with the image's channels and pixel types."""

    image: Path
    mask: Path
    size: tuple[int, int]
    origins: list[tuple[int, int]]
    tiled: bool
    channels: int
    dtype: np.dtype
    mask_dtype: np.dtype

    @property
    def record_bytes(self) -> int:
        """Pixel bytes of one record, image and mask."""
        return self.size[0] * self.size[1] * (self.dtype.itemsize * self.channels + self.mask_dtype.itemsize)


def build_lmdb(
    image_folder: str, mask_folder: str, output_folder: str, dataset_name: str, train_fraction: float = 0.8,
    image_format: str = "tif", use_tiling: bool = False, tile_size: int = 256, seed: int = 0, overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``<output_folder>/<dataset_name>-{train,val}.lmdb`` from the image/mask pairs of two folders (images
    ``(y, x)`` or ``(y, x, c)``, masks ``(y, x)`` of class ids, paired by name); return the two paths by part.

    With ``use_tiling`` each image is cut into ``tile_size`` squares without overlap, the last tile of a row or column
    moved back to end at the border. The records are split by a shuffle seeded with ``seed``: ``train_fraction`` of
    them (at least one each) go to the train database."""
    _check_options(dataset_name, train_fraction, use_tiling, tile_size)
    out = Path(output_folder)
    finals = {part: out / f"{dataset_name}-{part}{SUFFIX}" for part in PARTS}
    existing = [p for p in finals.values() if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise SegflowError(
            f"{existing[0]}: already exists; pass --overwrite to replace it, "
            "or choose another --dataset_name or --output_folder"
        )
    # Made first: an output that cannot be written fails before a long read of the folders.
    tmp = _temporary_folder(out, dataset_name)
    try:
        plans = plan_records(image_folder, mask_folder, image_format, tile_size if use_tiling else None)
        split = split_records(plans, train_fraction, seed, image_folder)
        meta = {
            "format": FORMAT, "version": VERSION, "dataset_name": dataset_name, "channels": plans[0].channels,
            "dtype": plans[0].dtype.name, "mask_dtypes": sorted({p.mask_dtype.name for p in plans}), "seed": seed,
            "train_fraction": train_fraction, "use_tiling": use_tiling, "tile_size": tile_size if use_tiling else None,
            "counts": {part: len(idx) for part, idx in split.items()},
            "image_folder": str(image_folder), "mask_folder": str(mask_folder),
        }  # fmt: skip
        try:
            _write(plans, split, tmp, meta)
            _install(tmp, finals)
        except (OSError, lmdb.Error) as exc:
            raise SegflowError(
                f"--output_folder {out}: cannot write the databases ({_reason(exc)}); "
                "check the free space and that you can write there"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tiles = f", cut into {tile_size}x{tile_size} tiles" if use_tiling else ""
    counts = {part: f"{len(idx)} record{'s' if len(idx) != 1 else ''}" for part, idx in split.items()}
    wrote = f"{finals['train']} ({counts['train']}) and {finals['val']} ({counts['val']})"
    print(f"wrote {wrote} from {len(plans)} image(s){tiles}")
    print(
        f"  train with DATA.TRAIN.PATH: {finals['train']}, DATA.VAL.FROM_TRAIN: false, DATA.VAL.PATH: {finals['val']}"
    )
    return finals


def _check_options(dataset_name: str, train_fraction: float, use_tiling: bool, tile_size: int) -> None:
    if not dataset_name or "/" in dataset_name or "\\" in dataset_name or dataset_name.startswith("."):
        raise SegflowError(
            f"--dataset_name {dataset_name!r}: give a plain name (not empty, no '/', no leading '.'); "
            "it names <name>-train.lmdb and <name>-val.lmdb"
        )
    if not 0 < train_fraction < 1:
        raise SegflowError(
            f"--train_fraction {train_fraction}: must be between 0 and 1 (exclusive), "
            "the fraction of the records to train on, e.g. 0.8"
        )
    if use_tiling and tile_size < 1:
        raise SegflowError(f"--tile_size {tile_size}: must be a positive number of pixels, e.g. 256")


def list_image_pairs(image_folder: str, mask_folder: str, image_format: str) -> list[tuple[Path, Path]]:
    """The ``image_format`` files of ``image_folder``, each with its mask (any format segflow reads) by name."""
    fmt = image_format.lower().lstrip(".")
    every = list_images(image_folder, "--image_folder", "check the path")
    images = [p for p in every if p.suffix.lower().lstrip(".") in _ALIASES.get(fmt, {fmt})]
    if not images:
        found = sorted({p.suffix.lower().lstrip(".") for p in every})
        raise SegflowError(
            f"--image_folder {image_folder}: holds no .{fmt} images (only {', '.join(found)}); "
            f"set --image_format to theirs, e.g. --image_format {found[0]}"
        )
    masks = list_images(mask_folder, "--mask_folder", "check the path")
    by_stem = {m.stem: m for m in masks}
    if len(by_stem) == len(masks) and all(p.stem in by_stem for p in images):
        masks = [by_stem[p.stem] for p in images]  # the mask folder may also hold masks of images of other formats
    return pair_files(images, masks, "build-lmdb")


def plan_records(image_folder: str, mask_folder: str, image_format: str, tile: int | None) -> list[Plan]:
    """Read and check every pair once before anything is written (a bad file fails the build early, and the
    records are counted for the split), keeping only where its records are: memory holds one image at a time."""
    plans: list[Plan] = []
    for img_path, mask_path in list_image_pairs(image_folder, mask_folder, image_format):
        image, mask = _read_pair(img_path, mask_path)
        if plans and (image.shape[-1], image.dtype) != (plans[0].channels, plans[0].dtype):
            raise SegflowError(
                f"{img_path}: image has {image.shape[-1]} channel(s) of {image.dtype} but {plans[0].image.name} has "
                f"{plans[0].channels} of {plans[0].dtype}; "
                "the images of one database need the same channels and pixel type: convert them"
            )
        h, w = mask.shape
        if tile is not None and (h < tile or w < tile):
            raise SegflowError(
                f"{img_path}: image of shape ({h}, {w}) is smaller than --tile_size {tile}; "
                "use a smaller --tile_size, or leave out --use_tiling"
            )
        size, origins = ((tile, tile), _tile_origins((h, w), tile)) if tile is not None else ((h, w), [(0, 0)])
        channels, tiled = image.shape[-1], tile is not None
        plans.append(Plan(img_path, mask_path, size, origins, tiled, channels, image.dtype, mask.dtype))
    return plans


def _tile_origins(shape: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    from segflow.data.patches import grid_starts  # here: it imports torch, which only tiling needs

    return [(int(y), int(x)) for y, x in grid_starts(shape, (tile, tile))]


def _read_pair(img_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image ``(y, x, c)`` and its mask ``(y, x)``, checked to fit each other."""
    image, mask = read_image(img_path, 2), read_mask(mask_path, 2)
    check_finite(image, img_path)
    check_same_size("build-lmdb", str(img_path), image.shape[:-1], str(mask_path), mask.shape)
    return image, mask


def split_records(plans: list[Plan], train_fraction: float, seed: int, where: str) -> dict[str, list[int]]:
    """Record indices of each part: a shuffle seeded with ``seed`` of the image files, its first
    ``round(n * train_fraction)`` (at least one, never all) for training, so the tiles of one image are never
    both trained and validated on (NIST splits files, too); a single image's tiles are split instead. Each list
    sorted, so the records of a database keep their folders' order."""
    starts = np.cumsum([0] + [len(p.origins) for p in plans])
    if len(plans) >= 2:
        units = [list(range(starts[i], starts[i + 1])) for i in range(len(plans))]
    else:
        units = [[r] for r in range(int(starts[-1]))]
    n = len(units)
    if n < 2:
        raise SegflowError(
            f"--image_folder {where}: gives {n} record; a train and a val database need at least 2: "
            "add images, or use --use_tiling"
        )
    order = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, round(n * train_fraction)))
    return {part: sorted(int(r) for u in order[a:b] for r in units[u]) for part, (a, b) in (("train", (0, k)), ("val", (k, n)))}


def records(plans: list[Plan]) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """Every record in order: its ``info`` (see ``data.sources.lmdb_records``), image ``(y, x, c)``, mask ``(y, x)``."""
    for plan in plans:
        image, mask = _read_pair(plan.image, plan.mask)
        h, w = plan.size
        for y, x in plan.origins:
            tile_mask = mask[y : y + h, x : x + w]
            name = f"{plan.image.stem}_y{y}_x{x}" if plan.tiled else plan.image.stem
            info = {"name": name, "image_file": plan.image.name, "mask_file": plan.mask.name, "origin": [y, x],
                    "classes": [int(c) for c in np.unique(tile_mask)]}  # fmt: skip
            yield info, image[y : y + h, x : x + w], tile_mask


class _Writer:
    """Records into one new LMDB database, committed every ``COMMIT_BYTES``."""

    def __init__(self, path: Path, map_size: int) -> None:
        self.env = lmdb.open(str(path), map_size=map_size, subdir=True, meminit=False)
        self.txn, self.pending = self.env.begin(write=True), 0

    def put(self, key: bytes, value: bytes) -> None:
        self.txn.put(key, value)
        self.pending += len(value)
        if self.pending >= COMMIT_BYTES:
            self.txn.commit()
            self.txn, self.pending = self.env.begin(write=True), 0

    def finish(self, meta: dict) -> None:
        """Write ``meta`` last (a database without it was never finished) and flush everything to the disk."""
        self.put(META_KEY, json.dumps(meta).encode())
        self.txn.commit()
        self.txn = None
        self.env.sync(True)

    def close(self) -> None:
        if self.txn is not None:
            self.txn.abort()
        self.env.close()


def _write(plans: list[Plan], split: dict[str, list[int]], folder: Path, meta: dict) -> None:
    """Both databases, ``<dataset_name>-{train,val}.lmdb``, into ``folder``."""
    where = {i: (part, j) for part, idx in split.items() for j, i in enumerate(idx)}
    total = sum(p.record_bytes * len(p.origins) for p in plans)
    n = len(where)
    # The map is only reserved address space: the file grows as records are written. Twice the pixels, plus a page
    # per value for LMDB's overflow pages and headers, is ample.
    map_size = 2 * total + 3 * 8192 * n + 2**24
    writers: dict[str, _Writer] = {}
    try:
        for part in PARTS:
            writers[part] = _Writer(folder / f"{meta['dataset_name']}-{part}{SUFFIX}", map_size)
        for i, (info, image, mask) in enumerate(records(plans)):
            part, j = where[i]
            values = {"image": npy_bytes(image), "mask": npy_bytes(mask), "info": json.dumps(info).encode()}
            for kind, value in values.items():
                writers[part].put(record_key(kind, j), value)
        for part, writer in writers.items():
            writer.finish({**meta, "split": part, "records": len(split[part])})
    finally:
        for writer in writers.values():
            writer.close()


def _temporary_folder(out: Path, dataset_name: str) -> Path:
    """A new folder inside ``out`` (created if need be) to build in: renaming from it never crosses a disk."""
    if out.exists() and not out.is_dir():
        raise SegflowError(f"--output_folder {out}: is a file, not a folder; choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dataset_name}-building-", dir=out))
    except OSError as exc:
        raise SegflowError(
            f"--output_folder {out}: cannot write there ({_reason(exc)}); choose a folder you can write to"
        ) from None


def _install(folder: Path, finals: dict[str, Path]) -> None:
    """Rename the built databases into place; replaced ones are moved into ``folder`` first (deleted with it)."""
    for final in finals.values():
        if final.exists() or final.is_symlink():
            final.replace(folder / f"old-{final.name}")
        (folder / final.name).replace(final)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
