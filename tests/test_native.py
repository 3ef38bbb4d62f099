"""Real images at their own resolution: 16-bit and float intensities, crops, scale, plans, time budgets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segcli import io
from segcli.checkpoint import load_checkpoint, make_card, read_card, save_checkpoint
from segcli.cli import parse_duration
from segcli.data.synth import generate, synth_label_space
from segcli.data.transforms import build_transform
from segcli.errors import UsageError
from segcli.inference import postprocess_defaults
from segcli.models.contour import boundary_map, contact_map, distance_map
from segcli.models.postprocess import contour_prediction
from segcli.models.registry import build_model
from segcli.services.evaluate import evaluate_model
from segcli.services.predict import PredictConfig, predict
from segcli.services.train import TrainConfig, train
from segcli.structures import IGNORE_INDEX, Instance, Sample


def _twelve_bit(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A 12-bit grey image (0..4095) with dark background, bright blobs and a gradient between."""
    image = np.zeros((size, size), np.float64)
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in rng.integers(8, size - 8, (6, 2)):
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
    image = image / image.max() * 4095
    return np.round(image).astype(np.uint16)


def test_a_twelve_bit_image_keeps_its_contrast_when_read(tmp_path, rng):
    raw = _twelve_bit(rng)
    cv2.imencode(".png", raw)[1].tofile(str(tmp_path / "deep.png"))
    image = io.read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert image.min() == 0 and image.max() == 255  # the whole 8-bit range, not 0..15 (the top 8 bits)
    expected = np.clip(raw.astype(np.float64) / np.percentile(raw, 99.9), 0, 1) * 255
    assert np.abs(image[..., 0] - expected).max() <= 2  # a linear stretch: order and proportions kept

    floats = (raw / 4095.0 * 0.01).astype(np.float32)  # a float image in a small range
    assert io.to_uint8(floats).max() == 255 and np.abs(io.to_uint8(floats).astype(int) - image[..., 0]).max() <= 2
    assert io.to_uint8(np.full((4, 4), 7, np.uint16)).max() == 0  # flat: nothing to stretch, no division by zero


def test_a_twelve_bit_image_keeps_its_contrast_through_predict(tmp_path, rng, model_inputs):
    """What the model sees of a 12-bit image is what it sees of the same picture in 8 bits, not a black frame."""
    space = synth_label_space("shapes")
    model = build_model("unet", num_classes=space.num_classes, width=4)
    save_checkpoint(tmp_path / "net", model, make_card("unet", {"num_classes": space.num_classes, "width": 4},
                                                       "semantic", space))
    assert read_card(tmp_path / "net")["intensity"]["low"] == 0.1  # the card says how images are scaled
    raw = _twelve_bit(rng)
    eight = np.round(np.clip(raw / np.percentile(raw, 99.9), 0, 1) * 255).astype(np.uint8)
    for name, image in (("a_eight", eight), ("b_twelve", raw)):
        cv2.imencode(".png", image)[1].tofile(str(tmp_path / f"{name}.png"))
    predict(PredictConfig(inputs=[str(tmp_path / "a_eight.png"), str(tmp_path / "b_twelve.png")], mode="semantic",
                          weights=tmp_path / "net.safetensors", out=tmp_path / "out", overlay=False, device="cpu"))
    assert len(model_inputs) == 2
    (eight_in, _), (twelve_in, _) = model_inputs
    assert (eight_in - twelve_in).abs().max() < 0.05  # normalised units: within a grey level or so
    assert twelve_in.std() > 0.5 * eight_in.std() > 0
    labels = [io.read_label_png(tmp_path / "out" / "semantic" / f"{name}.png") for name in ("a_eight", "b_twelve")]
    assert (labels[0] == labels[1]).mean() > 0.99


# ---------------------------------------------------------------- crops at the image's own scale


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate("shapes", tmp_path_factory.mktemp("native") / "shapes", n=8, size=48, seed=0)


def _two_touching_squares(size: int = 40) -> Sample:
    image = np.zeros((size, size, 3), np.uint8)
    a, b = np.zeros((size, size), bool), np.zeros((size, size), bool)
    a[10:20, 5:15], b[10:20, 15:25] = True, True  # side by side, sharing an edge
    image[a | b] = 200
    semantic = (a | b).astype(np.uint8)
    return Sample(image=image, name="two", semantic=semantic, instances=[Instance(a, 1), Instance(b, 1)])


