"""How far a bottom-up panoptic model gets on `segcli data synth --kind shapes`, trained on the CPU.

A minimal loop (AdamW, one-cycle schedule, horizontal flips) over the same samples that
`segcli data synth --kind shapes --n N --size S --seed 0` writes (the last quarter is the
validation split), calling only the model contract: `compute_losses`, `forward`, `postprocess`.
PQ is segcli's panopticapi-exact PQ on the validation split.

    .venv/bin/python -m benchmarks.train_panoptic_synth --model unet_panoptic --steps 3000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from segcli.data.synth import render_sample, synth_label_space
from segcli.models.base import image_to_tensor
from segcli.models.registry import build_model
from segcli.services.evaluate import score_panoptic
from segcli.structures import Sample


def contract_target(sample: Sample) -> dict[str, torch.Tensor]:
    """A synthetic sample as the model contract's target dict."""
    h, w = sample.semantic.shape
    masks = np.stack([inst.mask for inst in sample.instances]) if sample.instances else np.zeros((0, h, w), bool)
    return {"semantic": torch.from_numpy(sample.semantic.astype(np.int64)), "masks": torch.from_numpy(masks),
            "labels": torch.tensor([inst.label for inst in sample.instances], dtype=torch.int64)}


def flip(target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"semantic": target["semantic"].flip(-1), "masks": target["masks"].flip(-1), "labels": target["labels"]}


def validation_pq(model: torch.nn.Module, samples: list[Sample], label_space, batch: int = 16) -> dict:
    model.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            images = torch.stack([image_to_tensor(s.image) for s in samples[start : start + batch]])
            predictions += model.postprocess(model(images))
    model.train()
    return score_panoptic(list(zip(samples, predictions)), label_space)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet_panoptic")
    parser.add_argument("--n", type=int, default=800, help="images generated; the last quarter is validation")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--evals", type=int, default=6, help="PQ evaluations during the run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    label_space = synth_label_space("shapes")
    rng = np.random.default_rng(0)  # as `segcli data synth --seed 0`
    samples = [render_sample("shapes", args.size, rng, name=f"shapes_{i:04d}") for i in range(args.n)]
    n_val = max(1, round(args.n * 0.25))
    train, val = samples[:-n_val], samples[-n_val:]
    images = torch.stack([image_to_tensor(s.image) for s in train])
    targets = [contract_target(s) for s in train]

    model = build_model(args.model, num_classes=label_space.num_classes, thing_classes=label_space.thing_indices,
                        width=args.width).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    untrained = validation_pq(model, val, label_space)
    print(json.dumps({"step": 0, "pq": round(untrained["pq"], 4)}), flush=True)
    start, order = time.time(), np.random.default_rng(1)
    for step in range(1, args.steps + 1):
        pick = order.choice(len(train), args.batch, replace=False)
        batch, batch_targets = images[pick], [targets[i] for i in pick]
        if step % 2:
            batch, batch_targets = batch.flip(-1), [flip(t) for t in batch_targets]
        losses = model.compute_losses(batch, batch_targets)
        optimiser.zero_grad()
        sum(losses.values()).backward()
        optimiser.step()
        schedule.step()
        if step % max(1, args.steps // args.evals) == 0 or step == args.steps:
            result = validation_pq(model, val, label_space)
            print(json.dumps({"step": step, "seconds": round(time.time() - start), "pq": round(result["pq"], 4),
                              "pq_things": round(result["things"]["pq"], 4), "pq_stuff": round(result["stuff"]["pq"], 4),
                              "losses": {k: round(v.item(), 4) for k, v in losses.items()}}), flush=True)


if __name__ == "__main__":
    main()
