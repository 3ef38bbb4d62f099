"""PyTorch's own distributed engine, as `torchrun` sets it up (WORLD_SIZE, RANK, LOCAL_RANK in the environment).

gloo on CPUs, NCCL on GPUs. A barrier right before destroy_process_group() keeps gloo from aborting
at exit (it did about one launch in three without it, on PyTorch 2.14 with 2 CPU processes).
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_rank() -> int:
    """This process's rank as torchrun announced it, readable before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun prepared; returns this rank's device."""
    if world_size() <= 1 or is_distributed():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return device


def teardown(clean: bool = True) -> None:
    """Leave the process group; after a failure skip the barrier, which the other ranks may never reach."""
    if is_distributed():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_objects(obj) -> list:
    """Every rank's object, on every rank (a one-element list when not distributed)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart: each rank sees its own batches)."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, in state_dict order: equal digests mean equal weights."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