def test_crop_windows_keep_the_image_scale_and_pad_small_images(rng):
    sample = _two_touching_squares()
    torch.manual_seed(0)
    image, target = build_transform("instance", True, None, crop=64)(sample)  # larger than the 40 px image
    assert image.shape == (3, 64, 64)
    assert int((target["semantic"] == IGNORE_INDEX).sum()) == 64 * 64 - 40 * 40  # padding is ignored (maybe flipped)
    assert sorted(target["masks"].flatten(1).sum(1).tolist()) == [100, 100]  # both objects whole, at their own size
    image, target = build_transform("instance", True, None, crop=16, scale=0.5)(sample)  # a 32 px window at half size
    assert image.shape == (3, 16, 16) and all(m.sum() <= 25 for m in target["masks"])


def test_zoomed_and_turned_windows_keep_image_and_masks_together():
    image = np.zeros((48, 48, 3), np.uint8)
    ell = np.zeros((48, 48), bool)
    ell[14:36, 14:20], ell[30:36, 14:34] = True, True  # an L: every turn and flip of it differs
    image[ell] = 255
    sample = Sample(image=image, name="ell", semantic=ell.astype(np.uint8), instances=[Instance(ell, 1)])
    transform = build_transform("instance", True, None, crop=48, zoom=0.25, rotate=True)
    shapes, areas = set(), []
    for seed in range(40):
        torch.manual_seed(seed)
        x, target = transform(sample)
        mask = target["masks"][0].bool()
        bright = x[0] > (x[0].max() + x[0].min()) / 2  # the object's pixels, whatever the colour jitter did
        grown = torch.nn.functional.max_pool2d(mask[None].float(), 3, 1, 1)[0].bool()
        shrunk = ~torch.nn.functional.max_pool2d((~mask)[None].float(), 3, 1, 1)[0].bool()
        assert not (bright & ~grown).any() and not (shrunk & ~bright).any()  # the mask moved with the image
        assert torch.equal(target["semantic"] == 1, mask)
        if not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()):  # whole in the window
            areas.append(int(mask.sum()))
        ys, xs = torch.nonzero(mask, as_tuple=True)
        shapes.add((round(float(ys.float().mean() - (ys.min() + ys.max()) / 2)),
                    round(float(xs.float().mean() - (xs.min() + xs.max()) / 2))))
    assert len(shapes) >= 4  # the L's corner ends up on every side: flips and quarter turns
    # Zoomed both ways, by at most 1.25 (areas 1.25^2, give or take the nearest-neighbour rounding of 6 px bars).
    assert 0.5 * ell.sum() < min(areas) < ell.sum() < max(areas) < 1.8 * ell.sum()


def test_inverted_windows_are_half_of_them_and_keep_their_masks():
    image = np.full((40, 40, 3), 20, np.uint8)  # a dark field with one bright square: fluorescence-like
    square = np.zeros((40, 40), bool)
    square[10:30, 10:30] = True
    image[square] = 230
    sample = Sample(image=image, name="square", semantic=square.astype(np.uint8), instances=[Instance(square, 1)])
    counts = {}
    for invert in (False, True):
        transform = build_transform("instance", True, None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crop=40, invert=invert)
        inverted = 0
        for seed in range(40):
            torch.manual_seed(seed)
            x, target = transform(sample)
            inside, outside = x[:, target["masks"][0].bool()].mean(), x[:, ~target["masks"][0].bool()].mean()
            inverted += bool(inside < outside)  # a dark object on bright ground, still under its own mask
        counts[invert] = inverted
    assert counts[False] == 0 and 10 <= counts[True] <= 30


def test_without_zoom_or_turns_windows_stay_at_their_scale_and_orientation():
    sample = _two_touching_squares()
    transform = build_transform("instance", True, None, crop=64)
    for seed in range(10):
        torch.manual_seed(seed)
        _, target = transform(sample)
        rows = torch.nonzero(target["masks"].any(0), as_tuple=True)[0]
        assert sorted(target["masks"].flatten(1).sum(1).tolist()) == [100, 100]
        assert (int(rows.min()), int(rows.max())) == (10, 19)  # horizontal flips only: rows never move


