"""Panoptic post-processing on hand-made maps: centres, grouping, majority vote, stuff area, fusion."""

from __future__ import annotations

import numpy as np
import torch

from segcli.models.panoptic_targets import TargetConfig, panoptic_targets
from segcli.models.postprocess import (
    bottom_up_prediction,
    class_argmax,
    combine_semantic_and_instances,
    find_instance_centers,
    group_pixels,
    majority_labels,
    window_max,
)
from segcli.structures import Instance

# Classes of the hand-made scenes: 0 = sky (stuff), 1 = ground (stuff), 2 = box (thing).
ISTHING = [False, False, True]
THINGS = [2]


def _logits(semantic: np.ndarray, num_classes: int = 3) -> torch.Tensor:
    """Confident (C, H, W) logits whose argmax is `semantic`."""
    return torch.nn.functional.one_hot(torch.from_numpy(semantic).long(), num_classes).permute(2, 0, 1).float() * 8


def _two_touching_boxes() -> tuple[np.ndarray, list[np.ndarray]]:
    """A 32x48 scene: sky on top, ground below, two boxes of the same class sharing an edge."""
    semantic = np.zeros((32, 48), np.uint8)
    semantic[16:] = 1
    left = np.zeros((32, 48), bool)
    left[8:24, 8:24] = True
    right = np.zeros((32, 48), bool)
    right[8:24, 24:40] = True
    semantic[left | right] = 2
    return semantic, [left, right]


def _maps_from_truth(semantic: np.ndarray, masks: list[np.ndarray], sigma: float = 3.0) -> dict[str, torch.Tensor]:
    target = {"semantic": torch.from_numpy(semantic).long(), "masks": torch.from_numpy(np.stack(masks)),
              "labels": torch.tensor([int(semantic[m].max()) for m in masks])}
    return panoptic_targets(target, THINGS, TargetConfig(sigma=sigma))


def test_centres_are_local_maxima_above_threshold_best_first():
    heatmap = torch.zeros(20, 20)
    heatmap[5, 5], heatmap[5, 7] = 0.9, 0.8  # 0.8 lies within 0.9's 5x5 window: suppressed
    heatmap[15, 15] = 0.95
    heatmap[2, 17] = 0.05  # below the threshold
    centers, scores = find_instance_centers(heatmap, threshold=0.1, nms_kernel=5, top_k=10)
    assert centers.tolist() == [[15, 15], [5, 5]]
    assert torch.allclose(scores, torch.tensor([0.95, 0.9]))
    small_kernel_centers, _ = find_instance_centers(heatmap, threshold=0.1, nms_kernel=3, top_k=10)
    assert small_kernel_centers.tolist() == [[15, 15], [5, 5], [5, 7]]
    assert find_instance_centers(heatmap, threshold=0.1, nms_kernel=3, top_k=1)[0].tolist() == [[15, 15]]
    assert len(find_instance_centers(heatmap, threshold=0.99)[0]) == 0


def test_pixels_join_the_centre_their_offset_points_to():
    xs = torch.arange(6.0).expand(4, 6)
    offsets = torch.zeros(2, 4, 6)
    offsets[1] = torch.where(xs < 3, 1 - xs, 4 - xs)  # the left half points at column 1, the right half at column 4
    thing = torch.ones(4, 6, dtype=torch.bool)
    thing[0, 0] = False
    centers = torch.tensor([[1, 1], [2, 4]])
    ids = group_pixels(centers, offsets, thing, chunk=5)  # small chunks: the chunked path gives the same answer
    assert ids[0, 0] == 0  # not a thing pixel
    assert (ids[1:, :3] == 1).all() and (ids[:, 3:] == 2).all()
    assert (group_pixels(centers[:0], offsets, thing) == 0).all()


def test_grouping_picks_the_nearest_centre_as_a_brute_force_search_does():
    torch.manual_seed(0)
    h, w, k = 48, 64, 37
    centers = torch.stack([torch.randint(0, h, (k,)), torch.randint(0, w, (k,))], 1)
    offsets = torch.randn(2, h, w) * 20
    thing = torch.rand(h, w) > 0.3
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pointed = torch.stack([ys + offsets[0], xs + offsets[1]], -1).reshape(-1, 2)
    distances = ((pointed[:, None, :] - centers[None].float()) ** 2).sum(-1)
    expected = torch.where(thing.reshape(-1), distances.argmin(1) + 1, 0).view(h, w)
    assert (group_pixels(centers, offsets, thing, chunk=100) == expected).float().mean() > 0.999  # ties aside


def test_two_touching_objects_of_one_class_come_out_as_two_instances():
    semantic, masks = _two_touching_boxes()
    maps = _maps_from_truth(semantic, masks)
    prediction = bottom_up_prediction(_logits(semantic), maps["center"], maps["offset"], THINGS, nms_kernel=5,
                                      stuff_area=1)
    assert len(prediction.instances) == 2
    found = sorted((inst.mask for inst in prediction.instances), key=lambda m: np.nonzero(m)[1].min())
    assert np.array_equal(found[0], masks[0]) and np.array_equal(found[1], masks[1])
    assert all(inst.label == 2 and 0 < inst.score <= 1 for inst in prediction.instances)
    assert prediction.instances[0].score >= prediction.instances[1].score
    # The panoptic map: the two boxes, then sky and ground, with segment ids matching the map.
    labels = sorted(s.label for s in prediction.segments)
    assert labels == [0, 1, 2, 2]
    for segment in prediction.segments:
        assert (prediction.panoptic == segment.id).sum() == segment.area
    assert (prediction.panoptic > 0).all()
    # A semantic model alone would see one blob: this is what instances add.
    assert np.array_equal(prediction.semantic, semantic)


