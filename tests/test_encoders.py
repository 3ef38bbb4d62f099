"""ImageNet encoders under the zoo's decoders: each builds, loads a torchvision ImageNet-format state dict, keeps
odd output sizes, states its feature maps; --encoder trains and records its normalisation in the card."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from hub_helpers import serve_torchvision
from typer.testing import CliRunner

from segcli.checkpoint import load_checkpoint
from segcli.cli import app
from segcli.data.synth import generate
from segcli.errors import ModelError
from segcli.models.encoders import ENCODERS, TorchvisionEncoder
from segcli.models.registry import build_model
from segcli.services.resolve import fetch_weights

FAMILIES = ("unet", "fcn", "deeplab")
# Every encoder under every decoder family, alternately its semantic and its _panoptic builder (18 builds, not 36).
CASES = [(encoder, family if (i + j) % 2 == 0 else f"{family}_panoptic")
         for i, encoder in enumerate(ENCODERS) for j, family in enumerate(FAMILIES)]


@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory):
    """encoder name -> a torchvision classifier's state dict (random weights) saved as torchvision publishes it."""
    folder, files = tmp_path_factory.mktemp("imagenet"), {}

    def get(name: str):
        if name not in files:
            torch.manual_seed(0)
            files[name] = folder / f"{name}.pth"
            torch.save(getattr(tvm, name)(weights=None).state_dict(), files[name])
        return files[name]

    return get


def _first_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(p for name, p in module.named_parameters() if name.endswith("weight"))


@pytest.mark.parametrize("encoder, model", CASES)
def test_encoder_under_decoder_loads_imagenet_weights_and_keeps_odd_sizes(encoder, model, imagenet_files):
    file = imagenet_files(encoder)
    net = build_model(model, num_classes=3, encoder=encoder, encoder_weights=str(file)).eval()
    state = torch.load(file, weights_only=True)
    first_key = "conv1.weight" if encoder.startswith("resnet") else next(k for k in state if k.endswith("weight"))
    assert torch.equal(_first_weight(net.body.encoder), state[first_key])
    assert net.mean == (0.485, 0.456, 0.406) and net.std == (0.229, 0.224, 0.225)
    with torch.no_grad():
        outputs = net(torch.randn(1, 3, 67, 93))
    assert outputs["semantic"].shape == (1, 3, 67, 93)
    if model.endswith("_panoptic"):
        assert outputs["center"].shape == (1, 1, 67, 93) and outputs["offset"].shape == (1, 2, 67, 93)
    assert torch.isfinite(outputs["semantic"]).all()


@pytest.mark.parametrize("encoder", ENCODERS)
def test_feature_maps_follow_the_stated_contract(encoder):
    net = TorchvisionEncoder(encoder, weights="none").eval()
    strides = [info.stride for info in net.feature_info]
    assert strides == sorted(strides) and strides[-1] == 32 and strides[0] in (2, 4)
    with torch.no_grad():
        features = net(torch.randn(1, 3, 67, 93))
    assert list(features) == [info.name for info in net.feature_info]
    for info in net.feature_info:
        _, channels, h, w = features[info.name].shape
        assert channels == info.channels and abs(h - 67 / info.stride) < 1 and abs(w - 93 / info.stride) < 1


def test_dilated_encoder_for_deeplab_stops_at_stride_16():
    net = TorchvisionEncoder("resnet18", weights="none", max_stride=16)
    assert [info.stride for info in net.feature_info] == [2, 4, 8, 16]
    assert build_model("deeplab", encoder="resnet18", encoder_weights="none").size_multiple == 16


def test_unknown_encoder_lists_the_available_ones():
    with pytest.raises(ModelError, match="resnet34"):
        build_model("unet", encoder="vgg11", encoder_weights="none")


def test_imagenet_weights_come_through_the_hub_cache(tmp_path, torch_home, monkeypatch):
    torch.manual_seed(1)
    state = tvm.resnet18(weights=None).state_dict()
    served = serve_torchvision(monkeypatch, tmp_path / "served", "resnet18", state)
    with pytest.raises(ModelError, match="--fetch"):  # builders never download
        build_model("unet", encoder="resnet18")
    result = CliRunner().invoke(app, ["models", "--fetch", "resnet18", "--quiet"])  # ahead of time, by encoder name
    assert result.exit_code == 0, result.output
    (path,) = fetch_weights("unet", {"encoder": "resnet18"})
    assert path == torch_home / served.url.rsplit("/", 1)[1] and path.is_file()
    net = build_model("unet", encoder="resnet18")
    assert torch.equal(net.body.encoder.blocks[0][0].weight, state["conv1.weight"])


def test_train_with_encoder_records_it_and_reloads_without_the_cache(tmp_path, torch_home, monkeypatch):
    served = serve_torchvision(monkeypatch, tmp_path / "served", "resnet18", tvm.resnet18(weights=None).state_dict())
    data = generate("shapes", tmp_path / "shapes", n=4, size=64)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--model", "unet", "--encoder", "resnet18",
                                      "--steps", "2", "--batch-size", "2", "--img-size", "64", "--out", str(run),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    for file in torch_home.iterdir():
        file.unlink()  # the checkpoint carries the encoder: no ImageNet file is needed to load it
    model, card = load_checkpoint(run / "best")
    assert card["model_args"]["encoder"] == "resnet18" and card["model_args"]["encoder_weights"] == "imagenet"
    served_file = served.url.rsplit("/", 1)[1]
    assert card["pretrained"] == {"from": "ImageNet encoder", "encoder": "resnet18", "file": served_file}
    assert card["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert isinstance(model.body.encoder, TorchvisionEncoder)