def test_contour_targets_and_grouping_separate_touching_objects():
    sample = _two_touching_squares()
    masks = torch.from_numpy(np.stack([inst.mask for inst in sample.instances]))
    edge = boundary_map(masks, width=1)
    assert edge[15, 14] and edge[15, 15] and not edge[15, 10]  # the shared edge is boundary on both sides
    assert not edge[0, 0] and int(edge.sum()) == 2 * (100 - 64)  # each 10x10 square: its 36-pixel rim
    # Ideal probabilities: interior where not boundary, boundary on the rims -> two instances, grown back whole.
    probabilities = torch.zeros(3, 40, 40)
    fg = torch.from_numpy(sample.semantic.astype(bool))
    probabilities[2][edge] = 1
    probabilities[1][fg & ~edge] = 1
    probabilities[0][~fg] = 1
    prediction = contour_prediction(probabilities, [1], min_area=5)
    assert len(prediction.instances) == 2
    assert sorted(inst.area for inst in prediction.instances) == [100, 100]
    assert all(np.array_equal(p.mask, g.mask) or np.array_equal(p.mask, sample.instances[0].mask)
               for p, g in zip(sorted(prediction.instances, key=lambda i: i.bbox[0]), sample.instances))
    assert (prediction.semantic == sample.semantic).all()  # boundary pixels count for the object's class
    model = build_model("unet_contour", num_classes=2, width=4)

    def target(target_masks: torch.Tensor) -> dict:
        return {"semantic": torch.from_numpy(sample.semantic).long(), "masks": target_masks,
                "labels": torch.tensor([1, 1])}

    losses = model.compute_losses(torch.zeros(1, 3, 40, 40), [target(masks.to(torch.uint8))])
    assert set(losses) == {"semantic"} and torch.isfinite(losses["semantic"])
    assert (model._target(target(masks)) == 2).sum() == edge.sum()


def test_contact_weight_falls_on_the_seam_between_touching_objects_only():
    sample = _two_touching_squares()
    masks = torch.from_numpy(np.stack([inst.mask for inst in sample.instances]))
    contact = contact_map(masks, radius=2)
    rows, cols = np.nonzero(contact.numpy())
    # the squares meet between columns 14 and 15: the band of columns 13..16, along the rows they share
    assert set(cols.tolist()) == {13, 14, 15, 16} and not contact[0, 0] and not contact[15, 10]
    assert not contact_map(masks[:1], radius=2).any()  # one object alone touches nothing
    target = {"semantic": torch.from_numpy(sample.semantic).long(), "masks": masks.to(torch.uint8),
              "labels": torch.tensor([1, 1])}
    torch.manual_seed(0)
    plain = build_model("unet_contour", num_classes=2, width=4)
    torch.manual_seed(0)
    weighted = build_model("unet_contour", num_classes=2, width=4, contact_weight=10.0)
    images = torch.rand(1, 3, 40, 40)
    assert weighted.compute_losses(images, [target])["semantic"] > plain.compute_losses(images, [target])["semantic"]


def test_distance_targets_peak_in_each_object_and_dip_where_they_touch():
    sample = _two_touching_squares()
    masks = torch.from_numpy(np.stack([inst.mask for inst in sample.instances]))
    depth = distance_map(masks).numpy()
    fg = sample.semantic.astype(bool)
    assert (depth[~fg] == 0).all() and depth[fg].min() > 0 and depth.max() == pytest.approx(1.0)
    left, right = (depth * inst.mask for inst in sample.instances)
    assert left.max() == pytest.approx(1.0) and right.max() == pytest.approx(1.0)  # each normalised to its own depth
    assert depth[15, 14] < 0.4 and depth[15, 15] < 0.4  # the shared edge is as shallow as the outer rim
    _, cores = cv2.connectedComponents((depth > 0.4).astype(np.uint8), connectivity=4)
    assert cores.max() == 2  # the cores of two touching squares are apart


def test_distance_seeds_separate_touching_objects_the_boundary_class_missed():
    sample = _two_touching_squares()
    masks = torch.from_numpy(np.stack([inst.mask for inst in sample.instances]))
    fg = torch.from_numpy(sample.semantic.astype(bool))
    probabilities = torch.zeros(3, 40, 40)  # a whole interior, no boundary predicted at the seam: one blob
    probabilities[1][fg] = 1
    probabilities[0][~fg] = 1
    assert len(contour_prediction(probabilities, [1], min_area=5).instances) == 1
    split = contour_prediction(probabilities, [1], min_area=5, distance=distance_map(masks), distance_threshold=0.4)
    assert sorted(inst.area for inst in split.instances) == [100, 100]  # two cores, each grown back to its square
    model = build_model("unet_distance", num_classes=2, width=4)
    outputs = model(torch.zeros(1, 3, 40, 40))
    assert outputs["semantic"].shape[1] == 2 and outputs["contour"].shape[1] == 1 and outputs["distance"].shape[1] == 1
    target = {"semantic": torch.from_numpy(sample.semantic).long(), "masks": masks.to(torch.uint8),
              "labels": torch.tensor([1, 1])}
    losses = model.compute_losses(torch.zeros(1, 3, 40, 40), [target])
    assert set(losses) == {"semantic", "distance"} and all(torch.isfinite(v) for v in losses.values())
    assert "distance_threshold" in postprocess_defaults(model)
    assert "distance_threshold" not in postprocess_defaults(build_model("unet_contour", num_classes=2, width=4))


