"""Augmentation and the loader: image, semantic map, instance masks, boxes and labels move together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.data.transforms import MIN_PIXELS, build_transform
from segcli.preprocess import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor
from segcli.structures import IGNORE_INDEX, Instance, Sample, masks_to_boxes
from segcli.training.loader import TransformedDataset, collate

H, W = 40, 56


def _sample() -> Sample:
    """White objects on black: the image itself shows where the masks must be."""
    semantic = np.zeros((H, W), np.uint8)
    image = np.zeros((H, W, 3), np.uint8)
    big = np.zeros((H, W), bool)
    big[5:35, 4:30] = True
    tiny = np.zeros((H, W), bool)
    tiny[0:2, 54:56] = True  # 4 px in a corner: most crops lose it
    crowd = np.zeros((H, W), bool)
    crowd[30:38, 40:50] = True
    for mask, label in ((big, 1), (tiny, 2), (crowd, 2)):
        semantic[mask] = label
        image[mask] = 255
    instances = [Instance(big, 1), Instance(tiny, 2), Instance(crowd, 2, iscrowd=True)]
    return Sample(image=image, name="s", semantic=semantic, instances=instances)


def _check_target(image: torch.Tensor, target: dict, size: tuple[int, int]) -> None:
    assert image.shape == (3, *size) and image.dtype == torch.float32
    assert target["semantic"].shape == size and target["semantic"].dtype == torch.int64
    masks, labels, boxes = target["masks"], target["labels"], target["boxes"]
    assert masks.shape[1:] == size and len(masks) == len(labels) == len(boxes)
    assert labels.dtype == torch.int64 and boxes.dtype == torch.float32 and masks.dtype == torch.uint8
    assert (masks.flatten(1).sum(1) >= MIN_PIXELS).all()
    assert torch.equal(boxes, masks_to_boxes(masks.bool()))
    for mask, label in zip(masks.bool(), labels):
        assert (target["semantic"][mask] == label).float().mean() > 0.9


def test_training_transform_keeps_image_and_targets_aligned():
    torch.manual_seed(0)
    transform = build_transform("instance", True, 32)
    dropped = 0
    for _ in range(12):
        image, target = transform(_sample())
        _check_target(image, target, (32, 32))
        assert 1 not in target["labels"].tolist() or target["labels"].tolist().count(1) == 1
        dropped += 2 not in target["labels"].tolist()
        # Bright pixels are objects: geometry moved image and semantic map the same way (colour jitter
        # changes levels, never which of the two is brighter).
        brightness = image.mean(0)
        objects, background = target["semantic"] > 0, target["semantic"] == 0
        if objects.sum() > 20 and background.sum() > 20:
            threshold = (brightness[objects].median() + brightness[background].median()) / 2
            assert ((brightness > threshold) == objects).float().mean() > 0.9  # edges blur; a mismatch gives ~0.5
    assert dropped > 0  # the tiny corner object vanished from some crops, with its label and box


def test_crowd_regions_are_no_instance_targets():
    _, target = build_transform("panoptic", False, (H, W))(_sample())
    assert target["labels"].tolist() == [1, 2]  # big and tiny; the crowd region is left out
    assert target["boxes"].tolist() == [[4.0, 5.0, 30.0, 35.0], [54.0, 0.0, 56.0, 2.0]]  # xyxy, right/bottom exclusive
    assert (target["semantic"][30:38, 40:50] == 2).all()  # still labelled in the semantic map


def test_validation_at_its_own_size_is_plain_normalisation():
    sample = _sample()
    image, target = build_transform("semantic", False, (H, W))(sample)
    assert torch.allclose(image, image_to_tensor(sample.image, IMAGENET_MEAN, IMAGENET_STD), atol=1e-6)
    assert torch.equal(target["semantic"], torch.from_numpy(sample.semantic.astype(np.int64)))
    assert set(target) == {"semantic"}  # semantic mode needs no instance targets


def test_validation_letterboxes_and_ignores_padding():
    sample = _sample()  # 40 x 56 -> fits 32 x 32 as 23 x 32, then padded at the bottom
    image, target = build_transform("instance", False, 32)(sample)
    _check_target(image, target, (32, 32))
    semantic = target["semantic"]
    assert (semantic[23:] == IGNORE_INDEX).all() and (semantic[:23] != IGNORE_INDEX).all()
    assert (image[:, 23:] == 0).all() and (target["masks"][:, 23:] == 0).all()
    assert target["boxes"][0].tolist() == pytest.approx([2.0, 3.0, 17.0, 20.0], abs=1.0)  # 4,5,30,35 scaled by 32/56


def test_transforms_repeat_with_the_seed():
    transform = build_transform("panoptic", True, 24)
    torch.manual_seed(5)
    a = transform(_sample())
    torch.manual_seed(5)
    b = transform(_sample())
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_images_without_objects_and_bad_modes():
    sample = _sample()
    sample.instances = []
    image, target = build_transform("instance", True, 16)(sample)
    assert target["masks"].shape == (0, 16, 16) and target["boxes"].shape == (0, 4) and len(target["labels"]) == 0
    _, target = build_transform("instance", False, 16)(sample)
    assert target["masks"].shape == (0, 16, 16)
    with pytest.raises(ValueError, match="mode"):
        build_transform("depth", True, 16)


def test_loader_batches_variable_instance_counts():
    samples = [_sample(), _sample()]
    samples[1].instances = samples[1].instances[:1]
    dataset = TransformedDataset(samples, build_transform("instance", False, (H, W)))
    images, targets = collate([dataset[0], dataset[1]])
    assert len(dataset) == 2 and images.shape == (2, 3, H, W)
    assert [len(t["labels"]) for t in targets] == [2, 1]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert images.shape == (2, 3, H, W) and len(targets) == 2


def test_decoded_samples_are_kept_within_the_budget_and_seeded_per_sample():
    reads = []

    class Counting(list):
        def __getitem__(self, index):
            reads.append(index)
            return super().__getitem__(index)

    samples = Counting([_sample(), _sample(), _sample()])
    one = samples[0].image.nbytes + samples[0].semantic.nbytes + sum(i.mask.nbytes for i in samples[0].instances)
    reads.clear()
    dataset = TransformedDataset(samples, build_transform("instance", True, 16), cache=lambda s: s, budget=2 * one)
    for _ in range(2):
        for index in range(3):
            dataset[index, 7]
    assert reads == [0, 1, 2, 2]  # two kept, the third read again each time
    first, again = dataset[0, 7], dataset[0, 7]  # the same seed, the same augmentation
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], dataset[0, 8][0])
