"""The epoch sampler: one shuffled order per epoch and every random draw seeded from (SYSTEM.SEED, epoch, rank)."""

from __future__ import annotations

import numpy as np
import torch

from segflow.data.patches import PatchDataset
from segflow.runtime import distributed_rank


class EpochSeededSampler(torch.utils.data.Sampler):
    """Shuffles training patches, and reseeds every random draw of the epoch, from (SYSTEM.SEED, epoch).

    Lightning calls ``set_epoch`` before each epoch's iterator is made, so epoch ``e`` draws the same
    patches, augmentations, dropout masks and worker seeds whether the run went straight through or
    was killed and resumed from the checkpoint of epoch ``e - 1``.
    """

    def __init__(self, dataset: PatchDataset, seed: int, shuffle: bool) -> None:
        self.dataset, self.seed, self.shuffle = dataset, seed, shuffle
        self.generator = torch.Generator()  # the DataLoader's: worker seeds come from it
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed everything random for ``epoch``; in a distributed run also for this process's rank, so
        that ranks draw different patch positions and augmentations (the order stays one permutation,
        which Lightning's distributed wrapper splits between the ranks)."""
        self.epoch = epoch
        rank = distributed_rank()
        seed = int(np.random.SeedSequence([self.seed, epoch, rank] if rank else [self.seed, epoch]).generate_state(1)[0])
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)
        self.dataset.set_random_state(seed=seed)
        if self.dataset.transform is not None:
            self.dataset.transform.set_random_state(seed=seed)

    def __iter__(self):
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        return iter(order.tolist())

    def __len__(self) -> int:
        return len(self.dataset)
