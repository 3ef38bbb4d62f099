"""torchvision weights: from --weights FILE or the hub cache, never the network; outputs equal torchvision's."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch
from torchvision.models import segmentation as tvseg

from segcli.errors import ModelError
from segcli.models.pretrained import hub_checkpoint_path, pretrained_state_dict
from segcli.models.registry import build_model


def _reference(builder, **kwargs):
    torch.manual_seed(0)
    return builder(weights=None, weights_backbone=None, num_classes=21, **kwargs).eval()


@pytest.mark.parametrize(
    "name, builder, kwargs",
    [("tv_lraspp_mobilenet_v3_large", tvseg.lraspp_mobilenet_v3_large, {}),
     ("tv_deeplabv3_mobilenet_v3_large", tvseg.deeplabv3_mobilenet_v3_large, {"aux_loss": True})],
)
def test_weights_file_gives_torchvision_outputs(tmp_path, name, builder, kwargs):
    reference = _reference(builder, **kwargs)
    weights = tmp_path / "state.pth"
    torch.save(reference.state_dict(), weights)
    model = build_model(name, weights=str(weights)).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(images)["semantic"], reference(images)["out"], atol=1e-6)
    assert model.class_names[0] == "__background__" and len(model.class_names) == 21
    assert model.mean == (0.485, 0.456, 0.406)


def test_missing_cache_file_names_file_place_and_url(hub_dir):
    with pytest.raises(ModelError) as error:
        build_model("tv_lraspp_mobilenet_v3_large")
    message = str(error.value)
    expected = hub_checkpoint_path(tvseg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.url)
    assert str(expected) in message and "https://download.pytorch.org/models/" in message and "--weights" in message


def test_cache_file_is_hash_checked(hub_dir):
    url = tvseg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.url
    path = hub_checkpoint_path(url)
    path.parent.mkdir(parents=True)
    torch.save(_reference(tvseg.lraspp_mobilenet_v3_large).state_dict(), path)
    with pytest.raises(ModelError, match="SHA-256"):
        build_model("tv_lraspp_mobilenet_v3_large")


def test_cache_file_with_matching_hash_loads(hub_dir, tmp_path):
    state = {"w": torch.arange(4.0)}
    scratch = tmp_path / "x.pth"
    torch.save(state, scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()[:8]
    fake_enum = SimpleNamespace(url=f"https://example.invalid/models/thing-{digest}.pth")
    target = hub_checkpoint_path(fake_enum.url)
    target.parent.mkdir(parents=True)
    target.write_bytes(scratch.read_bytes())
    assert torch.equal(pretrained_state_dict(fake_enum)["w"], state["w"])


def test_weights_that_do_not_fit_are_refused(tmp_path):
    weights = tmp_path / "wrong.pth"
    torch.save({"not.a.layer": torch.zeros(1)}, weights)
    with pytest.raises(ModelError, match="do not fit"):
        build_model("tv_lraspp_mobilenet_v3_large", weights=str(weights))
