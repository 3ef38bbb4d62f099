"""Reproducible randomness: seeding, the generators' state for checkpoints, per-epoch loader seeds.

A resumed run equals an uninterrupted one because every random stream is either saved with the
checkpoint (the global generators, for what the model draws) or derived from (seed, epoch, rank) alone
(the loader's sample order) or from (seed, epoch, position, rank) (each sample's augmentation, whatever
process loads it).
"""

from __future__ import annotations

import ast
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global generators (augmentation draws from them); the loader's is reseeded per epoch instead."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(state["python"]))


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The loader generator's seed for one epoch: its sample order and worker seeds depend on (seed, epoch, rank)
    alone, so a resumed run replays any epoch without knowing how far the generator had advanced."""
    # Single-process runs: (seed, epoch), as measured in docs.
    entropy = [seed % 2**32, epoch] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def sample_seed(seed: int, epoch: int, position: int, rank: int = 0) -> int:
    """The seed of one sample's augmentation: the `position`-th sample of `epoch` on `rank`."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, position, rank]).generate_state(1)[0])
