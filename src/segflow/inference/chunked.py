"""Prediction of volumes larger than RAM, chunk by chunk into a Zarr, OME-Zarr or HDF5 output, each chunk a dask task.

Nothing of the volume is held in memory: a task reads the windows of the whole image's grid that touch its chunk
(``Predictor.predict(core=...)``), so the chunks put together are the in-memory prediction with no seam, and writes
whole output chunks (``stores``), so tasks never write the same file. With post-processing (median filters) a task
predicts its chunk plus the filters' halo, filters, and keeps the core: the whole volume filtered, exactly. After its
chunk is written a task marks it in ``done``; a re-run of the same command skips the chunks marked, and refuses an
output made with another model or options unless told to overwrite.

The tasks run on dask: its threaded scheduler in this process by default, or a running ``dask.distributed`` cluster
(``scheduler="tcp://host:port"``), whose workers each load the model once (``cached_predictor``).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from segflow.errors import SegflowError
from segflow.inference.chunk_grid import check_chunk, cores, grow, inside, region
from segflow.inference.stores import Layout, get_store

FORMAT = "segflow-chunked-prediction"
POST = "_post_processing"  # the suffix of the post-processed arrays and scores


@dataclass(frozen=True)
class Job:
    """What every chunk task needs: picklable, sent to each worker once per task."""

    checkpoint: str
    image: Any  # a LazyArray ``(*spatial, C)``: each process opens its own handle
    output: str
    chunk: tuple[int, ...]
    stats: dict | None
    overlap: tuple[float, ...] | None
    batch_size: int | None
    tta: bool
    dtype: str
    labels: bool
    device: str = "cpu"
    store: str = "zarr"  # the output's format: a name of ``stores.STORES``
    truth: Any = None  # a LazyArray mask ``(*spatial)`` of class ids: each chunk's confusion matrix is kept
    n_classes: int = 0  # rows and columns of the confusion matrix (with ``truth``)
    # (labels, truth) of a chunk -> its (n_classes, n_classes) confusion matrix: evaluation's, handed in by the caller
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    # channels-last probabilities (*region, K) -> the same filtered (evaluation's median filters), and how far it reads
    post: Callable[[np.ndarray], np.ndarray] | None = None
    halo: tuple[int, ...] = ()
    voxel_size: tuple[float, ...] | None = None  # of the input, (z, y, x) or (y, x): written with the output

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Of the arrays and scores written: ``""`` (as predicted) and, with post-processing, ``POST``."""
        return ("", POST) if self.post is not None else ("",)

    @property
    def spatial(self) -> tuple[int, ...]:
        """The volume's spatial shape."""
        return tuple(self.image.shape[:-1])

    def layout(self, channels: int) -> Layout:
        """The output's arrays for a network of ``channels`` activated outputs."""
        kinds = ["probabilities", "labels"] if self.labels else ["probabilities"]
        scores = [f"confusion{s}" for s in self.suffixes] if self.truth is not None else []
        arrays = tuple(k + s for s in self.suffixes for k in kinds)
        return Layout(self.spatial, self.chunk, channels, self.dtype, arrays, tuple(scores), self.n_classes)


def _describe(fn: Callable | None) -> str | None:
    """A callable named stably across runs (a partial's function and arguments, no memory address)."""
    if fn is None:
        return None
    base = getattr(fn, "func", fn)
    return f"{base.__module__}.{base.__qualname__}{getattr(fn, 'args', ())}{sorted(getattr(fn, 'keywords', {}).items())}"


def fingerprint(job: Job) -> str:
    """What decides the output's values: the checkpoint's bytes, the input's shape and dtype, the options."""
    digest = hashlib.sha256()
    with open(job.checkpoint, "rb") as f:
        for block in iter(functools.partial(f.read, 2**20), b""):
            digest.update(block)
    options = [job.image.shape, str(job.image.dtype), job.chunk, job.overlap, job.tta, job.dtype, job.labels, job.truth is not None,
               job.store, _describe(job.post), job.halo]  # fmt: skip
    digest.update(json.dumps(options, default=str).encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def cached_predictor(checkpoint: str, device: str) -> Any:
    """The model, loaded once per process (a dask worker keeps it for all its chunks)."""
    from segflow.inference.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, device)


