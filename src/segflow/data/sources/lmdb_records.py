"""The LMDB source: a database written by ``segflow build-lmdb`` (NIST's design: one record per 2D image or
tile), read in place from LMDB's memory map; and the record format the builder and this reader share.

A database is a folder ``<name>-train.lmdb`` or ``<name>-val.lmdb``. Its keys:

- ``__meta__``: JSON, ``format``/``version``, ``dataset_name``, ``split``, ``records`` (their number), ``channels``,
  ``dtype`` (of the images), ``seed``, ``train_fraction``, the tiling and the records of each split (``counts``);
- ``image/00000000``: the image ``(y, x, c)`` in its stored dtype, as ``.npy`` bytes (``np.save``, no pickle);
- ``mask/00000000``: the mask ``(y, x)`` of class ids, ``.npy`` bytes;
- ``info/00000000``: JSON, ``name``, ``image_file``, ``mask_file``, ``origin`` ``[y, x]`` of the tile in its image and
  ``classes``, the sorted class ids present in the mask (mask checks and class balancing need no scan).
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segflow.config.schema import Config
from segflow.data.pairs import MaskRules
from segflow.data.sources.base import Sample
from segflow.errors import SegflowError
from segflow.io.lazy import LazyArray

FORMAT = "segflow-lmdb"
VERSION = 1
META_KEY = b"__meta__"
SUFFIX = ".lmdb"
REBUILD = "build it again with segflow build-lmdb"


def record_key(kind: str, i: int) -> bytes:
    """The key of record ``i``'s ``kind`` ('image', 'mask' or 'info')."""
    return f"{kind}/{i:08d}".encode()


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (its dtype and shape kept, nothing pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_view(data: Any, where: str) -> np.ndarray:
    """The array held by ``.npy`` bytes ``data`` (bytes or a buffer), as a read-only view of them: no copy, so a
    buffer into LMDB's memory map is read from the disk only where the array is used."""
    # The header (magic, version, a short dict) is far below 4 KiB; np.save pads it to a 64-byte boundary.
    head = io.BytesIO(bytes(memoryview(data)[:4096]))
    try:
        version = np.lib.format.read_magic(head)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(head)
    except ValueError as exc:
        raise SegflowError(f"{where}: not a stored array ({exc}); the database is damaged: {REBUILD}") from None
    if dtype.hasobject:
        raise SegflowError(f"{where}: holds Python objects ({dtype}), not pixels; {REBUILD}")
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=head.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


# One read-only environment and transaction per database per process, never shared across fork: a forked worker
# opens its own. LMDB must not open one environment twice in a process (py-lmdb refuses to), hence the cache; the
# data file's inode and mtime are in the key so that a database rebuilt in place (--overwrite) is opened afresh
# instead of read through the old file's map.
_READERS: dict[tuple[int, str, int, int], tuple[Any, Any]] = {}


def _release_inherited() -> None:
    """Close, in a forked child, the handles it inherited: py-lmdb counts them as open in this process and would
    refuse to open the database again. Without locks (``lock=False``) closing only unmaps the child's copy; the
    parent's handles are untouched, and the child's lazy arrays reopen (their pid changed) before reading."""
    for key in [k for k in _READERS if k[0] != os.getpid()]:
        env, txn = _READERS.pop(key)
        txn.abort()
        env.close()


def _reader(db: str) -> tuple[Any, Any]:
    """The environment and read transaction on ``db`` for this process (zero-copy buffers, valid while it lives)."""
    import lmdb  # here: only LMDB data needs it

    try:
        stat = os.stat(Path(db) / "data.mdb")
    except OSError as exc:
        raise SegflowError(f"{db}: not an LMDB database ({exc.strerror}: no data.mdb inside); {REBUILD}") from None
    key = (os.getpid(), db, stat.st_ino, stat.st_mtime_ns)
    if key not in _READERS:
        _release_inherited()
        try:
            # lock=False: nothing writes a built database, so readers need no lock file (nor write access to it);
            # readahead=False: records are read at random, and the database may be larger than memory.
            env = lmdb.open(db, readonly=True, lock=False, readahead=False, subdir=True)
        except lmdb.Error as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise SegflowError(f"{db}: cannot be opened as an LMDB database ({reason}); {REBUILD}") from None
        _READERS[key] = (env, env.begin(write=False, buffers=True))
    return _READERS[key]


def _get(txn: Any, db: str, key: bytes) -> Any:
    value = txn.get(key)
    if value is None:
        raise SegflowError(f"{db}: key {key.decode()} is missing; the database is incomplete: {REBUILD}")
    return value


def read_meta(txn: Any, db: str) -> dict:
    """The ``__meta__`` record of ``db`` (see the module docstring), checked to be this format's."""
    raw = txn.get(META_KEY)
    if raw is None:
        raise SegflowError(f"{db}: an LMDB database without a {META_KEY.decode()} key, not one of segflow's; {REBUILD}")
    meta = json.loads(bytes(raw))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise SegflowError(
            f"{db}: format {meta.get('format')!r} version {meta.get('version')!r}, but this segflow reads "
            f"{FORMAT!r} version {VERSION}; {REBUILD}"
        )
    return meta


def read_info(txn: Any, db: str, i: int) -> dict:
    """Record ``i``'s ``info``: name, source files, tile origin and class ids."""
    return json.loads(bytes(_get(txn, db, record_key("info", i))))


class _StoredRecord:
    """One array of a record: a view into LMDB's memory map; slicing copies only the slice (a patch)."""

    def __init__(self, db: str, key: bytes) -> None:
        # The environment and transaction are held here too: the view is valid only while they live.
        self._env, self._txn = _reader(db)
        self.array = npy_view(_get(self._txn, db, key), f"{db}/{key.decode()}")
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.array(self.array[key])


class LmdbSource:
    """A database of ``segflow build-lmdb`` as ``DATA.TRAIN.PATH`` (``<name>-train.lmdb``) or, with
    ``DATA.VAL.FROM_TRAIN: false``, ``DATA.VAL.PATH`` (``<name>-val.lmdb``): one sample per record.

    ``DATA.*.GT_PATH`` is ignored: the masks are inside the database. ``DATA.*.IN_MEMORY: true`` copies every
    record into memory, as image folders are; ``false`` reads each patch from LMDB's memory map (``LazyArray``
    over the record, opened again in each data-loader process), for databases larger than memory: a record is
    one stored array, so the page cache, not a decoder, does the work, and nothing is read twice per process.
    """

    name: ClassVar[str] = "lmdb"

    @staticmethod
    def accepts(cfg: Config, image_path: str, what: str) -> bool:
        """A path ending in ``.lmdb`` (the folder LMDB writes)."""
        return Path(image_path).suffix.lower() == SUFFIX

    def samples(
        self, cfg: Config, image_path: str, mask_path: str | None, what: str, rules: MaskRules | None
    ) -> list[Sample]:
        """See ``Source.samples``; ``mask_path`` is ignored (the masks are in the database). Each ``Sample``'s image is
        ``(y, x, c)`` and its mask ``(y, x)``, in their stored dtypes; its path is ``<database>/<record name>``."""
        key = "DATA.TRAIN" if what == "train" else "DATA.VAL"
        db = _database(image_path, what, key)
        _, txn = _reader(db)
        meta = read_meta(txn, db)
        _check_fits(cfg, meta, db)
        in_memory = (cfg.DATA.TRAIN if what == "train" else cfg.DATA.VAL).IN_MEMORY
        out = []
        for i in range(int(meta["records"])):
            info = read_info(txn, db, i)
            path = Path(db) / info["name"]
            if rules is not None:  # the class ids of the mask, stored with it: the same check, without reading it
                rules.check_mask(np.asarray(info["classes"], dtype=np.int64), path)
            image, mask = (_array(db, kind, i, in_memory, f"{key}.PATH") for kind in ("image", "mask"))
            out.append(Sample(info["name"], image, mask, path, path))
        return out


def _database(image_path: str, what: str, key: str) -> str:
    """``image_path`` as an existing database folder."""
    path = Path(image_path)
    if not path.exists():
        raise SegflowError(f"{what}: {path} does not exist; build it with segflow build-lmdb, or check {key}.PATH")
    if not path.is_dir():
        raise SegflowError(
            f"{what}: {path} is a file, not an LMDB folder; give {key}.PATH the .lmdb folder segflow build-lmdb wrote"
        )
    return str(path)


def _check_fits(cfg: Config, meta: dict, db: str) -> None:
    """The database's records are 2D with the configured number of channels."""
    if cfg.ndim != 2:
        raise SegflowError(
            f"{db}: holds 2D records ((y, x, c) images) but PROBLEM.NDIM is {cfg.PROBLEM.NDIM}; set PROBLEM.NDIM: 2D"
        )
    channels = int(meta["channels"])
    if channels != cfg.in_channels:
        raise SegflowError(
            f"{db}: its images have {channels} channel(s) but DATA.PATCH_SIZE {tuple(cfg.DATA.PATCH_SIZE)} ends in "
            f"{cfg.in_channels}; set the last value of DATA.PATCH_SIZE to {channels}, "
            f"or build the database from {cfg.in_channels}-channel images"
        )


def _array(db: str, kind: str, i: int, in_memory: bool, key: str) -> np.ndarray | LazyArray:
    """Record ``i``'s image ``(y, x, c)`` or mask ``(y, x)``: copied into memory, or lazy over the memory map."""
    if in_memory:
        return np.array(_StoredRecord(db, record_key(kind, i)).array)
    opener = functools.partial(_StoredRecord, db, record_key(kind, i))
    image = kind == "image"
    return LazyArray(opener, "YXC" if image else "YX", 2, f"{db}/{record_key(kind, i).decode()}", key, channels=image)
