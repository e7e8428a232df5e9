"""Prediction of volumes larger than RAM, chunk by chunk into a Zarr store, each chunk a dask task.

The output is a Zarr group beside nothing else in memory: ``probabilities`` ``(K, *spatial)`` (float16 or float32)
and, for models that give classes, ``labels`` ``(*spatial)``, both chunked like the work. A task reads the windows
of the whole image's grid that touch its chunk (``Predictor.predict(core=...)``), so the chunks put together are the
in-memory prediction with no seam, and writes whole output chunks, so tasks never write the same file. After its
chunk is written a task marks it in ``done`` (one flag per chunk, each its own Zarr chunk); a re-run of the same
command skips the chunks marked, and refuses an output made with another model or options unless told to overwrite.

The tasks run on dask: its threaded scheduler in this process by default, or a running ``dask.distributed`` cluster
(``scheduler="tcp://host:port"``), whose workers each load the model once (``cached_predictor``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import SegflowError

FORMAT = "segflow-chunked-prediction"


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
    truth: Any = None  # a LazyArray mask ``(*spatial)`` of class ids: each chunk's confusion matrix is kept
    n_classes: int = 0  # rows and columns of the confusion matrix (with ``truth``)
    # (labels, truth) of a chunk -> its (n_classes, n_classes) confusion matrix: evaluation's, handed in by the caller
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def cores(spatial: tuple[int, ...], chunk: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Chunk indices of a ``spatial`` grid cut in ``chunk``-sized blocks (the last ones smaller), in C order."""
    return list(itertools.product(*(range(-(-n // c)) for n, c in zip(spatial, chunk))))


def region(index: tuple[int, ...], spatial: tuple[int, ...], chunk: tuple[int, ...]) -> tuple[slice, ...]:
    """The spatial region of the chunk at ``index``."""
    return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunk, spatial))


def fingerprint(job: Job) -> str:
    """What decides the output's values: the checkpoint's bytes, the input's shape and dtype, the options."""
    digest = hashlib.sha256()
    with open(job.checkpoint, "rb") as f:
        for block in iter(functools.partial(f.read, 2**20), b""):
            digest.update(block)
    options = [job.image.shape, str(job.image.dtype), job.chunk, job.overlap, job.tta, job.dtype, job.labels, job.truth is not None]
    digest.update(json.dumps(options, default=str).encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def cached_predictor(checkpoint: str, device: str) -> Any:
    """The model, loaded once per process (a dask worker keeps it for all its chunks)."""
    from segflow.inference.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, device)


def predict_chunk(job: Job, index: tuple[int, ...]) -> tuple[int, ...]:
    """Predict the chunk at ``index`` of ``job``, write it and mark it done; returns ``index``."""
    import zarr

    predictor = cached_predictor(job.checkpoint, job.device)
    spatial = tuple(job.image.shape[:-1])
    core = region(index, spatial, job.chunk)
    overlap = list(job.overlap) if job.overlap is not None else None
    probs = predictor.predict(job.image, overlap=overlap, batch_size=job.batch_size, tta=job.tta, core=core, stats=job.stats)
    group = zarr.open_group(job.output, mode="r+")
    if job.labels:
        labels = predictor.labels(probs)
        group["labels"][core] = labels.astype(group["labels"].dtype, copy=False)
        if job.truth is not None:
            group["confusion"][index] = job.score(labels, np.asarray(job.truth[core]))
    group["probabilities"][(slice(None), *core)] = np.moveaxis(probs, -1, 0).astype(job.dtype, copy=False)
    group["done"][index] = 1  # last: a chunk killed part-way is predicted again
    return index


def default_chunk(patch: tuple[int, ...], spatial: tuple[int, ...], windows: int = 4) -> tuple[int, ...]:
    """``windows`` windows a side (e.g. 256^3 for 64^3 windows: 64 MiB of float32 a class), at most the image."""
    return tuple(min(windows * p, n) for p, n in zip(patch, spatial))


def check_chunk(chunk: tuple[int, ...], patch: tuple[int, ...], spatial: tuple[int, ...]) -> None:
    """A chunk holds at least one window along every axis (or the whole axis): a thinner one would predict every
    window it touches for a sliver of output, again and again."""
    if len(chunk) != len(patch) or any(c <= 0 for c in chunk):
        raise SegflowError(f"--chunk {','.join(map(str, chunk))}: give {len(patch)} positive sizes, one per spatial axis")
    if any(c < min(p, n) for c, p, n in zip(chunk, patch, spatial)):
        raise SegflowError(
            f"--chunk {','.join(map(str, chunk))}: smaller than the model's window {tuple(patch)} along an axis; each chunk "
            f"reads the windows around it, so give chunks of at least the window (e.g. {','.join(str(4 * p) for p in patch)})"
        )


def open_output(job: Job, channels: int, digest: str, overwrite: bool) -> Any:
    """The output group of ``job``: made, or the one a run with the same fingerprint left (resumed), or with
    ``overwrite`` made anew; anything else there is refused, naming what differs."""
    import zarr

    path, spatial = Path(job.output), tuple(job.image.shape[:-1])
    if path.exists() and not overwrite:
        try:
            meta = zarr.open_group(str(path), mode="r").attrs.get("segflow", {})
        except Exception:
            meta = {}
        if meta.get("format") != FORMAT:
            raise SegflowError(f"{path}: exists and is not a segflow chunked prediction; choose another output, or give --overwrite to replace it")
        if meta.get("fingerprint") != digest:
            said = {"shape": list(spatial), "chunk": list(job.chunk)}
            differs = [f"{k} {meta.get(k)} there, {v} now" for k, v in said.items() if meta.get(k) != v] or ["another model or options"]
            raise SegflowError(
                f"{path}: was predicted with {'; '.join(differs)}; re-run the command that made it to finish it, "
                "or give --overwrite to predict it anew"
            )
        return zarr.open_group(str(path), mode="r+")
    group = zarr.open_group(str(path), mode="w")
    grid = tuple(-(-n // c) for n, c in zip(spatial, job.chunk))
    group.create_array("probabilities", shape=(channels, *spatial), chunks=(channels, *job.chunk), dtype=job.dtype, fill_value=0)
    if job.labels:
        group.create_array("labels", shape=spatial, chunks=job.chunk, dtype="uint8" if channels < 256 else "uint16", fill_value=0)
    group.create_array("done", shape=grid, chunks=(1,) * len(grid), dtype="uint8", fill_value=0)
    if job.truth is not None:  # one matrix per chunk, each its own Zarr chunk: summed at the end, resumable
        n = job.n_classes
        group.create_array("confusion", shape=(*grid, n, n), chunks=(1,) * len(grid) + (n, n), dtype="int64", fill_value=0)
    group.attrs["segflow"] = {"format": FORMAT, "fingerprint": digest, "shape": list(spatial), "chunk": list(job.chunk),
                              "checkpoint": str(Path(job.checkpoint).resolve())}  # fmt: skip
    return group


def _report(total: int, say: Callable[[str], None]) -> Callable[[int], None]:
    """A progress line every ~5 % of the chunks (one per chunk when there are few)."""
    every = max(1, total // 20)
    return lambda n: say(f"chunk {n}/{total} written") if n % every == 0 or n == total else None


def run_tasks(job: Job, todo: list[tuple[int, ...]], scheduler: str | None, workers: int, said: Callable[[int], None]) -> None:
    """``predict_chunk`` of every chunk in ``todo`` on dask: the local threaded scheduler with ``workers`` threads,
    or the ``dask.distributed`` cluster at ``scheduler`` (``tcp://host:port``)."""
    import dask

    tasks = [dask.delayed(predict_chunk, pure=False)(job, index) for index in todo]
    if scheduler:
        from distributed import Client, as_completed

        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise SegflowError(f"--scheduler {scheduler}: no dask scheduler answers there ({exc}); start one, or leave --scheduler out to use this machine") from None
        with client:
            for n, future in enumerate(as_completed(client.compute(tasks)), 1):
                future.result()
                said(n)
        return
    from dask.callbacks import Callback

    done = iter(range(1, len(tasks) + 1))
    with Callback(posttask=lambda key, result, dsk, state, worker: said(next(done)) if str(key).startswith("predict_chunk") else None):
        dask.compute(*tasks, scheduler="threads", num_workers=workers)


def default_workers(device: str) -> int:
    """Chunks at once on this machine: on the CPU one per core, at most 4, each task's network then using its share
    of the cores (2 one-thread tasks ran 1.5x one two-thread task on 2 cores, bench/README.md); on a GPU one."""
    return 1 if device.startswith("cuda") else max(1, min(4, os.cpu_count() or 1))


def predict_volume(
    job: Job, scheduler: str | None = None, workers: int | None = None, overwrite: bool = False, say: Callable[[str], None] = print
) -> Path:
    """Predict ``job.image`` into the Zarr group ``job.output``, chunk by chunk, skipping the chunks a killed run of
    the same command wrote (``workers`` None: ``default_workers``); returns the output's path."""
    workers = workers or default_workers(job.device)
    spatial = tuple(job.image.shape[:-1])
    predictor = cached_predictor(job.checkpoint, job.device)
    check_chunk(job.chunk, predictor.cfg.spatial_patch, spatial)
    from segflow.encodings import get_encoding

    channels = get_encoding(predictor.cfg).out_channels()  # what the network's activated output holds
    group = open_output(job, channels, fingerprint(job), overwrite)
    done = np.asarray(group["done"][...]).astype(bool)
    todo = [i for i in cores(spatial, job.chunk) if not done[i]]
    total = done.size
    if done.any():
        say(f"{job.output}: {int(done.sum())} of {total} chunks were written by an earlier run; predicting the other {len(todo)}")
    import torch

    threads = torch.get_num_threads()
    if not scheduler and workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))  # the worker threads share the cores
    report = _report(total, say)
    try:
        run_tasks(job, todo, scheduler, workers, lambda n: report(n + total - len(todo)))
    finally:
        torch.set_num_threads(threads)
    return Path(job.output)


def summed_confusion(output: str) -> np.ndarray:
    """The confusion matrix of the whole volume: the chunks' matrices of a finished ``output`` summed (exact)."""
    import zarr

    matrices = zarr.open_group(output, mode="r")["confusion"]
    return np.asarray(matrices[...]).reshape(-1, *matrices.shape[-2:]).sum(axis=0)
