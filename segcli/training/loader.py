"""Datasets as torch Datasets, the sampler that seeds every sample, and the collate function every model's
training takes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from segcli.data.dataset import SegDataset
from segcli.training.seeding import sample_seed, seed_everything

CACHE_SHARE = 0.25  # of the memory available at start, split between the processes that load data


def default_workers() -> int:
    """Data-loading processes when --workers is not given: one per two cores (at most 4), so the step keeps its
    threads; on this 2-core machine one process decodes and augments while the main one trains."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def quiet_when_orphaned(_worker_id: int) -> None:
    """DataLoader worker set-up (`worker_init_fn`). A worker hands each batch's tensors to the main process over a
    connection its resource-sharer thread serves; when the main process stops mid-handshake (Ctrl-C), that thread
    reports the broken connection through `sys.excepthook` as a traceback on the user's terminal, under the one-line
    "interrupted" message (1 in 12 interrupted runs here). A lost connection to the main process is no error of the
    worker's; other exceptions are still reported."""
    report = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if not issubclass(kind, (ConnectionError, EOFError)):
            report(kind, value, traceback)

    sys.excepthook = hook


def cache_budget(processes: int) -> int:
    """Bytes each loading process may keep decoded samples in."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 2 << 30
    return int(available * CACHE_SHARE / max(1, processes))


class SeededSampler(Sampler):
    """Yields (index, seed): every sample's augmentation is drawn from its own seed, a function of (seed, epoch,
    position in the epoch, rank) alone. So a run is the same with any number of worker processes, workers can
    persist across epochs (keeping their decoded samples), and a resumed run starts at its position directly."""

    def __init__(self, sampler: Sampler, seed: int, rank: int = 0) -> None:
        self.sampler, self.seed, self.rank = sampler, seed, rank
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int = 0) -> None:
        """The next pass is `epoch`, without its first `skip` samples (already trained before a resume)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index, sample_seed(self.seed, self.epoch, position, self.rank)


class TransformedDataset(Dataset):
    """A SegDataset whose samples go through a transform: index or (index, seed) -> (image tensor, target dict).

    With `cache`, each sample is read once and kept as `cache(sample)` while the process's kept samples stay
    under `budget` bytes (each worker process keeps its own, and workers persist across epochs): decoding
    a PNG (a DSB image is one PNG per nucleus) costs more than augmenting it, and epochs repeat the images.
    """

    def __init__(self, dataset: SegDataset, transform: Callable, cache: Callable | None = None,
                 budget: int | None = None) -> None:
        self.dataset, self.transform, self.cache, self.budget = dataset, transform, cache, budget
        self._kept: dict[int, object] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]):
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample = self._sample(index)
        if seed is not None:
            seed_everything(seed)  # the transform draws from the global generators
        return self.transform(sample)

    def _sample(self, index: int):
        if self.cache is None:
            return self.dataset[index]
        if index in self._kept:
            return self._kept[index]
        sample = self.cache(self.dataset[index])
        size = _nbytes(sample)
        if self.budget is None or self._bytes + size <= self.budget:
            self._kept[index] = sample
            self._bytes += size
        return sample


def _nbytes(sample) -> int:
    """The arrays a kept sample holds: a Sample's or a Packed's, with a Sample's instance masks."""
    arrays = [v for v in vars(sample).values() if isinstance(v, np.ndarray)]
    arrays += [inst.mask for inst in getattr(sample, "instances", None) or [] if isinstance(inst.mask, np.ndarray)]
    return sum(a.nbytes for a in arrays)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Images stacked into (B, 3, H, W); targets kept as a list (their instance counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