def predict_chunk(job: Job, index: tuple[int, ...]) -> tuple[int, ...]:
    """Predict the chunk at ``index`` of ``job`` (with its post-processing), write it and mark it done."""
    predictor = cached_predictor(job.checkpoint, job.device)
    core = region(index, job.spatial, job.chunk)
    grown = grow(core, job.halo, job.spatial)
    overlap = list(job.overlap) if job.overlap is not None else None
    probs = predictor.predict(job.image, overlap=overlap, batch_size=job.batch_size, tta=job.tta, core=grown, stats=job.stats)
    truth = None if job.truth is None else np.asarray(job.truth[core])
    keep = inside(core, grown)
    outputs: dict[str, np.ndarray] = {}
    confusions: dict[str, np.ndarray] = {}
    for suffix in job.suffixes:
        values = (job.post(probs) if suffix else probs)[keep]
        outputs[f"probabilities{suffix}"] = np.moveaxis(values, -1, 0).astype(job.dtype, copy=False)
        if job.labels:
            labels = predictor.labels(values)
            outputs[f"labels{suffix}"] = labels
            if truth is not None:
                confusions[f"confusion{suffix}"] = job.score(labels, truth)
    get_store(job.store).write(job.output, index, core, outputs, confusions)
    return index


def open_output(job: Job, layout: Layout, digest: str, overwrite: bool, replace_stale: bool = False) -> np.ndarray:
    """Make the output of ``job``, or take the one a run with the same fingerprint left (resumed), or with
    ``overwrite`` make it anew; anything else there is refused, naming what differs (with ``replace_stale``, a
    segflow output of another model or options is made anew). Returns its ``done`` flags."""
    store, path = get_store(job.store), Path(job.output)
    meta = store.attrs(job.output) if path.exists() else {}
    overwrite = overwrite or (replace_stale and meta.get("format") == FORMAT and meta.get("fingerprint") != digest)
    if path.exists() and not overwrite:
        if meta.get("format") != FORMAT:
            raise SegflowError(
                f"{path}: exists and is not a segflow chunked prediction (or cannot be read: a run killed while writing "
                "HDF5 can leave it damaged); choose another output, or give --overwrite to replace it"
            )
        if meta.get("fingerprint") != digest:
            said = {"shape": list(job.spatial), "chunk": list(job.chunk)}
            differs = [f"{k} {meta.get(k)} there, {v} now" for k, v in said.items() if meta.get(k) != v] or ["another model or options"]
            raise SegflowError(
                f"{path}: was predicted with {'; '.join(differs)}; re-run the command that made it to finish it, "
                "or give --overwrite to predict it anew"
            )
        return np.asarray(store.read(job.output, "done")[...]).astype(bool)
    store.create(job.output, layout, {"format": FORMAT, "fingerprint": digest, "shape": list(job.spatial), "chunk": list(job.chunk),
                                      "checkpoint": str(Path(job.checkpoint).resolve())})  # fmt: skip
    return np.zeros(layout.grid, dtype=bool)


