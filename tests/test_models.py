"""Every registered model builds, runs forward and backward, and the course's approaches learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.data.synth import render_sample, synth_label_space
from segcli.models.registry import build_model, list_models
from segcli.preprocess import image_to_tensor

SEMANTIC_APPROACHES = ["sliding", "fullres", "fcn", "unet", "deeplab"]


def _build(name: str, num_classes: int = 3):
    kwargs = {"num_classes": num_classes}
    if name.startswith("tv_"):
        kwargs["pretrained"] = False
    return build_model(name, **kwargs)


@pytest.mark.parametrize("name", [e.name for e in list_models("semantic")])
def test_forward_backward_shapes_and_no_nans(name):
    torch.manual_seed(0)
    model = _build(name).train()
    images = torch.randn(2, 3, 64, 64)
    outputs = model(images)
    assert outputs["semantic"].shape == (2, 3, 64, 64)
    targets = [{"semantic": torch.randint(0, 3, (64, 64))} for _ in range(2)]
    loss = sum(model.compute_losses(images, targets).values())
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    predictions = model.postprocess(model(images[:1]))
    assert predictions[0].semantic.shape == (64, 64) and predictions[0].semantic.dtype == np.uint8


def _synthetic_batch(n: int = 4, size: int = 64):
    rng = np.random.default_rng(0)
    samples = [render_sample("shapes", size, rng) for _ in range(n)]
    images = torch.stack([image_to_tensor(s.image) for s in samples])
    targets = [{"semantic": torch.from_numpy(s.semantic.astype(np.int64))} for s in samples]
    return images, targets


@pytest.mark.parametrize("name", SEMANTIC_APPROACHES)
def test_training_reduces_the_loss(name):
    torch.manual_seed(0)
    images, targets = _synthetic_batch()
    model = build_model(name, num_classes=synth_label_space("shapes").num_classes, width=8).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss_now() -> float:
        torch.manual_seed(1)  # the sliding window samples windows: compare on the same ones
        with torch.no_grad():
            return float(sum(model.compute_losses(images, targets).values()))

    before = loss_now()
    for _ in range(15):
        optimiser.zero_grad()
        sum(model.compute_losses(images, targets).values()).backward()
        optimiser.step()
    assert loss_now() < 0.8 * before


def test_sliding_dense_training_is_the_loss_over_every_window():
    torch.manual_seed(0)
    model = build_model("sliding", num_classes=3, width=4, patch=7).eval()
    images = torch.randn(2, 3, 12, 10)
    targets = [{"semantic": torch.randint(0, 3, (12, 10))} for _ in range(2)]
    dense = model.compute_losses(images, targets)["ce"]
    model.inference = "naive"  # every window cut out and classified on its own
    naive_logits = model(images)["semantic"]
    expected = torch.nn.functional.cross_entropy(naive_logits, torch.stack([t["semantic"] for t in targets]))
    assert torch.allclose(dense, expected, atol=1e-5) and model.inference == "naive"
    windows = build_model("sliding", num_classes=3, width=4, patch=7, training="windows")
    assert windows.compute_losses(images, targets)["ce"].item() > 0
    with pytest.raises(ValueError):
        build_model("sliding", training="sometimes")


def test_sliding_naive_and_dense_agree():
    torch.manual_seed(0)
    model = build_model("sliding", num_classes=4, width=8, patch=12).eval()
    for shape in [(1, 3, 20, 27), (2, 3, 13, 9)]:
        images = torch.randn(*shape)
        with torch.no_grad():
            model.inference = "dense"
            dense = model(images)["semantic"]
            model.inference = "naive"
            naive = model(images)["semantic"]
        assert dense.shape == naive.shape == (shape[0], 4, *shape[2:])
        assert (dense - naive).abs().max() < 1e-4


def test_sliding_sees_only_its_window():
    model = build_model("sliding", num_classes=2, width=4, patch=8).eval()
    images = torch.randn(1, 3, 32, 32)
    changed = images.clone()
    changed[..., 20:, :] += 5.0  # far below pixel (4, 4)'s window
    with torch.no_grad():
        a, b = model(images)["semantic"], model(changed)["semantic"]
    assert torch.equal(a[..., :8, :], b[..., :8, :]) and not torch.equal(a, b)


def test_bodies_report_their_shape():
    from segcli.models.bodies import build_body

    for approach, stride in [("fullres", 1), ("fcn", 8), ("unet", 1), ("deeplab", 4)]:
        body = build_body(approach, width=8)
        out = body(torch.randn(1, 3, 64, 64))
        assert out.shape == (1, body.out_channels, 64 // stride, 64 // stride) and body.out_stride == stride


def test_unet_upsampling_gets_its_gradient_in_channels_last_and_the_gradients_stay_the_same(monkeypatch):
    import segcli.models.blocks as blocks

    torch.manual_seed(0)
    up = blocks.Up(16, 8, 8).train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    skip = torch.randn(2, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    seen = []
    up.up.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_out[0]))

    def gradients() -> list[torch.Tensor]:
        x.grad = None
        up.zero_grad()
        up(x, skip).square().sum().backward()
        return [x.grad.clone(), *(p.grad.clone() for p in up.parameters())]

    dense = gradients()
    # The concatenation hands the upsampling a channel slice of its gradient; it arrives copied to channels-last.
    assert seen[-1].is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(blocks._DenseGrad, "apply", staticmethod(lambda t: t))
    sliced = gradients()
    assert not seen[-1].is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(a, b) for a, b in zip(dense, sliced))


def test_few_channel_maps_are_upsampled_as_float32_nchw_and_many_channel_maps_keep_their_dtype():
    import torch.nn.functional as F

    from segcli.models.blocks import FEW_CHANNELS, upsample_maps

    torch.manual_seed(0)
    scores = torch.randn(1, 3, 16, 16).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    up = upsample_maps(scores, (128, 128))
    assert up.dtype == torch.float32 and up.is_contiguous() and up.shape == (1, 3, 128, 128)
    expected = F.interpolate(scores.float(), size=(128, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, expected)  # the same maps, computed from the bfloat16 values without rounding again
    many = torch.randn(1, FEW_CHANNELS * 2, 16, 16).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    assert upsample_maps(many, (32, 32)).dtype == torch.bfloat16  # channels-last is the fast path there


@pytest.mark.parametrize("name", ["fcn", "deeplab"])
def test_strided_models_prepared_in_bfloat16_give_float32_scores_at_full_size(name):
    from segcli.inference import InferenceOptions, dense_forward, prepare_model

    model = build_model(name, num_classes=3, width=8).eval()
    options = InferenceOptions(dtype=torch.bfloat16, channels_last=True)
    x = torch.randn(1, 3, 64, 64)
    prepared = prepare_model(model, options)
    with torch.inference_mode():
        raw = prepared(x.to(torch.bfloat16, memory_format=torch.channels_last))["semantic"]
        exact = model(x)["semantic"]
    assert raw.dtype == torch.float32 and raw.shape == exact.shape == (1, 3, 64, 64)  # upsampled from float32 maps
    scores = dense_forward(prepared, x, options)["semantic"]
    assert (scores.argmax(1) == exact.argmax(1)).float().mean() > 0.95
