"""The trainer's AdamW: the fused kernel, and optimiser state restored in the parameters' memory layout."""

from __future__ import annotations

import torch

from segcli.models.registry import build_model
from segcli.training.trainer import TRAINING_LAYOUT, adamw, load_optimizer_state


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", num_classes=3, width=8, depth=2).to(memory_format=TRAINING_LAYOUT).train()


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        images = torch.randn(2, 3, 32, 32).contiguous(memory_format=TRAINING_LAYOUT)
        targets = [{"semantic": torch.randint(0, 3, (32, 32))} for _ in range(2)]
        loss = sum(model.compute_losses(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def test_the_trainer_uses_the_fused_kernel_on_cpu_and_it_matches_the_loop_kernel():
    fused_model, loop_model = _model(), _model()
    optimizer = adamw(fused_model, 1e-2, 1e-4)
    assert optimizer.defaults["fused"]
    _train(fused_model, optimizer, 3)
    _train(loop_model, torch.optim.AdamW(loop_model.parameters(), lr=1e-2, weight_decay=1e-4, foreach=True), 3)
    for fused, loop in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(fused, loop, rtol=1e-4, atol=1e-5)


def test_loaded_moments_take_their_parameters_layout_and_training_continues_exactly():
    model = _model()
    optimizer = adamw(model, 1e-2, 0.0)
    _train(model, optimizer, 2)
    # A checkpoint stores contiguous (NCHW) tensors, as segcli.checkpoint writes them.
    saved = optimizer.state_dict()
    saved["state"] = {k: {name: v.clone(memory_format=torch.contiguous_format) for name, v in s.items()}
                      for k, s in saved["state"].items()}
    resumed = _model()
    resumed.load_state_dict(model.state_dict())
    restored = adamw(resumed, 1e-2, 0.0)
    load_optimizer_state(restored, saved)
    four_d = [p for p in resumed.parameters() if p.dim() == 4]
    assert four_d and not all(p.is_contiguous() for p in four_d)  # channels-last weights: the case that matters
    for param in resumed.parameters():
        for moment in ("exp_avg", "exp_avg_sq"):
            assert restored.state[param][moment].stride() == param.stride()
    _train(model, optimizer, 2)
    _train(resumed, restored, 2)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
