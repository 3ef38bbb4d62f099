"""Tiled inference agrees with whole-image inference, and objects on a tile seam come out whole, once."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcli.inference import (
    InferenceOptions,
    dense_forward,
    predict_arrays,
    prepare_model,
    tile_starts,
    tiled_dense_forward,
)
from segcli.models.base import SegModel
from segcli.models.postprocess import bottom_up_prediction
from segcli.models.registry import build_model
from segcli.structures import Instance, Prediction

# ---------------------------------------------------------------- a dense model: blended logits


def _clean(length: int, tile: int, overlap: float, reach: int) -> np.ndarray:
    """Pixels (along one axis) that every covering tile sees with its whole receptive field (reach px each side)."""
    clean = np.ones(length, bool)
    for start in tile_starts(length, tile, overlap):
        end = min(start + tile, length)
        covered = np.zeros(length, bool)
        covered[start:end] = True
        inner = np.zeros(length, bool)
        inner[start + (reach if start > 0 else 0) : end - (reach if end < length else 0)] = True
        clean &= ~covered | inner
    return clean


def test_tiled_logits_equal_whole_image_logits_where_the_receptive_field_fits():
    torch.manual_seed(0)
    model = build_model("fullres", num_classes=3, width=4, depth=3).eval()  # three 3x3 convolutions: 3 px reach
    image = torch.randn(1, 3, 96, 80)
    options = InferenceOptions(tile=40, overlap=0.5, batch_size=3)
    whole = dense_forward(model, image, options)["semantic"]
    tiled = tiled_dense_forward(model, image, options)["semantic"]
    assert tiled.shape == whole.shape
    clean = _clean(96, 40, 0.5, 3)[:, None] & _clean(80, 40, 0.5, 3)[None, :]
    assert clean.mean() > 0.5
    clean = torch.from_numpy(clean)
    assert torch.allclose(tiled[0][:, clean], whole[0][:, clean], atol=1e-5)
    # Elsewhere the Gaussian weights keep a tile's border errors small: the classes still agree.
    assert (tiled.argmax(1) == whole.argmax(1)).float().mean() > 0.99


# ---------------------------------------------------------------- objects on a seam


def _disks(shape: tuple[int, int], centers: list[tuple[int, int]],
           radius: int = 8) -> tuple[np.ndarray, list[np.ndarray]]:
    masks = []
    for cy, cx in centers:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        masks.append((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2)
    image = np.full((*shape, 3), 40, np.uint8)
    image[np.logical_or.reduce(masks)] = 220
    return image, masks


class DiskFinder(SegModel):
    """A dense bottom-up model made by hand: bright pixels are the thing class 1, the centre heatmap is
    the brightness blurred by a Gaussian (peaking at each disk's centre), offsets are zero. Its reach is
    the blur's 9 px, so what the tiles compute is exact wherever a tile sees 9 px around a pixel."""

    modes = ("semantic", "instance", "panoptic")
    size_multiple = 1

    def __init__(self, sigma: float = 3.0) -> None:
        super().__init__()
        reach = int(3 * sigma)
        g = torch.exp(-(torch.arange(-reach, reach + 1.0) ** 2) / (2 * sigma**2))
        self.register_buffer("blur", (g[:, None] * g[None, :] / (g.sum() ** 2))[None, None])
        self.reach = reach

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        bright = (images.mean(1, keepdim=True) > 0).float()  # normalised: above the mean grey
        center = F.conv2d(bright, self.blur, padding=self.reach)
        return {"semantic": torch.cat([1 - 2 * bright, 2 * bright - 1], 1) * 4, "center": center,
                "offset": torch.zeros_like(images[:, :2])}

    def compute_losses(self, images, targets):
        raise NotImplementedError("made by hand, never trained")

    def postprocess(self, outputs, **kwargs) -> list[Prediction]:
        return [bottom_up_prediction(s, c, o, [1], stuff_area=1)
                for s, c, o in zip(outputs["semantic"], outputs["center"], outputs["offset"])]


def _masks(prediction: Prediction) -> list[np.ndarray]:
    return sorted((inst.mask for inst in prediction.instances), key=lambda m: np.argwhere(m)[:, 1].min())


def test_dense_model_finds_a_disk_cut_by_every_tile_whole_and_once():
    # Tiles of 48 px with 25% overlap start at x = 0, 36, 72, 80: the disk at x 35..49 is cut by both tiles holding it.
    assert tile_starts(128, 48, 0.25) == [0, 36, 72, 80]
    image, disks = _disks((48, 128), [(24, 42), (24, 100)])
    model = DiskFinder().eval()
    whole, tiled = (predict_arrays(model, None, [image], "cpu", InferenceOptions(tile=t, overlap=0.25))[0]
                    for t in (None, 48))
    for prediction in (whole, tiled):
        found = _masks(prediction)
        assert len(found) == 2
        assert all(np.array_equal(m, d) for m, d in zip(found, disks))
        assert len(prediction.segments) == 3  # two disks and the background
    assert _regions(whole) == _regions(tiled)  # the same segments (their ids follow the scores, which differ a little)


def _regions(prediction: Prediction) -> list[tuple[int, bytes]]:
    return sorted((s.label, (prediction.panoptic == s.id).tobytes()) for s in prediction.segments)


class ComponentFinder(SegModel):
    """A sparse model made by hand: each connected bright region of its input is an instance scoring 0.9."""

    modes = ("semantic", "instance", "panoptic")
    dense = False

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        bright = (images.mean(1, keepdim=True) > 0).float()
        return {"semantic": torch.cat([1 - bright, bright], 1), "bright": bright}

    def compute_losses(self, images, targets):
        raise NotImplementedError("made by hand, never trained")

    def postprocess(self, outputs, **kwargs) -> list[Prediction]:
        predictions = []
        for logits, bright in zip(outputs["semantic"], outputs["bright"]):
            count, labels = cv2.connectedComponents(bright[0].numpy().astype(np.uint8))
            instances = [Instance(labels == k, 1, 0.9) for k in range(1, count)]
            predictions.append(self.assemble(logits, instances))
        return predictions

    def assemble(self, semantic_logits: torch.Tensor, instances: list[Instance], **thresholds) -> Prediction:
        return Prediction(semantic=semantic_logits.argmax(0).numpy().astype(np.uint8), instances=instances)


def test_sparse_model_keeps_each_seam_object_once_from_a_tile_that_holds_it_whole():
    # Tiles at x = 0, 24, 48, 72, 80: the first disk (x 35..49) is whole only in the tile at 24 and cut
    # by its neighbours; the second (x 54..68) is whole in the tiles at 24 and 48: a duplicate to merge.
    assert tile_starts(128, 48, 0.5) == [0, 24, 48, 72, 80]
    image, disks = _disks((48, 128), [(24, 42), (24, 61)])
    prediction = predict_arrays(ComponentFinder(), None, [image], "cpu", InferenceOptions(tile=48, overlap=0.5))[0]
    assert prediction.semantic.shape == (48, 128)
    found = _masks(prediction)
    assert len(found) == 2 and all(np.array_equal(m, d) for m, d in zip(found, disks))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiled_mask_rcnn_still_gives_semantic_and_panoptic_maps(dtype):
    torch.manual_seed(0)
    model = build_model("maskrcnn_small", num_classes=3, width=8).eval()
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    prediction = predict_arrays(model, None, [image], "cpu", InferenceOptions(tile=64, overlap=0.25, dtype=dtype))[0]
    assert prediction.semantic.shape == prediction.panoptic.shape == (80, 96)
    assert all(inst.mask.shape == (80, 96) for inst in prediction.instances)


# ---------------------------------------------------------------- batches of whole images


def test_batched_images_give_the_same_predictions_in_input_order():
    torch.manual_seed(0)
    model = build_model("unet", num_classes=3, width=4).eval()
    rng = np.random.default_rng(1)
    image_shapes = [(32, 32, 3)] * 3 + [(40, 24, 3)] + [(32, 32, 3)]
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in image_shapes]
    one_by_one = [predict_arrays(model, None, [image], "cpu")[0] for image in images]
    batched = predict_arrays(model, None, images, "cpu", InferenceOptions(batch_size=2))
    assert [p.semantic.shape for p in batched] == [i.shape[:2] for i in images]
    for a, b in zip(one_by_one, batched):
        assert np.array_equal(a.semantic, b.semantic)  # identical, not "mostly": a mixed-up batch differs everywhere
    # The logits themselves agree to float32 rounding (a batch uses other kernels, never other arithmetic).
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        together = model(x)["semantic"]
        alone = torch.cat([model(x[i : i + 1])["semantic"] for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["unet", "unet_panoptic", "sliding"])
def test_channels_last_gives_the_same_predictions(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, width=4).eval()
    images = [np.random.default_rng(2).integers(0, 255, (48, 40, 3), dtype=np.uint8)]
    plain = predict_arrays(model, None, images, "cpu")[0]
    options = InferenceOptions(channels_last=True)
    fast = predict_arrays(prepare_model(model, options), None, images, "cpu", options)[0]
    assert (plain.semantic == fast.semantic).mean() > 0.999
    if plain.panoptic is not None:
        assert (plain.panoptic == fast.panoptic).mean() > 0.999


def test_tta_averages_the_views_a_model_was_trained_on():
    torch.manual_seed(0)
    model = build_model("unet_contour", num_classes=2, width=4, depth=2).eval()
    image = torch.randn(1, 3, 24, 40)  # not square: turned views swap height and width

    def scores(x, options):  # the model's maps as one tensor (class scores, then the boundary class)
        return torch.cat(list(dense_forward(model, x, options).values()), dim=1)

    plain = scores(image, InferenceOptions())
    mirrored = InferenceOptions(tta=True)
    turned = InferenceOptions(tta=True, tta_turns=True)
    both = scores(image, mirrored)
    assert torch.allclose(both, (plain + scores(image.flip(-1), InferenceOptions()).flip(-1)) / 2, atol=1e-5)
    # Averaged over the square's 8 symmetries, the output follows a turn or mirror of the input exactly;
    # over the mirror alone it follows a mirror but not a turn.
    eight = scores(image, turned)
    assert torch.allclose(scores(image.rot90(1, (-2, -1)), turned), eight.rot90(1, (-2, -1)), atol=1e-5)
    assert torch.allclose(scores(image.flip(-2), turned), eight.flip(-2), atol=1e-5)
    assert torch.allclose(scores(image.flip(-1), mirrored), both.flip(-1), atol=1e-5)
    assert not torch.allclose(scores(image.flip(-2), mirrored), both.flip(-2), atol=1e-3)


def test_predict_arrays_turns_only_models_trained_turned(monkeypatch):
    import segcli.inference as inference

    model = build_model("unet_contour", num_classes=2, width=4, depth=2).eval()
    seen = []
    monkeypatch.setattr(inference, "dense_forward", lambda m, x, options: seen.append(options.tta_turns) or m(x))
    image = np.zeros((16, 16, 3), np.uint8)
    for card, tta in (({"plan": {"plan": {"rotate": True}}}, True), ({"plan": {"plan": {"rotate": False}}}, True),
                      ({"plan": {"plan": {"rotate": True}}}, False), (None, True)):
        inference.predict_arrays(model, card, [image], options=InferenceOptions(tta=tta, channels_last=False))
    assert seen == [True, False, False, False]