def test_majority_class_wins_inside_an_instance():
    semantic = torch.tensor([[2, 2, 3, 3], [2, 2, 2, 3]])
    ids = torch.tensor([[1, 1, 1, 2], [1, 1, 1, 2]])
    assert majority_labels(semantic, ids, 2, 4).tolist() == [2, 3]


def test_thing_pixels_without_a_centre_are_void():
    semantic, masks = _two_touching_boxes()
    maps = _maps_from_truth(semantic, masks)
    prediction = bottom_up_prediction(_logits(semantic), maps["center"] * 0, maps["offset"], THINGS, stuff_area=1)
    assert prediction.instances == []
    assert (prediction.panoptic[masks[0] | masks[1]] == 0).all()
    assert {s.label for s in prediction.segments} == {0, 1}


def test_tiny_stuff_region_is_dropped():
    semantic = np.zeros((32, 32), np.uint8)
    semantic[16:] = 1
    empty, no_offsets = torch.zeros(1, 32, 32), torch.zeros(2, 32, 32)
    prediction = bottom_up_prediction(_logits(semantic), empty, no_offsets, THINGS, stuff_area=10)
    assert sorted(s.label for s in prediction.segments) == [0, 1]
    semantic[16:] = 0
    semantic[2:5, 2:5] = 1  # all the ground left: a 9-pixel patch in the sky
    prediction = bottom_up_prediction(_logits(semantic), empty, no_offsets, THINGS, stuff_area=10)
    assert [(s.label, s.area) for s in prediction.segments] == [(0, 32 * 32 - 9)]
    assert (prediction.panoptic[2:5, 2:5] == 0).all()  # void, not given to the sky
    assert np.array_equal(prediction.semantic, semantic)  # the semantic map keeps it


def _box(y0: int, x0: int, y1: int, x1: int, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_fusion_skips_an_instance_more_than_half_covered():
    semantic = np.zeros((20, 20), np.uint8)
    best = Instance(_box(0, 0, 10, 10), label=2, score=0.9)
    mostly_hidden = Instance(_box(0, 4, 10, 12), label=2, score=0.8)  # 60 of its 80 pixels under `best`
    partly_hidden = Instance(_box(5, 8, 15, 18), label=2, score=0.7)  # 10 of 100 under `best`
    weak = Instance(_box(15, 0, 20, 5), label=2, score=0.3)
    panoptic, segments = combine_semantic_and_instances(
        semantic, [weak, partly_hidden, mostly_hidden, best], ISTHING, overlap_threshold=0.5, stuff_area=1,
        score_threshold=0.5)
    things = [s for s in segments if ISTHING[s.label]]
    assert [s.score for s in things] == [0.9, 0.7]  # score order; the 0.8 one is skipped, the 0.3 one dropped
    assert things[1].area == 90  # a partly covered instance keeps its free pixels
    assert (panoptic[best.mask] == things[0].id).all()
    sky = next(s for s in segments if s.label == 0)
    assert sky.area == 400 - 100 - 90  # stuff fills what instances left
    # With a looser overlap threshold the 0.8 instance survives, clipped to its free 20 pixels.
    _, loose = combine_semantic_and_instances(semantic, [best, mostly_hidden], ISTHING, overlap_threshold=0.8,
                                              stuff_area=1)
    assert [s.area for s in loose if ISTHING[s.label]] == [100, 20]


def test_fusion_fills_stuff_above_the_area_limit_and_leaves_unclaimed_things_void():
    semantic = np.zeros((20, 20), np.uint8)
    semantic[10:] = 1
    semantic[0:2, 0:2] = 1  # 4 pixels of ground apart from the rest: counted with it (one segment per class)
    semantic[12:16, 12:16] = 2  # a thing the instance model missed
    panoptic, segments = combine_semantic_and_instances(semantic, [], ISTHING, stuff_area=150)
    assert [s.label for s in segments] == [0, 1]
    assert (panoptic[12:16, 12:16] == 0).all()
    _, segments = combine_semantic_and_instances(semantic, [], ISTHING, stuff_area=190)
    assert [s.label for s in segments] == [0]  # sky has 200 - 4 = 196 pixels, ground 200 + 4 - 16 = 188


def test_window_max_and_class_argmax_match_torch_reference_ops():
    torch.manual_seed(0)
    heatmap = torch.rand(37, 53)
    heatmap[10:13, 20:23] = 1.0  # a plateau: ties everywhere in it
    for kernel in (1, 3, 7, 13):
        expected = torch.nn.functional.max_pool2d(heatmap[None, None], kernel, stride=1, padding=kernel // 2)[0, 0]
        assert torch.equal(window_max(heatmap, kernel), expected)
    scores = torch.randint(0, 3, (2, 5, 17, 19)).float()  # many ties: the first index wins, as argmax's does
    assert torch.equal(class_argmax(scores, 1), scores.argmax(1))
    assert torch.equal(class_argmax(scores[0], 0), scores[0].argmax(0))
