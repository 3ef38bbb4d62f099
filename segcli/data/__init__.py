"""Datasets: readers for every supported format, synthetic data, transforms and loaders.

Layers: `load` (load_dataset, format detection) -> one reader per format -> `dataset`, `coco_json`, `classes`
(the shared types and helpers), so no reader imports the entry point.
"""

from segcli.data.dataset import SegDataset, check_dataset
from segcli.data.load import load_dataset

__all__ = ["SegDataset", "check_dataset", "load_dataset"]
