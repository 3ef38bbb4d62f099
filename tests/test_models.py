"""Every registered model through the same checks (as segmentation_models_pytorch's tests/models/base.py), then the
course's approaches one by one: the sliding window run naively and densely, bodies, upsampling."""

from __future__ import annotations

import copy
import inspect
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from segcli.checkpoint import make_card, save_checkpoint
from segcli.data.synth import render_sample, synth_label_space
from segcli.inference import InferenceOptions, dense_forward, predict_arrays, prepare_model
from segcli.models.base import SegModel
from segcli.models.bodies import build_body, list_bodies
from segcli.models.fusion import FusionWarning, unfolded_batchnorms
from segcli.models.registry import build_model, get_model_entry, list_models
from segcli.preprocess import image_to_tensor
from segcli.structures import Mode

SPACE = synth_label_space("shapes")  # stuff and things: every mode has something to find
ODD = (37, 45)  # neither side a multiple of any stride: padded, then cropped back


def tiny_options(name: str, width: int = 4) -> dict:
    """Builder options for a small, fast model: 4 channels of width, no pretrained weights, 64 px detector inputs."""
    accepted = inspect.signature(get_model_entry(name).builder).parameters
    wanted = {"num_classes": SPACE.num_classes, "width": width, "pretrained": False, "min_size": 64, "max_size": 64,
              "thing_classes": SPACE.thing_indices}
    return {k: v for k, v in wanted.items() if k in accepted}


@pytest.fixture(scope="module", params=[entry.name for entry in list_models()])
def zoo(request) -> tuple[str, SegModel]:
    """(name, model) of every registered model, built once per module; each test works on its own copy."""
    torch.manual_seed(0)
    return request.param, build_model(request.param, **tiny_options(request.param))


