"""Mask R-CNN: maskrcnn_small trains on the CPU and predicts typed results; torchvision's models load offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN, MaskRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_Weights
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from segcli.checkpoint import load_checkpoint, make_card, save_checkpoint
from segcli.data.synth import render_sample, synth_label_space
from segcli.errors import ModelError
from segcli.models.pretrained import hub_checkpoint_path
from segcli.models.registry import build_model
from segcli.preprocess import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor
from segcli.structures import Prediction

SHAPES = synth_label_space("shapes")


def _batch(n: int = 4, size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    samples = [render_sample("shapes", size, rng) for _ in range(n)]
    images = torch.stack([image_to_tensor(s.image) for s in samples])
    targets = [{"semantic": torch.from_numpy(s.semantic.astype(np.int64)),
                "masks": torch.from_numpy(np.stack([i.mask for i in s.instances]).astype(np.uint8)),
                "labels": torch.tensor([i.label for i in s.instances], dtype=torch.int64)} for s in samples]
    return images, targets


def test_maskrcnn_small_trains_on_cpu_and_predicts_instances(tmp_path):
    torch.manual_seed(0)
    images, targets = _batch()
    # A stuff "instance" in the targets is not something Mask R-CNN can learn: it must be ignored, not crash.
    targets[0] = {**targets[0], "masks": torch.cat([targets[0]["masks"], torch.ones(1, 64, 64, dtype=torch.uint8)]),
                  "labels": torch.cat([targets[0]["labels"], torch.tensor([0])])}
    model = build_model("maskrcnn_small", num_classes=SHAPES.num_classes, thing_classes=SHAPES.thing_indices,
                        width=8).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(12):
        losses = model.compute_losses(images, targets)
        total = sum(losses.values())
        first = total.item() if first is None else first
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg",
            "loss_semantic"} <= set(losses)
    assert float(total) < first

    model.eval()
    running_mean = model.net.backbone.encoder.stem[0][1].running_mean.clone()
    with torch.no_grad():
        assert set(model.compute_losses(images, targets)) == set(losses)  # validation losses in eval mode...
    assert torch.equal(model.net.backbone.encoder.stem[0][1].running_mean, running_mean)  # ...leave batch norm alone
    with torch.no_grad():
        outputs = model(images)
        predictions = model.postprocess(outputs, score_threshold=0.0, fusion_score_threshold=0.0, stuff_area=1)
    assert outputs["semantic"].shape == (4, SHAPES.num_classes, 64, 64) and outputs["masks"].shape[-2:] == (64, 64)
    assert len(predictions) == 4 and all(isinstance(p, Prediction) for p in predictions)
    for prediction in predictions:
        assert prediction.instances, "every image has detections at score threshold 0"
        scores = [inst.score for inst in prediction.instances]
        assert scores == sorted(scores, reverse=True)
        for inst in prediction.instances:
            assert inst.mask.shape == (64, 64) and inst.mask.dtype == bool and inst.mask.any()
            assert inst.label in SHAPES.thing_indices and len(inst.bbox) == 4
        assert prediction.semantic.shape == (64, 64) and prediction.panoptic.dtype == np.int32
        panoptic_ids = np.unique(prediction.panoptic[prediction.panoptic > 0]).tolist()
        assert sorted(panoptic_ids) == sorted(s.id for s in prediction.segments)

    # The checkpoint round trip rebuilds the same model.
    model_args = {"num_classes": 6, "thing_classes": SHAPES.thing_indices, "width": 8}
    card = make_card("maskrcnn_small", model_args, "instance", SHAPES)
    save_checkpoint(tmp_path / "m", model, card)
    loaded, _ = load_checkpoint(tmp_path / "m")
    with torch.no_grad():
        again = loaded(images[:1])
    assert torch.allclose(again["scores"], outputs["scores"][outputs["batch_index"] == 0], atol=1e-5)


def test_maskrcnn_needs_instance_targets():
    model = build_model("maskrcnn_small", num_classes=3, width=4).train()
    with pytest.raises(ModelError, match="instance masks"):
        model.compute_losses(torch.zeros(1, 3, 32, 32), [{"semantic": torch.zeros(32, 32, dtype=torch.int64)}])


def _torchvision_pretrained_architecture() -> MaskRCNN:
    """maskrcnn_resnet50_fpn exactly as torchvision builds it for COCO_V1 weights, minus the download."""
    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    model = MaskRCNN(backbone, num_classes=91, min_size=96, max_size=96)
    overwrite_eps(model, 0.0)
    for module in model.modules():  # frozen statistics that are not the identity, so they are tested too
        if isinstance(module, FrozenBatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_weights_file_gives_torchvision_outputs(tmp_path):
    reference = _torchvision_pretrained_architecture()
    weights = tmp_path / "maskrcnn.pth"
    torch.save(reference.state_dict(), weights)
    model = build_model("tv_maskrcnn_resnet50_fpn", weights=str(weights), min_size=96, max_size=96).eval()
    assert model.class_names == MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    for net in (reference, model.net):  # keep low-scoring detections of random weights, and few of them
        net.roi_heads.score_thresh, net.roi_heads.detections_per_img = 0.0, 5
    image = torch.rand(3, 64, 80)
    normalised = (image - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        expected = reference([image])[0]
        ours = model(normalised[None])
    assert len(expected["scores"]) == 5
    assert torch.allclose(ours["boxes"], expected["boxes"], atol=1e-3)
    assert torch.allclose(ours["scores"], expected["scores"], atol=1e-5)
    assert torch.equal(ours["labels"], expected["labels"])  # COCO: class index = torchvision label
    assert torch.allclose(ours["masks"], expected["masks"][:, 0], atol=1e-4)


def test_missing_cache_file_names_file_place_and_url(hub_dir):
    with pytest.raises(ModelError) as error:
        build_model("tv_maskrcnn_resnet50_fpn_v2")
    message = str(error.value)
    url = MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url
    assert str(hub_checkpoint_path(url)) in message and url in message and "--weights" in message


def test_fine_tuning_heads_follow_the_thing_classes():
    model = build_model("tv_maskrcnn_resnet50_fpn", num_classes=6, thing_classes=[3, 4, 5], pretrained=False)
    assert model.net.roi_heads.box_predictor.cls_score.out_features == 4  # background + 3 things
    assert model.net.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert model.semantic_head.classifier.out_channels == 6
    frozen = [name for name, p in model.net.backbone.body.named_parameters() if not p.requires_grad]
    assert frozen == []  # from scratch nothing is frozen: freezing applies only to pretrained layers
