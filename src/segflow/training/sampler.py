"""The samplers: one shuffled order per epoch and every random draw seeded from (SYSTEM.SEED, epoch, rank), split
between the processes of a distributed run by segflow itself (so that the epoch's seeds reach every rank)."""

from __future__ import annotations

import math

import numpy as np
import torch

from segflow.data.patches import PatchDataset
from segflow.runtime import distributed_rank, distributed_world


class EpochSeededSampler(torch.utils.data.Sampler):
    """Shuffles training patches, and reseeds every random draw of the epoch, from (SYSTEM.SEED, epoch).

    Lightning calls ``set_epoch`` before each epoch's iterator is made, so epoch ``e`` draws the same
    patches, augmentations, dropout masks and worker seeds whether the run went straight through or
    was killed and resumed from the checkpoint of epoch ``e - 1``. In a distributed run of ``W`` processes every
    rank takes the same permutation, padded to a multiple of ``W`` with its first patches (as PyTorch's
    ``DistributedSampler``), and keeps every ``W``-th patch from its rank on: step ``i`` of the ``W`` ranks, with
    ``TRAIN.BATCH_SIZE`` ``B`` each, trains on the patches step ``i`` of one process with batch ``W * B`` would.
    """

    def __init__(self, dataset: PatchDataset, seed: int, shuffle: bool) -> None:
        self.dataset, self.seed, self.shuffle = dataset, seed, shuffle
        self.generator = torch.Generator()  # the DataLoader's: worker seeds come from it
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed everything random for ``epoch``; in a distributed run also for this process's rank, so
        that ranks draw different patch positions and augmentations (the order stays one permutation,
        split between the ranks)."""
        self.epoch = epoch
        rank = distributed_rank()
        seed = int(np.random.SeedSequence([self.seed, epoch, rank] if rank else [self.seed, epoch]).generate_state(1)[0])
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)
        self.dataset.set_random_state(seed=seed)
        if self.dataset.transform is not None:
            self.dataset.transform.set_random_state(seed=seed)

    def __iter__(self):
        n, world = len(self.dataset), distributed_world()
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        padded = np.resize(order, math.ceil(n / world) * world)  # repeats the order's start: every rank as many steps
        return iter(padded[distributed_rank() :: world].tolist())

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / distributed_world())


class ShardSampler(torch.utils.data.Sampler):
    """The validation patches in order, each rank of a distributed run taking every ``W``-th from its rank on, none
    twice (the ranks' shares differ by at most one patch), so that the metrics, summed over the ranks, count each
    patch once. A rank left without a patch (fewer patches than ranks) takes the first one again."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _share(self) -> list[int]:
        world, rank = distributed_world(), distributed_rank()
        return list(range(rank, self.n, world)) or [0]

    def __iter__(self):
        return iter(self._share())

    def __len__(self) -> int:
        return len(self._share())