def _report(total: int, say: Callable[[str], None]) -> Callable[[int], None]:
    """A progress line every ~5 % of the chunks (one per chunk when there are few)."""
    every = max(1, total // 20)
    return lambda n: say(f"chunk {n}/{total} written") if n % every == 0 or n == total else None


def run_tasks(
    job: Job, todo: list[tuple[int, ...]], scheduler: str | None, workers: int, said: Callable[[int], None], key: str = "--scheduler"
) -> None:
    """``predict_chunk`` of every chunk in ``todo`` on dask: the local threaded scheduler with ``workers`` threads,
    or the ``dask.distributed`` cluster at ``scheduler`` (``tcp://host:port``, given as ``key``)."""
    import dask

    tasks = [dask.delayed(predict_chunk, pure=False)(job, index) for index in todo]
    if scheduler:
        from distributed import Client, as_completed

        try:
            _listening(scheduler)
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise SegflowError(f"{key} {scheduler}: no dask scheduler answers there ({exc}); start one, or leave --scheduler out to use this machine") from None
        with client:
            for n, future in enumerate(as_completed(client.compute(tasks)), 1):
                future.result()
                said(n)
        return
    from dask.callbacks import Callback

    done = iter(range(1, len(tasks) + 1))
    with Callback(posttask=lambda key, result, dsk, state, worker: said(next(done)) if str(key).startswith("predict_chunk") else None):
        dask.compute(*tasks, scheduler="threads", num_workers=workers)


def _listening(scheduler: str) -> None:
    """Raise ``OSError`` at once when nothing listens at a ``tcp://host:port`` address: dask's client would retry
    a refused connection until its timeout, 10 s of waiting for an answer that is already known."""
    address = urlsplit(scheduler)
    if address.scheme == "tcp" and address.hostname and address.port:
        socket.create_connection((address.hostname, address.port), timeout=10).close()


def default_workers(device: str) -> int:
    """Chunks at once on this machine: on the CPU one per core, at most 4, each task's network then using its share
    of the cores (2 one-thread tasks ran 1.5x one two-thread task on 2 cores, bench/README.md); on a GPU one."""
    return 1 if device.startswith("cuda") else max(1, min(4, os.cpu_count() or 1))


def predict_volume(
    job: Job, scheduler: str | None = None, workers: int | None = None, overwrite: bool = False, say: Callable[[str], None] = print,
    key: str = "--scheduler", replace_stale: bool = False,
) -> Path:  # fmt: skip
    """Predict ``job.image`` into the output ``job.output``, chunk by chunk, skipping the chunks a killed run of
    the same command wrote (``workers`` None: ``default_workers``; ``key`` names ``scheduler`` in errors;
    ``replace_stale``: see ``open_output``); returns the output's path."""
    workers = workers or default_workers(job.device)
    store = get_store(job.store)
    if scheduler and not store.many_processes:
        raise SegflowError(f"{key} {scheduler}: an {store.name} output is written by one process; write Zarr or OME-Zarr on a cluster")
    predictor = cached_predictor(job.checkpoint, job.device)
    check_chunk(job.chunk, predictor.cfg.spatial_patch, job.spatial, job.halo)
    from segflow.encodings import get_encoding

    layout = job.layout(get_encoding(predictor.cfg).out_channels())  # what the network's activated output holds
    done = open_output(job, layout, fingerprint(job), overwrite, replace_stale)
    todo = [i for i in cores(job.spatial, job.chunk) if not done[i]]
    if done.any():
        say(f"{job.output}: {int(done.sum())} of {done.size} chunks were written by an earlier run; predicting the other {len(todo)}")
    import torch

    threads = torch.get_num_threads()
    if not scheduler and workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))  # the worker threads share the cores
    report = _report(done.size, say)
    try:
        run_tasks(job, todo, scheduler, workers, lambda n: report(n + done.size - len(todo)), key)
        store.finish(job.output, layout, job.voxel_size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        written = int(np.asarray(store.read(job.output, "done")[...]).sum())
        raise SegflowError(
            f"{job.output}: the disk is full ({exc.strerror}) after {written} of {done.size} chunks were written and recorded; "
            "free space, then run the same command again: it predicts only the other chunks"
        ) from None
    finally:
        torch.set_num_threads(threads)
    return Path(job.output)


def summed_confusion(job: Job, name: str = "confusion") -> np.ndarray:
    """The confusion matrix of the whole volume: the chunks' matrices ``name`` of a finished output summed (exact)."""
    matrices = get_store(job.store).read(job.output, name)
    return np.asarray(matrices[...]).reshape(-1, *matrices.shape[-2:]).sum(axis=0)