def test_a_crop_trained_model_is_validated_on_whole_images_at_its_scale(shapes, tmp_path, model_inputs):
    import segcli.inference

    config = TrainConfig(data=shapes, model="unet_contour", mode="panoptic", out=tmp_path / "run", steps=4,
                         batch_size=2, crop=32, scale=0.5, width=4, val_every=0, seed=0, device="cpu")
    result = train(config)
    card = read_card(result.best)
    assert card["scale"] == 0.5 and card["crop"] == 32
    sizes = {tuple(batch.shape[-2:]) for batch, _ in model_inputs}
    assert sizes == {(24, 24)}  # validation: each whole 48 px image at half size, not a 32 px crop
    model_inputs.clear()
    again = evaluate_model(shapes, "panoptic", weights=result.best, device="cpu")
    assert {tuple(batch.shape[-2:]) for batch, _ in model_inputs} == {(24, 24)}
    assert again["images"] == result.val_images
    assert again["pq"] == pytest.approx(result.metrics["pq"])  # scored against the full-size ground truth, as eval does
    predictions = segcli.inference.predict_arrays(*load_checkpoint(result.best), [np.zeros((48, 50, 3), np.uint8)])
    assert predictions[0].semantic.shape == (48, 50) and predictions[0].panoptic.shape == (48, 50)


# ---------------------------------------------------------------- time budget


