"""Bottom-up panoptic models: targets from masks, every registered head model runs, unet_panoptic learns through
`train`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.data.synth import render_sample, synth_label_space
from segcli.errors import ModelError
from segcli.models.panoptic_deeplab import PanopticDeepLab
from segcli.models.panoptic_targets import TargetConfig, instance_centers, panoptic_targets
from segcli.models.registry import build_model
from segcli.preprocess import image_to_tensor
from segcli.structures import Prediction

PANOPTIC_MODELS = ["unet_panoptic", "fcn_panoptic", "deeplab_panoptic"]
SHAPES = synth_label_space("shapes")


def _target(sample) -> dict[str, torch.Tensor]:
    h, w = sample.semantic.shape
    masks = np.stack([i.mask for i in sample.instances]) if sample.instances else np.zeros((0, h, w), bool)
    return {"semantic": torch.from_numpy(sample.semantic.astype(np.int64)),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "labels": torch.tensor([i.label for i in sample.instances], dtype=torch.int64)}


def _synthetic(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    samples = [render_sample("shapes", size, rng, name=f"s{i}") for i in range(n)]
    return samples, torch.stack([image_to_tensor(s.image) for s in samples]), [_target(s) for s in samples]


def test_targets_from_masks():
    semantic = torch.zeros(40, 40, dtype=torch.int64)
    big = torch.zeros(40, 40, dtype=torch.bool)
    big[4:24, 4:24] = True  # 400 px, centre of mass (13.5, 13.5)
    small = torch.zeros(40, 40, dtype=torch.bool)
    small[30:34, 30:36] = True  # 24 px, centre (31.5, 32.5)
    stuff = torch.zeros(40, 40, dtype=torch.bool)
    stuff[36:, :] = True
    semantic[big], semantic[small] = 2, 3
    semantic[0, 0] = 255
    target = {"semantic": semantic, "masks": torch.stack([big, small, stuff]), "labels": torch.tensor([2, 3, 1])}
    out = panoptic_targets(target, thing_classes=[2, 3], config=TargetConfig(sigma=2.0, small_instance_area=100))

    assert instance_centers(torch.stack([big, small])).tolist() == [[13.5, 13.5], [31.5, 32.5]]
    heatmap = out["center"][0]
    assert heatmap.shape == (40, 40) and heatmap.max() == 1.0
    assert heatmap[14, 14] == 1.0 and heatmap[32, 32] == 1.0  # peaks on the rounded centres
    assert heatmap[14, 16] == pytest.approx(np.exp(-4 / 8))  # a Gaussian of sigma 2
    # Every instance pixel plus its offset lands on its instance's centre; nothing else is trained.
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    assert torch.allclose((ys + out["offset"][0])[big], torch.tensor(13.5))
    assert torch.allclose((xs + out["offset"][1])[small], torch.tensor(32.5))
    assert torch.equal(out["offset_weight"].bool(), big | small)  # the stuff "instance" is skipped
    assert out["semantic_weight"][small].eq(3.0).all() and out["semantic_weight"][big].eq(1.0).all()
    assert out["center_weight"][0, 0] == 0 and out["center_weight"].sum() == 40 * 40 - 1


def test_targets_of_an_image_without_things():
    semantic = torch.ones(8, 8, dtype=torch.int64)
    no_things = {"semantic": semantic, "masks": torch.zeros(0, 8, 8), "labels": torch.zeros(0, dtype=torch.int64)}
    out = panoptic_targets(no_things, [2])
    assert out["center"].abs().sum() == 0 and out["offset_weight"].sum() == 0


@pytest.mark.parametrize("name", PANOPTIC_MODELS)
def test_forward_losses_and_predictions(name):
    torch.manual_seed(0)
    samples, images, targets = _synthetic(2, 48, seed=0)
    model = build_model(name, num_classes=SHAPES.num_classes, thing_classes=SHAPES.thing_indices, width=8).train()
    outputs = model(images)
    assert outputs["semantic"].shape == (2, 6, 48, 48)
    assert outputs["center"].shape == (2, 1, 48, 48) and outputs["offset"].shape == (2, 2, 48, 48)
    losses = model.compute_losses(images, targets)
    assert set(losses) == {"semantic", "center", "offset"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # Without instance masks (semantic mode), only the semantic loss.
    assert set(model.compute_losses(images, [{"semantic": t["semantic"]} for t in targets])) == {"semantic"}
    model.eval()
    with torch.no_grad():
        predictions = model.postprocess(model(images), center_threshold=0.0, stuff_area=1)
    assert len(predictions) == 2 and all(isinstance(p, Prediction) for p in predictions)
    for prediction in predictions:
        assert prediction.semantic.shape == (48, 48) and prediction.semantic.dtype == np.uint8
        assert prediction.panoptic.shape == (48, 48) and prediction.panoptic.dtype == np.int32
        panoptic_ids = np.unique(prediction.panoptic[prediction.panoptic > 0]).tolist()
        assert sorted(panoptic_ids) == sorted(s.id for s in prediction.segments)
        assert all(inst.label in SHAPES.thing_indices for inst in prediction.instances)
        scores = [inst.score for inst in prediction.instances]
        assert scores == sorted(scores, reverse=True)


def test_trainer_options_dice_and_class_weights_act_on_the_semantic_loss(tmp_path):
    """--dice and --class-weights auto, given to `train`, change the panoptic model's losses from the first step."""
    from segcli.data.synth import generate
    from segcli.services.train import TrainConfig, train

    data = generate("shapes", tmp_path / "shapes", n=6, size=32, seed=0)

    def first_losses(name: str, **options) -> dict:
        steps = []
        train(TrainConfig(data=data, model="fcn_panoptic", mode="panoptic", steps=1, batch_size=2, img_size=32, width=4,
                          seed=0, out=tmp_path / name, **options),
              callback=lambda event, **info: steps.append(info["losses"]) if event == "step" else None)
        return steps[0]

    plain = first_losses("plain")
    dice = first_losses("dice", dice=0.5)
    weighted = first_losses("cw", class_weights="auto")
    assert "dice" not in plain and dice["dice"] > 0
    assert dice["semantic"] == pytest.approx(plain["semantic"])  # the same batch and weights: only the dice term is new
    assert weighted["semantic"] != pytest.approx(plain["semantic"])  # the classes are weighted