def _batch(n: int = 4, size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """Synthetic shapes with every target a model may read: the semantic map, instance masks and labels."""
    rng = np.random.default_rng(0)
    samples = [render_sample("shapes", size, rng) for _ in range(n)]
    images = torch.stack([image_to_tensor(s.image) for s in samples])
    targets = [{"semantic": torch.from_numpy(s.semantic.astype(np.int64)),
                "masks": torch.from_numpy(np.stack([i.mask for i in s.instances] or [np.zeros((size, size), bool)])),
                "labels": torch.tensor([i.label for i in s.instances] or [0])} for s in samples]
    return images, targets


def _far_from_identity(model: nn.Module) -> nn.Module:
    """An eval-mode copy whose BatchNorms are far from identity, so folding them has work to do."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for norm in model.modules():
            if isinstance(norm, nn.BatchNorm2d):
                norm.running_mean.uniform_(-0.5, 0.5, generator=generator)
                norm.running_var.uniform_(0.5, 2.0, generator=generator)
                norm.weight.uniform_(0.5, 1.5, generator=generator)
                norm.bias.uniform_(-0.2, 0.2, generator=generator)
    return model.eval()


class TestEveryModel:
    """The contract, shapes, gradients, export, fusion and learning of each registered model, tiny and at 64 px."""

    def test_follows_the_contract(self, zoo):
        name, model = zoo
        assert isinstance(model, SegModel) and set(model.modes) == set(get_model_entry(name).modes)
        assert model.size_multiple >= 1 and not model.prepared
        assert (model.mean is None) == (model.std is None)

    def test_predicts_every_mode_at_odd_sizes(self, zoo):
        _, model = zoo
        model = copy.deepcopy(model).eval()
        image = np.random.default_rng(0).integers(0, 255, (*ODD, 3), dtype=np.uint8)
        if model.dense:
            outputs = dense_forward(model, image_to_tensor(image)[None], InferenceOptions(channels_last=False))
            assert all(value.shape[-2:] == ODD for value in outputs.values())
        for mode in model.modes:
            prediction = predict_arrays(model, None, [image], "cpu", InferenceOptions(mode=Mode(mode)))[0]
            if mode == Mode.SEMANTIC:
                assert prediction.semantic.shape == ODD and prediction.semantic.dtype == np.uint8
            elif mode == Mode.INSTANCE:
                assert all(instance.mask.shape == ODD for instance in prediction.instances)
            else:
                assert prediction.panoptic.shape == ODD

    def test_forward_and_backward_give_finite_losses_and_gradients(self, zoo):
        _, model = zoo
        model = copy.deepcopy(model).train()
        images, targets = _batch(2)
        losses = model.compute_losses(images, targets)
        total = sum(losses.values())
        total.backward()
        assert losses and all(torch.isfinite(v) for v in losses.values())
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_every_batchnorm_is_folded_and_the_outputs_stay(self, zoo):
        name, model = zoo
        model = _far_from_identity(model)
        fast = InferenceOptions(channels_last=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FusionWarning)  # a BatchNorm left unfolded fails here, by name
            prepared = prepare_model(model, fast)  # folds (fusion.fold_batchnorm), then fuses
        assert unfolded_batchnorms(model) and unfolded_batchnorms(prepared) == []
        x = torch.randn(2 if model.dense else 1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
        if model.dense:
            reference = dense_forward(model, x, InferenceOptions(channels_last=False))
            outputs = dense_forward(prepared, x, fast)
        else:  # detections come from thresholds on these scores; the class maps must agree
            with torch.inference_mode():
                reference, outputs = {"semantic": model(x)["semantic"]}, {"semantic": prepared(x)["semantic"]}
        for key, value in reference.items():
            torch.testing.assert_close(outputs[key], value, atol=1e-4, rtol=1e-4, msg=f"{name} {key}")

    def test_exports_to_onnx_with_the_same_outputs(self, zoo, tmp_path):
        name, model = zoo
        ort = pytest.importorskip("onnxruntime")
        from segcli.services.export import export_onnx

        if not model.dense:
            pytest.skip(f"{name} detects instances: its post-processing is not one ONNX graph (export refuses it)")
        args = tiny_options(name)
        weights = save_checkpoint(tmp_path / name, model, make_card(name, args, str(model.modes[-1]), SPACE))
        session = ort.InferenceSession(str(export_onnx(weights, tmp_path / "m.onnx", size=64)))
        x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))  # another size than traced
        with torch.inference_mode():
            expected = copy.deepcopy(model).eval()(x)
        got = session.run(None, {"images": x.numpy()})
        for key, value in zip(sorted(expected), got):
            np.testing.assert_allclose(value, expected[key].numpy(), atol=1e-4, rtol=1e-3, err_msg=f"{name} {key}")

    def test_a_few_steps_of_training_lower_the_loss(self, zoo):
        name, _ = zoo
        if "pretrained" in inspect.signature(get_model_entry(name).builder).parameters:
            pytest.skip(f"{name} is fine-tuned from published weights (not here): from scratch its ResNet-50 would "
                        "take minutes to move, and its losses and gradients are checked above")
        torch.manual_seed(0)
        model = build_model(name, **tiny_options(name, width=8)).train()  # 4 channels learn too slowly to tell
        images, targets = _batch(4)
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)

        def loss_now() -> float:
            torch.manual_seed(1)  # models that sample (windows, proposals): the same draws each time
            with torch.no_grad():
                return float(sum(model.compute_losses(images, targets).values()))

        before = loss_now()
        for _ in range(15):
            optimiser.zero_grad()
            sum(model.compute_losses(images, targets).values()).backward()
            optimiser.step()
        assert loss_now() < 0.8 * before


# ---------------------------------------------------------------- the course's approaches


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


@pytest.mark.parametrize("name", [entry.name for entry in list_bodies()])
def test_bodies_give_the_shape_they_declare(name):
    body = build_body(name, width=8)
    out = body(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, body.out_channels, 64 // body.out_stride, 64 // body.out_stride)
    assert body.size_multiple % body.out_stride == 0


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