class _Clock:
    """The trainer's perf_counter: each reading 0.02 s after the one before. The budget is then spent in a fixed
    number of readings whatever the machine's load (a real clock made this test depend on how busy the CPU was)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.02
        return self.now


def test_time_budget_stops_on_time_and_the_schedule_ends_with_it(shapes, tmp_path, monkeypatch):
    from segcli.training import trainer

    monkeypatch.setattr(trainer, "time", _Clock())
    events = []
    config = TrainConfig(data=shapes, model="unet", mode="semantic", out=tmp_path / "run", time=4.0, batch_size=2,
                         crop=32, width=4, seed=0, device="cpu")
    result = train(config, callback=lambda event, **info: events.append((event, info)))
    assert result.steps > 3  # it trained until the time was up, through several epochs of 6 images
    assert 3.0 <= result.seconds < 4.0 + 1.0  # a final validation may overrun a little
    lrs = [info["lr"] for event, info in events if event == "step"]
    assert max(lrs) > 0.5e-3 and lrs[-1] < 0.35 * max(lrs)  # warm-up, then decay towards zero at the end of the time
    assert [event for event, _ in events].count("validation") >= 1 and events[-1][0] == "done"
    assert read_card(result.best)["training"]["time"] == 4.0


def test_durations_parse():
    assert [parse_duration(t) for t in ("90", "90s", "20m", "1h", "1h30m", "1.5h")] == [90, 90, 1200, 3600, 5400, 5400]
    for bad in ("", "soon", "0m", "-5m"):
        with pytest.raises(UsageError):
            parse_duration(bad)


# ---------------------------------------------------------------- post-processing options


def test_thresholds_are_options_of_predict_and_eval_and_the_card_records_them(shapes, tmp_path, model_inputs):
    from typer.testing import CliRunner

    from segcli.cli import app

    config = TrainConfig(data=shapes, model="unet_contour", mode="panoptic", out=tmp_path / "run", steps=6,
                         batch_size=2, crop=32, width=4, val_every=0, seed=0, device="cpu")
    best = train(config).best
    assert read_card(best)["postprocess"] == {"interior_threshold": 0.5, "min_area": 10, "stuff_area": 64}
    runner = CliRunner()
    wrong = runner.invoke(app, ["predict", str(shapes / "images"), "--weights", str(best), "--mode", "instance",
                                "--center-threshold", "0.3", "--out", str(tmp_path / "p"), "--device", "cpu"])
    assert wrong.exit_code == 2 and "--center-threshold does not apply to unet_contour" in wrong.output
    assert "--interior-threshold" in wrong.output  # the options it does take
    counts = []
    for area in ("1", "100000"):
        result = runner.invoke(app, ["predict", str(shapes / "images"), "--weights", str(best), "--mode", "instance",
                                     "--min-area", area, "--out", str(tmp_path / area), "--json", "--no-overlay",
                                     "--device", "cpu"])
        assert result.exit_code == 0, result.output
        counts.append(sum(len(json.loads(line)["segments"]) for line in result.stdout.splitlines()))
    assert counts[1] == 0 <= counts[0]  # nothing is 100000 px: the option reached the post-processing
    scored = evaluate_model(shapes, "panoptic", weights=best, device="cpu", thresholds={"min_area": 100000})
    assert scored["things"]["pq"] in (0.0, None)
    flagged = runner.invoke(app, ["eval", "--mode", "panoptic", "--gt", "a.json", "--pred", "b.json",
                                  "--min-area", "5"])
    assert flagged.exit_code == 2 and "goes with --data" in flagged.output
    # eval --data --tta scores what predict --tta writes: the option reaches the inference (and only with --data).
    model_inputs.clear()
    for extra in ([], ["--tta"]):
        result = runner.invoke(app, ["eval", "--mode", "semantic", "--data", str(shapes), "--weights", str(best),
                                     *extra, "--json", "-", "--device", "cpu", "-q"])
        assert result.exit_code == 0 and "miou" in json.loads(result.stdout), result.output
    used = [options.tta for _, options in model_inputs]
    assert used and not any(used[: len(used) // 2]) and all(used[len(used) // 2 :])
    flagged = runner.invoke(app, ["eval", "--mode", "panoptic", "--gt", "a.json", "--pred", "b.json", "--tta"])
    assert flagged.exit_code == 2 and "--tta" in flagged.output


def test_a_mode_post_processes_with_its_own_thresholds_when_the_card_has_them(monkeypatch):
    import segcli.models.contour as contour
    from segcli.inference import InferenceOptions, postprocess_options, predict_arrays
    from segcli.structures import Mode

    space = synth_label_space("shapes")
    things = [i for i, thing in enumerate(space.isthing) if thing]
    model = build_model("unet_contour", num_classes=space.num_classes, width=4, thing_classes=things)
    model_args = {"num_classes": space.num_classes, "width": 4, "thing_classes": things}
    card = make_card("unet_contour", model_args, "panoptic", space,
                     postprocess={"interior_threshold": 0.5, "min_area": 40, "stuff_area": 64},
                     postprocess_by_mode={"instance": {"interior_threshold": 0.5, "min_area": 20, "stuff_area": 64}})
    assert postprocess_options(model, card, mode=Mode.INSTANCE)["min_area"] == 20
    panoptic_min_area = postprocess_options(model, card, mode="panoptic")["min_area"]
    assert panoptic_min_area == 40 == postprocess_options(model, card)["min_area"]
    assert postprocess_options(model, card, {"min_area": 5}, mode=Mode.INSTANCE)["min_area"] == 5  # the option wins
    used = []
    real = contour.contour_prediction
    monkeypatch.setattr(contour, "contour_prediction", lambda *a, **k: used.append(k["min_area"]) or real(*a, **k))
    image = np.zeros((32, 32, 3), np.uint8)
    for mode in (Mode.INSTANCE, Mode.PANOPTIC, Mode.SEMANTIC):
        predict_arrays(model, card, [image], options=InferenceOptions(mode=mode))
    assert used == [20, 40, 40]


# ---------------------------------------------------------------- a plan from the data


def _blobs(root: Path, n: int, size: int, diameter: int, count: int, seed: int = 0,
           levels: list[tuple[int, int]] | None = None) -> Path:
    """An idmap dataset: n grey size x size images with `count` round objects of `diameter` px each; image i has
    grey levels levels[i % len(levels)] = (object, ground), bright objects on dark ground (200, 30) by default."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "instances").mkdir(exist_ok=True)
    levels = levels or [(200, 30)]
    for i in range(n):
        ids = np.zeros((size, size), np.uint16)
        for k, (y, x) in enumerate(rng.integers(diameter, size - diameter, (count, 2)), start=1):
            cv2.circle(ids, (int(x), int(y)), diameter // 2, k, -1)
        image = np.where(ids > 0, *levels[i % len(levels)]).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        cv2.imwrite(str(root / "instances" / f"{i}.png"), ids)
    return root


def test_the_plan_follows_the_data(tmp_path):
    from segcli.services.train import plan_run

    small_objects = _blobs(tmp_path / "small", n=3, size=1000, diameter=10, count=200)
    large_objects = _blobs(tmp_path / "large", n=3, size=128, diameter=60, count=1)
    plans = {}
    for name, data in (("small", small_objects), ("large", large_objects)):
        config = TrainConfig(data=data, model="unet_panoptic", mode="panoptic", out=tmp_path / name)
        resolved, plan, print_ = plan_run(config)
        plans[name] = (resolved, plan, print_)
        assert print_.bit_depth == 8 and print_.height[1] == print_.width[1]
    (small, _, small_print), (large, _, large_print) = plans["small"], plans["large"]
    assert 8 <= small_print.object_diameter["object"] <= 11 and 50 <= large_print.object_diameter["object"] <= 62
    assert small.crop == 160 and small.scale == 1.0  # context for small objects, at their own pixels
    assert large.crop == 128  # the whole (small) image
    assert small.batch_size == 8 and large.batch_size > small.batch_size  # about the same pixels per step
    assert small.center_sigma < large.center_sigma  # the centre Gaussian follows the object size
    # An option wins over the plan, and the table says so.
    resolved, plan, _ = plan_run(TrainConfig(data=small_objects, model="unet_panoptic", mode="panoptic", batch_size=3,
                                             center_sigma=5.0))
    assert resolved.batch_size == 3 and resolved.center_sigma == 5.0 and resolved.crop == 160
    assert ("batch_size", "3", "--batch-size") in plan.rows() and ("center_sigma", "5", "--center-sigma") in plan.rows()
    # A window size given: the batch follows it (about the plan's pixels per step) unless it is given too.
    resolved, plan, _ = plan_run(TrainConfig(data=small_objects, model="unet_panoptic", mode="panoptic", crop=256))
    assert resolved.crop == 256 and resolved.batch_size == 3 and ("batch_size", "3", "--crop") in plan.rows()
    resolved, _, _ = plan_run(TrainConfig(data=small_objects, model="unet_panoptic", mode="panoptic", crop=96))
    assert resolved.batch_size == 16  # 22 windows of 96 px would be the plan's pixels; 16 at most
    resolved, _, _ = plan_run(TrainConfig(data=small_objects, model="unet_panoptic", mode="panoptic", crop=256,
                                          batch_size=5))
    assert resolved.batch_size == 5


def test_the_plan_turns_grey_images_and_keeps_photos_upright(tmp_path):
    from segcli.services.train import plan_run

    grey = _blobs(tmp_path / "grey", n=2, size=96, diameter=12, count=5)
    photos = generate("shapes", tmp_path / "photos", n=4, size=48, seed=0)  # colour shapes on colour backgrounds
    resolved, plan, print_ = plan_run(TrainConfig(data=grey, model="unet_contour", mode="instance"))
    assert print_.grey_share == 1.0 and resolved.rotate is True and resolved.zoom == plan.zoom == 0.0
    resolved, plan, print_ = plan_run(TrainConfig(data=photos, model="unet", mode="semantic"))
    assert print_.grey_share == 0.0 and resolved.rotate is False and ("rotate", "no", "plan") in plan.rows()
    resolved, plan, _ = plan_run(TrainConfig(data=grey, model="unet_contour", mode="instance", rotate=False, zoom=0.25))
    assert resolved.rotate is False and resolved.zoom == 0.25 and ("zoom", "0.25", "--zoom") in plan.rows()
    resolved, plan, _ = plan_run(TrainConfig(data=grey, model="unet_contour", mode="instance", img_size=64))
    assert resolved.rotate is False and resolved.zoom == 0.0  # resize training has its own scale augmentation
    with pytest.raises(UsageError, match="augment crop training"):
        train(TrainConfig(data=grey, model="unet_contour", mode="instance", img_size=64, rotate=True,
                          out=tmp_path / "r"))
    with pytest.raises(UsageError, match="augment crop training"):
        train(TrainConfig(data=grey, model="unet_contour", mode="instance", img_size=64, invert=True,
                          out=tmp_path / "i"))
    resolved, plan, _ = plan_run(TrainConfig(data=grey, model="unet_contour", mode="instance", invert=True))
    assert resolved.invert is True and ("invert", "yes", "--invert") in plan.rows()


# ---------------------------------------------------------------- dark ground: one polarity for mixed microscopy

FLUORESCENCE, BRIGHTFIELD = (200, 30), (60, 220)  # (object, ground) grey levels: nuclei bright on dark, dark on bright


def test_images_on_bright_ground_are_inverted_and_others_left_alone(rng):
    from segcli.preprocess import on_dark_ground

    bright = np.full((40, 50, 3), 220, np.uint8)
    bright[10:20, 10:20] = rng.integers(0, 80, (10, 10, 3))
    dark = 255 - bright
    assert np.array_equal(on_dark_ground(bright), 255 - bright) and on_dark_ground(bright).dtype == np.uint8
    assert on_dark_ground(dark) is dark  # already on dark ground: the same array, no copy
    assert np.array_equal(on_dark_ground(on_dark_ground(bright)), on_dark_ground(bright))  # idempotent
    large = np.full((700, 700, 3), 200, np.uint8)  # more pixels than the median's sample: decided all the same
    assert on_dark_ground(large).max() == 55


def test_the_plan_puts_mixed_polarities_on_dark_ground_and_leaves_other_data_alone(tmp_path):
    from segcli.services.train import plan_run

    mixed = _blobs(tmp_path / "mixed", n=4, size=64, diameter=10, count=4, levels=[FLUORESCENCE, BRIGHTFIELD])
    dark = _blobs(tmp_path / "dark", n=4, size=64, diameter=10, count=4)
    em = _blobs(tmp_path / "em", n=4, size=64, diameter=10, count=4, levels=[(40, 110), (60, 150)])  # mid-grey grounds
    photos = generate("shapes", tmp_path / "photos", n=4, size=48, seed=0)
    expected = {mixed: True, dark: False, em: False, photos: False}
    for data, dark_ground in expected.items():
        resolved, plan, print_ = plan_run(TrainConfig(data=data, model="unet_contour", mode="instance"))
        assert resolved.dark_ground is plan.dark_ground is dark_ground, (data.name, print_)
    _, _, print_ = plan_run(TrainConfig(data=mixed, model="unet_contour", mode="instance"))
    assert 0.0 < print_.bright_ground_share < 1.0 and print_.mid_grey_share == 0.0  # the training split of the four
    resolved, plan, _ = plan_run(TrainConfig(data=mixed, model="unet_contour", mode="instance", dark_ground=False))
    assert resolved.dark_ground is False and ("dark_ground", "no", "--dark-ground") in plan.rows()


def test_a_dark_ground_model_sees_every_image_on_dark_ground_in_training_and_at_inference(tmp_path, monkeypatch,
                                                                                         model_inputs):
    import segcli.inference
    import segcli.training.trainer
    from segcli.inference import predict_arrays
    from segcli.preprocess import median_grey, on_dark_ground
    from segcli.services.train import plan_run

    data = _blobs(tmp_path / "mixed", n=4, size=64, diameter=10, count=4, levels=[FLUORESCENCE, BRIGHTFIELD])
    trained_on = []  # the median grey level of every training image the loader kept, after the polarity step
    monkeypatch.setattr(segcli.training.trainer, "on_dark_ground",
                        lambda image: trained_on.append(median_grey(out := on_dark_ground(image))) or out)
    run = train(TrainConfig(data=data, model="unet_contour", mode="instance", out=tmp_path / "run", steps=2, width=4,
                            val_every=0, workers=0, device="cpu"))
    model, card = load_checkpoint(run.best)
    assert card["intensity"]["dark_ground"] is True and card["plan"]["plan"]["dark_ground"] is True
    assert trained_on and max(trained_on) < 64  # brightfield images (ground 220) reached the model as ground 35
    # Inference: the model's input for a bright-ground image is that of its inverse under a plain card.
    model_inputs.clear()  # from here on: predict only
    brightfield = cv2.imread(str(data / "images" / "1.png"))  # objects 60 on ground 220
    plain = {**card, "intensity": {**card["intensity"], "dark_ground": False}}
    predict_arrays(model, card, [brightfield])
    predict_arrays(model, plain, [255 - brightfield])
    predict_arrays(model, plain, [brightfield])
    inputs = [batch for batch, _ in model_inputs]
    assert torch.equal(inputs[0], inputs[1]) and not torch.equal(inputs[0], inputs[2])
    # Fine-tuning keeps the polarity the weights learnt, even on data that does not mix polarities.
    dark = _blobs(tmp_path / "dark", n=2, size=64, diameter=10, count=4)
    resolved, plan, _ = plan_run(TrainConfig(data=dark, model="unet_contour", mode="instance", init=run.best))
    assert resolved.dark_ground is True and ("dark_ground", "yes", "--model/--weights") in plan.rows()


def test_plan_only_prints_the_plan_and_stops(tmp_path):
    from typer.testing import CliRunner

    from segcli.cli import app

    data = _blobs(tmp_path / "data", n=2, size=96, diameter=12, count=5)
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--model", "unet_contour", "--mode", "instance",
                                      "--plan-only", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "training plan" in result.output and "boundary_width" in result.output and "crop" in result.output
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
    run = train(TrainConfig(data=data, model="unet_contour", mode="instance", out=tmp_path / "run2", steps=2, width=4,
                            val_every=0, device="cpu"))
    card = read_card(run.best)
    assert card["plan"]["plan"]["crop"] == 96 and card["plan"]["fingerprint"]["object_diameter"]["object"] > 8
    assert card["model_args"]["contact_weight"] == card["plan"]["plan"]["model_args"]["contact_weight"] == 10.0
    assert json.loads((tmp_path / "run2" / "plan.json").read_text()) == card["plan"]


# ---------------------------------------------------------------- stained histology: H&E jitter

HAEMATOXYLIN, EOSIN = (90, 40, 140), (235, 170, 215)  # RGB: purple nuclei on pink stroma


def _stained(root: Path, n: int = 4) -> Path:
    """An idmap dataset of H&E-like images: purple round nuclei on pink ground, with some texture."""
    data = _blobs(root, n=n, size=64, diameter=10, count=4)
    rng = np.random.default_rng(1)
    for path in sorted((data / "images").iterdir()):
        ids = cv2.imread(str(data / "instances" / path.name), cv2.IMREAD_UNCHANGED)
        rgb = np.where(ids[..., None] > 0, HAEMATOXYLIN, EOSIN) + rng.integers(-10, 10, (64, 64, 3))
        cv2.imwrite(str(path), cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    return data


def test_the_plan_jitters_stains_of_histology_only(tmp_path):
    from segcli.services.train import plan_run

    histology = _stained(tmp_path / "he")
    fluorescence = _blobs(tmp_path / "fl", n=4, size=64, diameter=10, count=4)
    photos = generate("shapes", tmp_path / "photos", n=4, size=48, seed=0)
    for data, stain in ((histology, True), (fluorescence, False), (photos, False)):
        resolved, plan, print_ = plan_run(TrainConfig(data=data, model="unet_contour", mode="instance"))
        assert resolved.stain is plan.stain is stain, (data.name, print_)
    resolved, plan, print_ = plan_run(TrainConfig(data=histology, model="unet_contour", mode="instance"))
    assert print_.stained_share == 1.0 and resolved.rotate is True  # histology has no up either
    resolved, plan, _ = plan_run(TrainConfig(data=histology, model="unet_contour", mode="instance", stain=False))
    assert resolved.stain is False and ("stain", "no", "--stain") in plan.rows()
    with pytest.raises(UsageError, match="augment crop training"):
        train(TrainConfig(data=histology, model="unet_contour", mode="instance", img_size=64, stain=True,
                          out=tmp_path / "s"))


def test_stain_jitter_changes_stain_amounts_and_nothing_else(tmp_path):
    import torch
    from torchvision import tv_tensors

    from segcli.data.transforms import StainJitter, jitter_stains

    image = cv2.cvtColor(cv2.imread(str(sorted((_stained(tmp_path / "he", n=1) / "images").iterdir())[0])),
                         cv2.COLOR_BGR2RGB)
    assert np.array_equal(jitter_stains(image, np.ones(3), np.zeros(3)), image)  # no jitter: the image back
    more_haematoxylin = jitter_stains(image, np.array([1.5, 1.0, 1.0]), np.zeros(3))
    assert more_haematoxylin.mean() < image.mean()  # more stain absorbs more light
    torch.manual_seed(0)
    mask = tv_tensors.Mask(torch.ones(64, 64, dtype=torch.uint8))
    out = StainJitter()({"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), "mask": mask})
    assert out["mask"] is mask and out["image"].dtype == torch.uint8
    assert not torch.equal(out["image"], torch.from_numpy(image).permute(2, 0, 1))
