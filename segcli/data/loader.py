"""Datasets as torch Datasets, and the collate function every model's training takes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from segcli.data.dataset import SegDataset


class TransformedDataset(Dataset):
    """A SegDataset whose samples go through a transform: index -> (image tensor, target dict).

    With `cache`, each sample is read once and kept as `cache(sample)` (each worker process keeps its
    own): crop training cuts many windows from few images, and decoding them every time (a DSB image
    is one PNG per nucleus) would cost more than the training step.
    """

    def __init__(self, dataset: SegDataset, transform: Callable, cache: Callable | None = None) -> None:
        self.dataset, self.transform, self.cache = dataset, transform, cache
        self._kept: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self.cache is None:
            return self.transform(self.dataset[index])
        if index not in self._kept:
            self._kept[index] = self.cache(self.dataset[index])
        return self.transform(self._kept[index])


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Images stacked into (B, 3, H, W); targets kept as a list (their instance counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
