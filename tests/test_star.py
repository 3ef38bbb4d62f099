"""Star-convex polygons (`unet_stardist`): ray targets, polygon suppression, mirrored and resized outputs, options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segcli.checkpoint import load_checkpoint, read_card
from segcli.data.synth import generate
from segcli.inference import postprocess_defaults
from segcli.models.contour import distance_map
from segcli.models.postprocess import MAX_STAR_CANDIDATES, contour_prediction, star_polygons, star_prediction
from segcli.models.registry import build_model
from segcli.models.star import ray_lengths
from segcli.services.train import TrainConfig, train
from segcli.structures import Mode


def _touching_discs(size: int = 64) -> np.ndarray:
    """(H, W) ids: two discs of radius 10 whose edges touch along a column (x 29 | 30), 0 elsewhere."""
    yy, xx = np.mgrid[:size, :size]
    ids = np.zeros((size, size), np.int32)
    ids[(yy - 32) ** 2 + (xx - 20) ** 2 < 100] = 1
    ids[(yy - 32) ** 2 + (xx - 39) ** 2 < 100] = 2
    return ids


def _perfect_outputs(ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a perfect model would predict: class probabilities with NO boundary anywhere (the seam unseen), the
    object probability and the rays of the ground truth."""
    masks = torch.from_numpy(np.stack([ids == k for k in range(1, ids.max() + 1)]))
    foreground = torch.from_numpy(ids > 0).float()
    probabilities = torch.stack([1 - foreground, foreground, torch.zeros_like(foreground)])
    return probabilities, distance_map(masks), torch.from_numpy(ray_lengths(ids[None], 32)[0])


def test_rays_end_at_the_seam_between_touching_objects_and_at_the_image_border():
    ids = _touching_discs()
    rays = ray_lengths(ids[None], 8)[0]  # ray 0 points along +x, ray 2 along +y (rows grow down), ray 4 along -x
    assert rays[0, 32, 20] == 9 and rays[4, 32, 39] == 9  # 21..29 and 30..38: the other disc ends each
    assert rays[4, 32, 20] == 9 and rays[2, 32, 20] == 9  # the background ends the rest
    assert rays[:, ids == 0].max() == 0  # no rays off objects
    cut = ray_lengths(ids[None, :, 25:], 8)[0]  # the left disc cut by the border at x 25 (its column 0)
    assert cut[4, 32, 0] == 0 and cut[4, 32, 3] == 3
    assert ray_lengths(ids[None], 8, stride=2).shape == (1, 8, 32, 32)


def test_polygons_separate_touching_objects_whose_seam_no_boundary_class_marks():
    ids = _touching_discs()
    probabilities, objects, rays = _perfect_outputs(ids)
    merged = contour_prediction(probabilities, [1], min_area=5, mode=Mode.INSTANCE)
    assert len(merged.instances) == 1  # the contour model's seeds are joined: one instance for two discs
    split = star_prediction(probabilities, [1], object_probability=objects, rays=rays, mode=Mode.INSTANCE)
    assert len(split.instances) == 2
    for instance in split.instances:
        truth = ids[instance.mask].max()
        iou = (instance.mask & (ids == truth)).sum() / (instance.mask | (ids == truth)).sum()
        assert iou > 0.9 and instance.label == 1 and instance.score == pytest.approx(1.0)
    panoptic = star_prediction(probabilities, [1], object_probability=objects, rays=rays, mode=Mode.PANOPTIC)
    assert len(panoptic.segments) == 3  # two nuclei and the background


def test_suppression_keeps_one_polygon_per_object_and_its_thresholds_act():
    ids = _touching_discs()
    probabilities, objects, rays = _perfect_outputs(ids)
    noisy = objects + 0.01 * torch.rand(objects.shape, generator=torch.Generator().manual_seed(0))  # many maxima
    kept = star_prediction(probabilities, [1], object_probability=noisy, rays=rays, mode=Mode.INSTANCE)
    assert len(kept.instances) == 2
    wide = rays + 3.0  # polygons 3 px too large: each overlaps its neighbour by about a fifth of its area
    assert len(star_prediction(probabilities, [1], object_probability=objects, rays=wide, nms_threshold=0.4,
                               mode=Mode.INSTANCE).instances) == 2
    assert len(star_prediction(probabilities, [1], object_probability=objects, rays=wide, nms_threshold=0.05,
                               mode=Mode.INSTANCE).instances) == 1  # too strict: the second disc is suppressed
    high = star_prediction(probabilities, [1], object_probability=objects, rays=rays, prob_threshold=1.0,
                           mode=Mode.INSTANCE)
    assert high.instances == []
    small = star_prediction(probabilities, [1], object_probability=objects, rays=rays, min_area=400, mode=Mode.INSTANCE)
    assert small.instances == []  # each disc is 305 px