def test_all_ignored_pixels_give_a_zero_loss_not_nan():
    model = build_model("fcn_panoptic", num_classes=3, width=4)
    losses = model.compute_losses(torch.randn(1, 3, 64, 64), [{"semantic": torch.full((64, 64), 255)}])
    assert losses["semantic"] == 0


def test_thing_classes_are_checked_and_default_to_all_but_zero():
    assert build_model("fcn_panoptic", num_classes=4, width=4).thing_classes == [1, 2, 3]
    with pytest.raises(ModelError, match="thing_classes"):
        build_model("fcn_panoptic", num_classes=4, width=4, thing_classes=[2, 7])


def test_flip_outputs_restores_maps_of_the_mirrored_image():
    """Test-time flip: targets of the mirrored image, flipped back, equal the image's own targets."""
    samples, _, targets = _synthetic(1, 40, seed=3)
    things = SHAPES.thing_indices
    original = panoptic_targets(targets[0], things)
    mirrored = panoptic_targets({k: v.flip(-1) if v.dim() > 1 else v for k, v in targets[0].items()}, things)
    as_outputs = {"center": mirrored["center"][None], "offset": mirrored["offset"][None]}
    back = PanopticDeepLab.flip_outputs(as_outputs)
    assert torch.allclose(back["offset"][0], original["offset"], atol=1e-4)
    assert samples[0].instances  # the check is not vacuous


def test_segcli_train_panoptic_scores_far_above_an_untrained_model(tmp_path):
    """The issue's check through the user's path: `segcli data synth`, `segcli train`, `segcli eval --data`."""
    from segcli.checkpoint import load_checkpoint, save_checkpoint
    from segcli.data.synth import generate
    from segcli.services.evaluate import evaluate_model
    from segcli.services.train import TrainConfig, train

    data = generate("shapes", tmp_path / "shapes", n=64, size=64, seed=0)
    run = train(TrainConfig(data=data, model="unet_panoptic", mode="panoptic", steps=150, batch_size=8, img_size=64,
                            width=8, lr=3e-3, seed=0, out=tmp_path / "run", device="cpu"))
    trained, card = load_checkpoint(run.best)
    torch.manual_seed(0)
    untrained = build_model("unet_panoptic", **card["model_args"])
    save_checkpoint(tmp_path / "untrained", untrained, card)
    before = evaluate_model(data, "panoptic", weights=tmp_path / "untrained.safetensors", device="cpu")["pq"]
    after = evaluate_model(data, "panoptic", weights=run.best, device="cpu")["pq"]
    assert after > before + 0.2, (before, after)


@pytest.mark.parametrize("name", ["unet_panoptic", "unet_contour"])
def test_only_the_requested_mode_is_built(name):
    """Asked for semantic, a panoptic model neither groups instances nor pastes a panoptic map; asked for
    instances, it pastes none; the outputs it does build are those of the full post-processing."""
    from segcli.inference import InferenceOptions, predict_arrays
    from segcli.structures import Mode

    torch.manual_seed(0)
    model = build_model(name, num_classes=SHAPES.num_classes, width=8).eval()
    samples, _, _ = _synthetic(1, 48, seed=3)
    images = [samples[0].image]
    # A low centre threshold / interior threshold so an untrained model still yields instances to compare.
    thresholds = {"center_threshold": 0.0} if name == "unet_panoptic" else {"interior_threshold": 0.0}
    full, semantic, instance = (predict_arrays(model, None, images, "cpu", InferenceOptions(mode=mode), **thresholds)[0]
                                for mode in (Mode.PANOPTIC, Mode.SEMANTIC, Mode.INSTANCE))
    assert full.panoptic is not None and full.instances
    assert semantic.instances == [] and semantic.panoptic is None and semantic.segments == []
    assert instance.panoptic is None and instance.segments == []
    np.testing.assert_array_equal(semantic.semantic, full.semantic)
    assert [(i.label, i.score) for i in instance.instances] == [(i.label, i.score) for i in full.instances]
