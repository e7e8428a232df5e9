"""The test phase on every process of a distributed (DDP) run: each predicts its share of the images, and rank 0
gathers the scores (BiaPy's and nnU-Net's runs predict everything on one process, or split by hand)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

from segflow.config.schema import Config
from segflow.evaluation.metrics import Scorer
from segflow.runtime import distributed_rank, distributed_world

T = TypeVar("T")


def share(items: Sequence[T]) -> list[T]:
    """This process's items, every Nth from its rank (all of them outside a distributed run)."""
    return list(items[distributed_rank() :: distributed_world()])


def gather(modes: dict[str, Scorer], order: Sequence[str], cfg: Config) -> dict[str, Scorer] | None:
    """Every process's scorers merged on rank 0 (``None`` on the others): per-image rows in ``order`` (the image
    names, as one process would have scored them), confusion matrices and error sums added, exactly. ``cfg``: the
    model's config, which the scorers were made with."""
    if distributed_world() == 1:
        return modes
    states = {mode: (s.rows, s.conf, s.errors) for mode, s in modes.items()}
    everyone: list[dict | None] = [None] * distributed_world()
    torch.distributed.all_gather_object(everyone, states)  # gloo and NCCL alike; small: rows and matrices
    if distributed_rank() != 0:
        return None
    merged: dict[str, Scorer] = {}
    for part in everyone:
        for mode, (rows, conf, errors) in (part or {}).items():
            scorer = merged.setdefault(mode, Scorer(cfg))
            scorer.rows, scorer.conf, scorer.errors = scorer.rows + rows, scorer.conf + conf, scorer.errors + errors
    place = {name: i for i, name in enumerate(order)}
    for scorer in merged.values():
        scorer.rows.sort(key=lambda row: place.get(row["image"], -1))  # stable: the patches' rows keep their order
    return merged