def test_an_untrained_models_candidates_are_capped():
    size = 256
    objects = torch.rand(size, size, generator=torch.Generator().manual_seed(0))  # a maximum every few pixels
    peaks = int((objects >= torch.nn.functional.max_pool2d(objects[None, None], 3, 1, 1)[0, 0]).logical_and(
        objects > 0.5).sum())
    assert peaks > MAX_STAR_CANDIDATES  # so the cap is what limits the count below
    rays = torch.zeros(32, size, size)  # one-pixel polygons: none overlaps another, every candidate is kept
    ids, scores = star_polygons(objects, rays, prob_threshold=0.5, nms_threshold=1.0)
    assert len(scores) - 1 == MAX_STAR_CANDIDATES == ids.max()
    assert scores[1:].min() >= np.sort(objects.flatten().numpy())[-peaks]  # the most probable ones were kept


def test_mirrored_and_resized_rays_describe_the_same_objects():
    ids = _touching_discs()
    model = build_model("unet_stardist", num_classes=2, width=4, n_rays=32)
    mirrored = torch.from_numpy(ray_lengths(ids[None, :, ::-1].copy(), 32))
    undone = model.flip_outputs({"rays": mirrored})["rays"][0]
    inside = torch.from_numpy(ids > 0)
    wanted = torch.from_numpy(ray_lengths(ids[None], 32)[0])
    assert (undone - wanted).abs()[:, inside].mean() < 0.3  # equal up to the rounding of the marched pixels
    resized = model.resize_outputs({"rays": wanted[None]}, (128, 128))["rays"]
    assert resized[0, 0, 64, 40] == pytest.approx(18.0, abs=0.5)  # twice the image, twice the ray


def test_the_model_trains_saves_and_takes_its_own_options(tmp_path):
    from typer.testing import CliRunner

    from segcli.cli import app

    shapes = generate("shapes", tmp_path / "shapes", n=6, size=48, seed=0)
    model = build_model("unet_stardist", num_classes=3, width=4, n_rays=16)
    outputs = model(torch.zeros(1, 3, 32, 32))
    assert outputs["rays"].shape == (1, 16, 32, 32) and outputs["distance"].shape == (1, 1, 32, 32)
    config = TrainConfig(data=shapes, model="unet_stardist", mode="panoptic", out=tmp_path / "run", steps=4,
                         batch_size=2, crop=32, width=4, val_every=0, seed=0, device="cpu")
    best = train(config).best
    card = read_card(best)
    assert card["postprocess"] == {"prob_threshold": 0.5, "nms_threshold": 0.4, "min_area": 10, "stuff_area": 64}
    loaded, _ = load_checkpoint(best)
    assert loaded.n_rays == 32 and "interior_threshold" not in postprocess_defaults(loaded)
    runner = CliRunner()
    wrong = runner.invoke(app, ["predict", str(shapes / "images"), "--weights", str(best), "--mode", "instance",
                                "--interior-threshold", "0.3", "--out", str(tmp_path / "p"), "--device", "cpu"])
    assert wrong.exit_code == 2 and "--prob-threshold" in wrong.output
    counts = []
    for threshold in ("0.0", "1.0"):
        result = runner.invoke(app, ["predict", str(shapes / "images"), "--weights", str(best), "--mode", "instance",
                                     "--prob-threshold", threshold, "--min-area", "1",
                                     "--out", str(tmp_path / threshold), "--json", "--no-overlay", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        counts.append(sum(len(json.loads(line)["segments"]) for line in result.stdout.splitlines()))
    assert counts[0] > 0 == counts[1]  # no centre is more probable than 1: the option reached the post-processing
    tta = runner.invoke(app, ["predict", str(Path(shapes) / "images"), "--weights", str(best), "--tta", "--out",
                              str(tmp_path / "tta"), "--device", "cpu", "--quiet"])
    assert tta.exit_code == 0, tta.output
