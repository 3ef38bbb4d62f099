"""Datasets as torch Datasets, and the collate function every model's training takes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from segcli.data.dataset import SegDataset


class TransformedDataset(Dataset):
    """A SegDataset whose samples go through a transform: index -> (image tensor, target dict)."""

    def __init__(self, dataset: SegDataset, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.transform(self.dataset[index])


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Images stacked into (B, 3, H, W); targets kept as a list (their instance counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
