"""Fine-tuning from library weights (locally made, served through the hub cache): new heads for the data's
classes, only pretrained layers frozen; Mask R-CNN panoptic with COCO weights alone: things and void, stable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hub_helpers import serve_torchvision
from torch import nn
from torchvision.models import detection as tvdet
from torchvision.models import segmentation as tvseg

from segcli.checkpoint import load_checkpoint, make_card, save_checkpoint
from segcli.data.synth import render_sample, synth_label_space
from segcli.models.registry import build_model
from segcli.preprocess import image_to_tensor
from segcli.services.resolve import fetch_weights
from segcli.structures import IGNORE_INDEX, LabelSpace

TWO_CLASSES = LabelSpace(["background", "shape"], isthing=[False, True])


def _two_class_batch(n: int = 2, size: int = 64, seed: int = 0):
    """Synthetic shapes reduced to two classes: background and one thing class (every shape)."""
    rng = np.random.default_rng(seed)
    samples = [render_sample("shapes", size, rng) for _ in range(n)]
    images = torch.stack([image_to_tensor(s.image) for s in samples])
    targets = []
    for s in samples:
        masks = np.stack([i.mask for i in s.instances]).astype(np.uint8)
        targets.append({"semantic": torch.from_numpy(masks.any(0).astype(np.int64)), "masks": torch.from_numpy(masks),
                        "labels": torch.ones(len(masks), dtype=torch.int64)})
    return images, targets


@pytest.fixture(scope="module")
def coco_v2_state():
    """Mask R-CNN v2 as torchvision publishes it for COCO (91 classes), with random weights."""
    torch.manual_seed(0)
    return tvdet.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()


def test_maskrcnn_v2_fine_tunes_from_coco_weights_for_two_classes(tmp_path, torch_home, monkeypatch, coco_v2_state):
    serve_torchvision(monkeypatch, tmp_path / "served", "maskrcnn_resnet50_fpn_v2", coco_v2_state)
    args = {"num_classes": 2, "thing_classes": [1], "pretrained": True}
    fetch_weights("tv_maskrcnn_resnet50_fpn_v2", args)  # what segcli train does before building
    model = build_model("tv_maskrcnn_resnet50_fpn_v2", **args, min_size=64, max_size=64)
    heads = model.net.roi_heads
    assert heads.box_predictor.cls_score.out_features == 2 and heads.mask_predictor.mask_fcn_logits.out_channels == 2
    body = model.net.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, coco_v2_state["backbone.body.layer3.0.conv1.weight"])
    frozen = {name for name, p in body.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("conv1", "bn1", "layer1")) for name in frozen)

    model.train()
    assert not body.bn1.training  # frozen layers keep their batch-norm statistics too
    before = {name: p.detach().clone() for name, p in body.named_parameters()}
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images, targets = _two_class_batch()
    for _ in range(3):
        losses = model.compute_losses(images, targets)
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = dict(body.named_parameters())
    assert all(torch.equal(after[name], before[name]) for name in frozen)
    assert not torch.equal(after["layer4.0.conv1.weight"], before["layer4.0.conv1.weight"])
    assert bool(model.semantic_trained)  # trained with semantic targets: its stuff head will be used


def test_tv_semantic_model_gets_new_classifiers(tmp_path, torch_home, monkeypatch):
    torch.manual_seed(0)
    state = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=True).state_dict()
    serve_torchvision(monkeypatch, tmp_path / "served", "deeplabv3_mobilenet_v3_large", state)
    fetch_weights("tv_deeplabv3_mobilenet_v3_large", {})
    model = build_model("tv_deeplabv3_mobilenet_v3_large", num_classes=2)
    assert model.net.classifier[-1].out_channels == 2 and model.net.aux_classifier[-1].out_channels == 2
    assert torch.equal(model.net.classifier[0].convs[0][0].weight, state["classifier.0.convs.0.0.weight"])
    images, targets = _two_class_batch()
    losses = model.train().compute_losses(images, targets)
    assert set(losses) == {"ce", "aux"}  # torchvision's recipe: 0.5 x the auxiliary head's loss
    with torch.no_grad():
        assert model.eval()(images)["semantic"].shape == (2, 2, 64, 64)


def test_maskrcnn_panoptic_with_coco_weights_is_things_and_void_on_every_load(tmp_path, coco_v2_state):
    weights = tmp_path / "coco.pth"
    torch.save(coco_v2_state, weights)
    image = image_to_tensor(render_sample("shapes", 96, np.random.default_rng(3)).image)[None]
    results = []
    for _ in range(2):
        torch.manual_seed(len(results))  # a different seed per load: nothing random may reach the output
        model = build_model("tv_maskrcnn_resnet50_fpn_v2", weights=str(weights), min_size=96, max_size=96).eval()
        model.net.roi_heads.score_thresh, model.net.roi_heads.detections_per_img = 0.0, 5
        with torch.no_grad():
            (prediction,) = model.postprocess(model(image), score_threshold=0.0, fusion_score_threshold=0.0,
                                              stuff_area=1)
        results.append(prediction)
    first, second = results
    assert first.segments and np.array_equal(first.panoptic, second.panoptic)
    things = np.zeros(first.panoptic.shape, bool)
    for inst in first.instances:
        things |= inst.mask
    assert (first.panoptic[~things] == 0).all()  # no stuff: void outside the detected things
    assert all(segment.label in model.thing_classes for segment in first.segments)
    assert (first.semantic[~things] == IGNORE_INDEX).all()


def test_maskrcnn_trained_by_segcli_uses_its_semantic_head(tmp_path):
    shapes = synth_label_space("shapes")
    torch.manual_seed(0)
    model = build_model("maskrcnn_small", num_classes=shapes.num_classes, thing_classes=shapes.thing_indices, width=8)
    rng = np.random.default_rng(0)
    sample = render_sample("shapes", 64, rng)
    images = image_to_tensor(sample.image)[None]
    targets = [{"semantic": torch.from_numpy(sample.semantic.astype(np.int64)),
                "masks": torch.from_numpy(np.stack([i.mask for i in sample.instances]).astype(np.uint8)),
                "labels": torch.tensor([i.label for i in sample.instances])}]
    with torch.no_grad():
        untrained = model.eval().postprocess(model(images), score_threshold=0.0, stuff_area=1)[0]
    assert not any(not shapes.isthing[s.label] for s in untrained.segments)  # no stuff before training

    model.train().compute_losses(images, targets)["loss_semantic"].backward()
    assert bool(model.semantic_trained)
    model_args = {"num_classes": shapes.num_classes, "thing_classes": shapes.thing_indices, "width": 8}
    card = make_card("maskrcnn_small", model_args, "panoptic", shapes)
    save_checkpoint(tmp_path / "m", model, card)
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert bool(loaded.semantic_trained)
    with torch.no_grad():
        outputs = loaded(images)
        prediction = loaded.postprocess(outputs, score_threshold=0.0, stuff_area=1)[0]
    assert np.array_equal(prediction.semantic, outputs["semantic"][0].argmax(0).numpy())  # the head's map, not void
    assert (prediction.semantic != IGNORE_INDEX).all()  # every pixel classified: stuff can fill the panoptic map


def test_checkpoints_from_before_the_flag_still_load(tmp_path):
    model = build_model("maskrcnn_small", num_classes=3, width=4)
    state = {k: v for k, v in model.state_dict().items() if k != "semantic_trained"}
    again = build_model("maskrcnn_small", num_classes=3, width=4)
    again.load_state_dict(state)
    assert bool(again.semantic_trained)
    assert isinstance(again.semantic_head, nn.Module)
