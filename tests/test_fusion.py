"""Inference speed-ups change no prediction: BatchNorm folding and conv+ReLU fusion keep float32 logits
(1e-5), and the bfloat16 model agrees with float32 on at least 99% of pixels. That every registered model folds
every BatchNorm and keeps its outputs is checked model by model in tests/test_models.py (TestEveryModel)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segcli.data.synth import render_sample
from segcli.inference import InferenceOptions, dense_forward, predict_arrays, prepare_model
from segcli.models.blocks import Up
from segcli.models.fusion import (
    ConvReLU,
    FusedUp,
    FusionWarning,
    PairwiseMaxPool,
    can_fuse_relu,
    fast_max_pool,
    fold_batchnorm,
    fuse_conv_relu,
    unfolded_batchnorms,
)
from segcli.models.registry import build_model


def _model(name: str) -> nn.Module:
    """An eval-mode model whose BatchNorms are far from identity, so folding them has work to do."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, width=4)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.2, 0.2)
    return model.eval()


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_every_inference_path_runs_a_prepared_copy():
    # eval --data, training validation and compare call predict_arrays with the model as trained.
    model = _model("unet_panoptic")
    images = [np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)]
    fast = prepare_model(model, InferenceOptions())
    assert prepare_model(fast, InferenceOptions()) is fast  # prepared once
    raw = predict_arrays(model, None, images, "cpu", InferenceOptions(channels_last=False))
    assert _norms(model) > 0 and model.training is False  # the caller's model is left as it was
    prepared = predict_arrays(fast, None, images, "cpu")
    assert (raw[0].semantic == prepared[0].semantic).all()


def test_fusion_replaces_conv_relu_pairs():
    model = fuse_conv_relu(fold_batchnorm(_model("unet")))
    fused = [m for m in model.modules() if isinstance(m, ConvReLU)]
    if not can_fuse_relu():
        pytest.skip("this torch has no oneDNN")
    assert len(fused) == sum(isinstance(m, nn.ReLU) for m in _model("unet").modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


class _HandWired(nn.Module):
    """A block whose forward calls its convolution and norm by hand: fold_batchnorm cannot know their order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.rest = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Conv2d(4, 4, 1),
                                                                                              nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.norm(self.conv(x)))


def test_folding_says_which_batchnorms_it_could_not_fold():
    model = _HandWired().eval()
    with pytest.warns(FusionWarning, match=r"1 BatchNorm2d not folded .*: norm$"):
        folded = fold_batchnorm(model)
    assert unfolded_batchnorms(folded) == ["norm"] and unfolded_batchnorms(model) == ["norm", "rest.1"]
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(folded(x), model(x))


def test_torchvision_resnet_blocks_are_folded():
    from torchvision.models import resnet18

    model = resnet18().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionWarning)
        folded = fold_batchnorm(model)
    assert unfolded_batchnorms(model) and unfolded_batchnorms(folded) == []
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_folding_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model("unet", num_classes=2, width=4))


def _trained(name: str) -> tuple[nn.Module, list[np.ndarray]]:
    """A model trained for a few dozen steps on synthetic shapes: confident enough that rounding matters only
    near real class boundaries (an untrained model's near-constant logits would make agreement trivial)."""
    # One thread, as conftest sets: a test that ran before may have left torch with two, and the model trained
    # then differs in its last bits, enough to move the agreement.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_briefly(name)
    finally:
        torch.set_num_threads(threads)


def _train_briefly(name: str) -> tuple[nn.Module, list[np.ndarray]]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = [render_sample("shapes", 64, rng) for _ in range(8)]
    model = build_model(name, num_classes=6, width=8, **({"thing_classes": [3, 4, 5]} if "panoptic" in name else {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in samples])
    images = (images - 0.5) / 0.25
    targets = [{"semantic": torch.from_numpy(s.semantic).long(), "masks": torch.from_numpy(np.stack(
        [i.mask for i in s.instances] or [np.zeros((64, 64), bool)])), "labels": torch.tensor(
        [i.label for i in s.instances] or [0])} for s in samples]
    model.train()
    for step in range(40):
        batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
        loss = sum(model.compute_losses(images[batch], targets[batch]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_rng = np.random.default_rng(1)
    test = [render_sample("shapes", 96, test_rng).image for _ in range(2)]
    return model.eval(), test


@pytest.mark.parametrize("name", ["unet_panoptic", "deeplab"])
def test_bfloat16_agrees_with_float32_on_99_percent_of_pixels(name):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no bfloat16 support")
    model, images = _trained(name)
    card = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    reference = predict_arrays(model, card, images, "cpu")
    options = InferenceOptions(channels_last=True, dtype=torch.bfloat16)
    fast = prepare_model(model, options)
    assert next(fast.parameters()).dtype == torch.bfloat16
    for a, b in zip(reference, predict_arrays(fast, card, images, "cpu", options)):
        assert len(np.unique(a.semantic)) > 1  # a real prediction, not one class everywhere
        assert (a.semantic == b.semantic).mean() >= 0.99
        if a.panoptic is not None:
            assert ((a.panoptic > 0) == (b.panoptic > 0)).mean() >= 0.99


@pytest.mark.parametrize("name,args", [("unet", {}), ("unet", {"bilinear": False}), ("unet_contour", {})])
def test_decoder_convolutions_read_skip_and_upsampled_maps_without_concatenating(name, args):
    if not can_fuse_relu():
        pytest.skip("this torch has no oneDNN")
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, width=4, **args).eval()
    ups = sum(isinstance(m, Up) for m in model.modules())
    fast = InferenceOptions(channels_last=True)
    prepared = prepare_model(model, fast)
    assert ups > 0 and sum(isinstance(m, FusedUp) for m in prepared.modules()) == ups
    assert not any(isinstance(m, Up) for m in prepared.modules())
    x = torch.randn(1, 3, 37, 45)  # odd sides: the upsampled map is aligned to the skip's grid first
    reference = dense_forward(model, x, InferenceOptions(channels_last=False))
    for key, value in dense_forward(prepared, x, fast).items():
        torch.testing.assert_close(value, reference[key], atol=1e-5, rtol=1e-5)
    x = torch.randn(1, 3, 32, 48)
    with torch.enable_grad():  # outside inference (autograd), the plain concatenation runs: the same outputs
        for key, value in prepared(x).items():
            torch.testing.assert_close(value, model(x)[key], atol=1e-5, rtol=1e-5)


def test_max_pooling_as_elementwise_maxima_gives_the_same_values():
    model = _model("unet")
    prepared = prepare_model(model, InferenceOptions(channels_last=True))
    assert not any(isinstance(m, nn.MaxPool2d) for m in prepared.modules())
    assert sum(isinstance(m, PairwiseMaxPool) for m in prepared.modules()) == \
        sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) > 0
    pool = PairwiseMaxPool()
    for shape in [(1, 4, 8, 8), (2, 3, 7, 9)]:  # odd sides lose their last row / column, as torch's pooling does
        x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            assert torch.equal(pool(x), F.max_pool2d(x, 2))
    kept = fast_max_pool(nn.Sequential(nn.MaxPool2d(3, stride=2), nn.MaxPool2d(2, ceil_mode=True)))
    assert all(isinstance(m, nn.MaxPool2d) for m in kept)  # other geometries are left as they are

