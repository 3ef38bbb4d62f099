"""Datasets: readers for every supported format, synthetic data, transforms and loaders."""

from segcli.data.dataset import SegDataset, check_dataset, load_dataset

__all__ = ["SegDataset", "check_dataset", "load_dataset"]
