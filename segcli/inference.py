"""Run a model on images in memory: padding, flip and turn test-time augmentation, tiling, post-processing.

`predict_arrays` is the one inference path: `segcli predict`, `eval --data`, training validation
and `compare` all call it. Dense models (every output a per-pixel map) are tiled by blending the
raw outputs of overlapping tiles with Gaussian weights, as nnU-Net does, and post-processed once
on the whole image, so objects on a seam come out whole. Models with sparse outputs (Mask R-CNN)
run per tile; instances cut by an inner tile edge are dropped (their neighbour tile sees them
whole when the overlap exceeds the object) and duplicates in the overlaps merged by mask IoU; their
semantic map is blended like a dense output, and `model.assemble` fuses the two once. Consecutive
same-size images that need no tiling run as one batch.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from segcli import io
from segcli.checkpoint import card_object_diameter, card_pixel_size, card_scaling, card_turned, circle_diameter
from segcli.device import reuse_freed_memory
from segcli.errors import ModelError, UsageError, check_minimums
from segcli.models.fusion import fast_max_pool, fold_batchnorm, fuse_concat_conv, fuse_conv_relu
from segcli.preprocess import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, on_dark_ground
from segcli.structures import Instance, Mode, Prediction, Segment, id_map_boxes, mask_to_xywh

DEFAULT_TILE = 1024  # px: an image larger on any side is tiled, so memory stays bounded on 4000 px photos


@dataclass
class InferenceOptions:
    tile: int | None = None  # images larger than this on any side are tiled (None: never)
    overlap: float = 0.25  # fraction of the tile shared with each neighbour
    tta: bool = False  # average with the horizontally flipped image (with `tta_turns`: all 8 symmetries of the square)
    tta_turns: bool = False  # set by `predict_arrays` for models trained with --rotate whose maps hold no x-vectors
    dtype: torch.dtype = torch.float32  # bfloat16 / float16 run under autocast
    batch_size: int = 4  # tiles or images per forward pass
    # NHWC activations: 1.3x (float32) to 2x (bfloat16) faster convolutions with oneDNN on this CPU, same outputs.
    # `prepare_model` converts a copy of the model; the model trained keeps its own layout.
    channels_last: bool = True
    # The outputs post-processing builds: the mode's own and those it is made from (panoptic, the default: all).
    mode: Mode = Mode.PANOPTIC
    # Input pixels -> the training data's pixels (`input_rescale`: --pixel-size / --object-size); 1: the input's own.
    rescale: float = 1.0


def normalization(card: dict | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    norm = (card or {}).get("normalization") or {}
    return tuple(norm.get("mean", IMAGENET_MEAN)), tuple(norm.get("std", IMAGENET_STD))


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))  # zeros: the dataset mean after normalisation
    return x, (h, w)


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def prepare_model(model, options: InferenceOptions):
    """A copy of an eval-mode model made for inference: BatchNorm folded into the convolutions, convolution and
    ReLU fused (oneDNN), U-Net decoders' concatenations folded into their convolutions, 2x2 max-pools as elementwise
    maxima, and for dense models the memory layout and, on a CPU, the weights' dtype `options` ask for.

    Weights in bfloat16 rather than float32 weights under autocast: every op of the forward (upsampling,
    concatenation, pooling) then runs in bfloat16, and no weight is cast again at every call.
    A model prepared already is returned as it is (`predict_arrays` prepares what it is given).
    """
    if model.prepared:
        return model
    reuse_freed_memory()  # a model run through the Python API, without resolve_device
    model = copy.deepcopy(model.eval())
    for rewrite in (fold_batchnorm, fuse_conv_relu, fuse_concat_conv, fast_max_pool):
        model = rewrite(model, inplace=True)
    model.prepared = True
    if not model.dense:
        return model
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.dtype == torch.bfloat16 and all(p.device.type == "cpu" for p in model.parameters()):
        model = model.to(torch.bfloat16)
        for name in model.float32_modules:  # heads whose outputs bfloat16 cannot resolve
            model.get_submodule(name).float()
    return model


def _weights_dtype(model) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def dense_forward(model, batch: torch.Tensor, options: InferenceOptions) -> dict[str, torch.Tensor]:
    """Raw dense outputs for a (B, 3, H, W) batch at its own size (padded for the stride, cropped back)."""
    x, (h, w) = _pad_to(batch, model.size_multiple)
    # A model prepared in bfloat16 takes bfloat16 images; the cast and the layout in one copy.
    layout = torch.channels_last if options.channels_last else torch.preserve_format
    x = x.to(_weights_dtype(model), memory_format=layout)
    views = _tta_views(options)
    with torch.inference_mode(), _autocast(x.device, options.dtype):
        outputs: dict[str, torch.Tensor] = {}
        for turns, mirrored in views:
            view = torch.rot90(x, turns, dims=(-2, -1)) if turns else x
            maps = {k: v.float() for k, v in model(view.flip(-1) if mirrored else view).items()}
            maps = model.flip_outputs(maps) if mirrored else maps
            for key, value in maps.items():
                value = torch.rot90(value, -turns, dims=(-2, -1)) if turns else value
                outputs[key] = outputs[key] + value if key in outputs else value
    return {k: (v / len(views) if len(views) > 1 else v)[..., :h, :w] for k, v in outputs.items()}


def check_tta(model, card: dict | None) -> None:
    """Refuse --tta for models with sparse outputs: averaging views blends dense maps, and detections are not maps."""
    if not model.dense:
        name = (card or {}).get("model", type(model).__name__)
        raise UsageError(f"--tta: flip averaging blends dense maps; {name} detects instances (leave --tta out)")


def _tta_views(options: InferenceOptions) -> list[tuple[int, bool]]:
    """(quarter turns, mirrored) of each view test-time augmentation averages: the image alone, or with its mirror,
    or with `tta_turns` the 8 symmetries of the square (as nnU-Net mirrors along every axis it trained with)."""
    if not options.tta:
        return [(0, False)]
    return [(k, m) for k in range(4 if options.tta_turns else 1) for m in (False, True)]


def gaussian_weight(size: tuple[int, int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's tile weighting: a Gaussian centred on the tile, so tile borders count little."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    g = torch.exp(-(ys[:, None] ** 2) / (2 * (h * sigma_scale) ** 2)
                  - (xs[None, :] ** 2) / (2 * (w * sigma_scale) ** 2))
    return (g / g.max()).clamp(min=1e-3)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    count = math.ceil((length - tile) / step) + 1
    return sorted({min(i * step, length - tile) for i in range(count)})


class TileBlend:
    """The tiles of an (H, W) image and the Gaussian-weighted sum of their dense maps: `add` each tile's maps
    at its place, `blended` divides by the summed weights. Memory is bounded by the tile (and the maps)."""

    def __init__(self, size: tuple[int, int], options: InferenceOptions, device: torch.device) -> None:
        h, w = size
        tile, self.size, self.device = options.tile, (h, w), device
        self.weight = gaussian_weight((min(tile, h), min(tile, w))).to(device)
        rows, columns = tile_starts(h, tile, options.overlap), tile_starts(w, tile, options.overlap)
        self.tiles = [(y, x) for y in rows for x in columns]
        self.sums: dict[str, torch.Tensor] = {}
        self.total = torch.zeros((h, w), device=device)

    def crop(self, image: torch.Tensor, y: int, x: int) -> torch.Tensor:
        th, tw = self.weight.shape
        return image[..., y : y + th, x : x + tw]

    def add(self, y: int, x: int, maps: dict[str, torch.Tensor]) -> None:
        """One tile's (C, th, tw) maps, weighted, into the sums."""
        th, tw = self.weight.shape
        for key, value in maps.items():
            if key not in self.sums:
                self.sums[key] = torch.zeros((value.shape[0], *self.size), device=self.device)
            self.sums[key][:, y : y + th, x : x + tw] += value * self.weight
        self.total[y : y + th, x : x + tw] += self.weight

    def blended(self) -> dict[str, torch.Tensor]:
        """The (C, H, W) weighted means."""
        return {k: v.div_(self.total) for k, v in self.sums.items()}  # in place: these maps are the size of the image


def tiled_dense_forward(model, image: torch.Tensor, options: InferenceOptions) -> dict[str, torch.Tensor]:
    """Blend overlapping tiles' raw outputs for one (1, 3, H, W) image, in batches of tiles."""
    blend = TileBlend(tuple(image.shape[-2:]), options, image.device)
    for i in range(0, len(blend.tiles), options.batch_size):
        chunk = blend.tiles[i : i + options.batch_size]
        outputs = dense_forward(model, torch.cat([blend.crop(image, y, x) for y, x in chunk]), options)
        for j, (y, x) in enumerate(chunk):
            blend.add(y, x, {key: value[j] for key, value in outputs.items()})
    return {k: v[None] for k, v in blend.blended().items()}


def resize_outputs(model, outputs: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Dense outputs computed at the card's scale -> the image's own size (`model.resize_outputs`)."""
    if tuple(next(iter(outputs.values())).shape[-2:]) == tuple(size):
        return outputs
    return model.resize_outputs(outputs, size)


def postprocess_defaults(model) -> dict:
    """The keyword options of `model.postprocess` with their default values (the thresholds a card records)."""
    parameters = inspect.signature(model.postprocess).parameters.values()
    return {p.name: p.default for p in parameters
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.name != "mode"}


def _mode_argument(function, mode: Mode) -> dict:
    """{"mode": mode} for post-processing that can build a mode's outputs alone; models built for one mode
    (hf:) take no mode."""
    return {"mode": mode} if "mode" in inspect.signature(function).parameters else {}


# The range of every post-processing option: (smallest, largest or None, what the value is). A value outside it
# crashed deep inside (--nms-kernel 8) or silently dropped objects (--top-k -2).
THRESHOLD_RANGES = {
    "center_threshold": (0.0, 1.0, "a centre heatmap value in [0, 1]"),
    "interior_threshold": (0.0, 1.0, "a probability in [0, 1]"),
    "distance_threshold": (0.0, 1.0, "a share of the object's depth in [0, 1]"),
    "prob_threshold": (0.0, 1.0, "a probability in [0, 1]"),
    "nms_threshold": (0.0, 1.0, "a share of the polygon in [0, 1]"),
    "score_threshold": (0.0, 1.0, "a detection score in [0, 1]"),
    "nms_kernel": (1, None, "an odd window side in px, e.g. 3, 5 or 7"),
    "top_k": (1, None, "a number of centres, 1 or more"),
    "min_area": (0, None, "an area in px, 0 or more"),
    "stuff_area": (0, None, "an area in px, 0 or more"),
}


def check_thresholds(given: dict | None) -> None:
    """Refuse the first post-processing option outside its range (THRESHOLD_RANGES), naming it."""
    for name, value in (given or {}).items():
        if value is None or name not in THRESHOLD_RANGES:
            continue
        smallest, largest, what = THRESHOLD_RANGES[name]
        odd = name != "nms_kernel" or value % 2 == 1
        if not (smallest <= value and (largest is None or value <= largest) and odd):  # NaN fails too
            raise UsageError(f"--{name.replace('_', '-')} {value}: {what}")


def postprocess_options(model, card: dict | None, given: dict | None = None, mode: Mode | str | None = None) -> dict:
    """The thresholds to post-process with: the card's (what training's validation used, or what a search on the
    validation split chose), then the card's values for `mode` (`postprocess_by_mode`: chosen by that mode's own
    metric, e.g. AP for instance where the card's mode is panoptic), overridden by `given` (options left as None keep
    the card's). An option the model's post-processing does not take is an error."""
    accepted = postprocess_defaults(model)
    given = {k: v for k, v in (given or {}).items() if v is not None}
    check_thresholds(given)
    wrong = sorted(set(given) - set(accepted))
    if wrong:
        name = (card or {}).get("model", type(model).__name__)
        takes = ", ".join(f"--{k.replace('_', '-')}" for k in accepted) or "none"
        raise UsageError(f"--{wrong[0].replace('_', '-')} does not apply to {name}; "
                         f"its post-processing options: {takes}")
    by_mode = ((card or {}).get("postprocess_by_mode") or {}).get(Mode(mode).value if mode else None) or {}
    recorded = {k: v for k, v in {**((card or {}).get("postprocess") or {}), **by_mode}.items() if k in accepted}
    return {**recorded, **given}


def postprocess_call(model, card: dict | None, given: dict | None, mode: Mode | str) -> dict:
    """The keyword arguments `model.postprocess` is called with in `mode`: `postprocess_options`, and the mode."""
    return postprocess_options(model, card, given, mode) | _mode_argument(model.postprocess, Mode(mode))


def input_scale(card: dict | None) -> float:
    """The scale the model was trained at (`--scale`, recorded in the card); images are predicted at that scale."""
    return float((card or {}).get("scale") or 1.0)


# ---------------------------------------------------------------- the user's scale

RESCALE_RANGE = (1 / 8, 8.0)  # beyond it an input is mostly blur or mostly padding at the model's scale
MISMATCH = (0.6, 1.6)  # objects found this much smaller or larger than the training objects: said once per run
MISMATCH_MIN_OBJECTS = 10  # fewer objects give no steady median


def input_rescale(card: dict | None, pixel_size: float | None = None, object_size: float | None = None,
                  measured: bool = False) -> float:
    """The factor that brings an input to the training data's pixel size: the input's pixel size over the card's
    (--pixel-size UM), or the card's object diameter over the input's (--object-size PX); 1 with neither.
    `measured`: the pixel size also gives the measurements' µm, so a card without one resamples nothing."""
    check_minimums(("--pixel-size", pixel_size, 0), ("--object-size", object_size, 0), above=True)
    if pixel_size is not None and object_size is not None:
        raise UsageError("--pixel-size and --object-size: give one (the input's µm per pixel, or a typical object's "
                         "diameter in its pixels)")
    if pixel_size is None and object_size is None:
        return 1.0
    name = (card or {}).get("name") or (card or {}).get("model", "this model")
    trained, diameter = card_pixel_size(card), card_object_diameter(card)
    if pixel_size is not None:
        if trained is None and measured:
            return 1.0
        if trained is None:
            hint = f" (its training objects are {diameter:.0f} px across)" if diameter else ""
            raise UsageError(f"--pixel-size: {name}'s card records no pixel size for its training data; give "
                             f"--object-size PX instead, a typical object's diameter in your images{hint} "
                             "(with --measure it gives the measurements' µm)")
        factor, option = pixel_size / trained, f"--pixel-size {pixel_size:g}"
    else:
        if diameter is None:
            other = "give --pixel-size UM" if trained else "it cannot be rescaled"
            raise UsageError(f"--object-size: {name}'s card records no object size (no thing classes); {other}")
        factor, option = diameter / object_size, f"--object-size {object_size:g}"
    low, high = RESCALE_RANGE
    if not low <= factor <= high:
        raise UsageError(f"{option}: the images would be resampled {factor:.3g}x to {name}'s scale (the limit is "
                         f"{low:g}x to {high:g}x); check the value and its unit")
    return factor


def object_diameters(prediction: Prediction, isthing: list[bool]) -> list[float]:
    """The circle diameters (px) of a prediction's objects: its instances, else its thing segments."""
    if prediction.instances:
        return [circle_diameter(inst.area) for inst in prediction.instances]
    return [circle_diameter(s.area) for s in prediction.segments if s.label < len(isthing) and isthing[s.label]]


def scale_mismatch(card: dict | None, diameters: list[float]) -> str | None:
    """A note when the objects found are much smaller or larger than the training objects (run without
    --pixel-size / --object-size): the model probably sees them at the wrong scale."""
    trained = card_object_diameter(card)
    if trained is None or len(diameters) < MISMATCH_MIN_OBJECTS:
        return None
    found = float(np.median(diameters))
    ratio = found / trained
    if MISMATCH[0] <= ratio <= MISMATCH[1]:
        return None
    name = (card or {}).get("name") or (card or {}).get("model", "the model")
    return (f"the objects found are {found:.0f} px across (median of {len(diameters)}), {ratio:.2f}x the "
            f"{trained:.0f} px of {name}'s training objects: if the images are at another scale, rerun with "
            f"--object-size {found:.0f} (or --pixel-size UM) to resample them to the model's")


def scaled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    return (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))


def _nearest_rows(source: int, target: int) -> np.ndarray:
    """The source pixel under each target pixel's centre (OpenCV's INTER_NEAREST_EXACT)."""
    return np.minimum(((np.arange(target) + 0.5) * (source / target)).astype(np.int64), source - 1)


def resample_prediction(prediction: Prediction, size: tuple[int, int]) -> Prediction:
    """A prediction made on another pixel grid, at `size`: every label map sampled at the nearest pixel, so class
    indices and instance and segment ids are kept as post-processing made them (never blended into new values);
    objects too small to cover a pixel centre of the new grid are dropped."""
    source = next((a.shape for a in (prediction.semantic, prediction.panoptic) if a is not None), None)
    if source is None and prediction.instances:
        source = prediction.instances[0].mask.shape
    if source is None or tuple(source) == tuple(size):
        return prediction
    rows, cols = _nearest_rows(source[0], size[0]), _nearest_rows(source[1], size[1])
    semantic = prediction.semantic[np.ix_(rows, cols)] if prediction.semantic is not None else None
    instances = []
    for inst in prediction.instances:
        x, y, w, h = (int(v) for v in inst.bbox)
        r0, r1 = np.searchsorted(rows, y), np.searchsorted(rows, y + h)  # the target rows and columns over its box
        c0, c1 = np.searchsorted(cols, x), np.searchsorted(cols, x + w)
        mask = np.zeros(size, bool)
        mask[r0:r1, c0:c1] = inst.mask[np.ix_(rows[r0:r1], cols[c0:c1])]
        if mask.any():
            instances.append(Instance(mask, inst.label, inst.score, iscrowd=inst.iscrowd))
    panoptic, segments = None, []
    if prediction.panoptic is not None:
        panoptic = prediction.panoptic[np.ix_(rows, cols)]
        count = max((s.id for s in prediction.segments), default=0)
        areas = np.bincount(panoptic.ravel(), minlength=count + 1)
        boxes = id_map_boxes(panoptic, count) if count else np.zeros((0, 4), int)
        for s in prediction.segments:
            if areas[s.id]:
                x0, y0, x1, y1 = (float(v) for v in boxes[s.id - 1])
                box = (x0, y0, x1 - x0, y1 - y0)
                segments.append(Segment(s.id, s.label, int(areas[s.id]), box, s.iscrowd, s.score))
    return Prediction(semantic=semantic, instances=instances, panoptic=panoptic, segments=segments)


# ---------------------------------------------------------------- the one inference path


def _prepare_run(model, card: dict | None, device, options: InferenceOptions | None):
    """The model prepared on its device, and the options this card's model runs with."""
    options = options or InferenceOptions()
    if options.tta and card_turned(card) and model.scalar_maps:
        options = replace(options, tta_turns=True)  # turned views too: the model learnt them (maps of scalars only)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if next((p.device for p in model.parameters()), device) != device:  # Module.to visits every module: 1.4 ms
        model = model.to(device)
    return prepare_model(model, options), device, options


@torch.inference_mode()  # the blending, resizing and post-processing too: no autograd bookkeeping anywhere
def predict_arrays(model, card: dict | None, images: list[np.ndarray], device: torch.device | str | None = None,
                   options: InferenceOptions | None = None, **thresholds) -> list[Prediction]:
    """Predictions for RGB uint8 images of any sizes, each at its own resolution.

    A model trained at `--scale F` sees every image resized by F; its dense outputs are resized back
    before post-processing, so predictions (and the metrics computed from them) have the image's own size.
    With `options.rescale` (the user's scale), the image is first resampled to the training data's pixel size,
    post-processed there, and its label maps sampled back to the image's size (`resample_prediction`).
    """
    model, device, options = _prepare_run(model, card, device, options)
    thresholds = postprocess_call(model, card, thresholds, options.mode)
    predictions: list[Prediction] = []
    for item in _forward(model, card, images, device, options, thresholds):
        if isinstance(item, Prediction):
            predictions.append(item)
        else:
            predictions.extend(finish_outputs(model, *item, thresholds))
    return predictions


@torch.inference_mode()
def dense_outputs(model, card: dict | None, images: list[np.ndarray], device: torch.device | str | None = None,
                  options: InferenceOptions | None = None) -> tuple[object, list[tuple[dict, list[tuple[int, int]]]]]:
    """The prepared model and, batch by batch, its raw dense outputs on the post-processing grid with the images'
    own sizes: what `finish_outputs` turns into predictions, for searching post-processing thresholds without
    running the network again (`segcli tune`). Dense models only."""
    model, device, options = _prepare_run(model, card, device, options)
    if not model.dense:
        raise ModelError(f"{(card or {}).get('model', 'this model')}: its outputs are detections, not dense maps")
    return model, list(_forward(model, card, images, device, options, {}))


@torch.inference_mode()
def finish_outputs(model, outputs: dict[str, torch.Tensor], sizes: list[tuple[int, int]],
                   thresholds: dict) -> list[Prediction]:
    """Post-process a batch's dense outputs and bring each prediction to its image's size."""
    return [resample_prediction(p, size) for p, size in zip(model.postprocess(outputs, **thresholds), sizes)]


def _forward(model, card: dict | None, images: list[np.ndarray], device: torch.device, options: InferenceOptions,
             thresholds: dict) -> Iterator[Prediction | tuple[dict, list[tuple[int, int]]]]:
    """Each image normalised and resized to the model's scale, run in batches of consecutive same-size images
    (or tiled): yields (dense outputs on the post-processing grid, the images' sizes) per batch, or a sparse
    model's finished prediction per image."""
    mean, std = normalization(card)
    scaling, scale = card_scaling(card), input_scale(card)
    dense = model.dense
    if scale != 1.0 and not dense:
        raise ModelError(f"{(card or {}).get('model', 'this model')}: a model trained at --scale {scale} must be dense "
                         "(its outputs are resized back to the image); train detectors at --scale 1")
    batch: list[torch.Tensor] = []  # consecutive same-size whole images, run as one forward pass
    sizes: list[tuple[int, int]] = []  # their own sizes (all the same)
    for image in images:
        size = tuple(image.shape[:2])
        grid = scaled_size(size, options.rescale)  # the training data's pixels: where post-processing runs
        # In-memory 16-bit or float arrays get the scaling io.read_image gives files (the card's).
        image = io.to_uint8(image, scaling)
        if scaling.dark_ground:
            image = on_dark_ground(image)
        shape = scaled_size(size, options.rescale * scale)
        if shape != size:
            image = io.resize_image(image, shape)
        x = image_to_tensor(image, mean, std)[None].to(device)
        if not dense:
            yield resample_prediction(_sparse_predict(model, x, options, thresholds), size)
        elif options.tile is not None and max(x.shape[-2:]) > options.tile:
            if batch:
                yield _batch_outputs(model, batch, sizes, options)
            yield resize_outputs(model, tiled_dense_forward(model, x, options), grid), [size]
        else:
            if batch and (batch[0].shape != x.shape or sizes[0] != size):
                yield _batch_outputs(model, batch, sizes, options)
            batch.append(x)
            sizes.append(size)
            if len(batch) >= options.batch_size:
                yield _batch_outputs(model, batch, sizes, options)
    if batch:
        yield _batch_outputs(model, batch, sizes, options)


def _batch_outputs(model, batch: list[torch.Tensor], sizes: list[tuple[int, int]], options: InferenceOptions
                   ) -> tuple[dict, list[tuple[int, int]]]:
    """One forward pass of the batch, outputs on its post-processing grid; empties `batch` and `sizes`."""
    stacked = torch.cat(batch) if len(batch) > 1 else batch[0]  # one image: no copy
    outputs = resize_outputs(model, dense_forward(model, stacked, options), scaled_size(sizes[0], options.rescale))
    done = list(sizes)
    batch.clear()
    sizes.clear()
    return outputs, done


# ---------------------------------------------------------------- sparse (Mask R-CNN-style) models


def _sparse_forward(model, x: torch.Tensor, options: InferenceOptions) -> dict[str, torch.Tensor]:
    with torch.inference_mode(), _autocast(x.device, options.dtype):
        outputs = model(x)
    return {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}


def _sparse_predict(model, x: torch.Tensor, options: InferenceOptions, thresholds: dict) -> Prediction:
    _, _, h, w = x.shape
    if options.tile is None or max(h, w) <= options.tile:
        return model.postprocess(_sparse_forward(model, x, options), **thresholds)[0]
    blend = TileBlend((h, w), options, x.device)
    kept: list[Instance] = []
    for y, x0 in blend.tiles:
        crop = blend.crop(x, y, x0)
        outputs = _sparse_forward(model, crop, options)
        part = model.postprocess(outputs, **thresholds)[0]
        th, tw = crop.shape[-2:]
        scores = outputs["semantic"][0].float()
        if scores.shape[-2:] != (th, tw):  # models that resize internally (hf:) give it at their own size
            scores = F.interpolate(scores[None], size=(th, tw), mode="bilinear", align_corners=False)[0]
        blend.add(y, x0, {"semantic": scores})  # the semantic map is dense: blended as dense models' outputs are
        inner = (y > 0, x0 > 0, y + th < h, x0 + tw < w)  # edges that are not image edges
        for inst in part.instances:
            if _touches(inst.mask, inner):
                continue  # cut by the tile: a neighbouring tile holds it whole
            full = np.zeros((h, w), bool)
            full[y : y + th, x0 : x0 + tw] = inst.mask
            kept.append(Instance(full, inst.label, inst.score))
    # Detection thresholds were applied per tile; assemble fuses the blended semantic map with the merged instances.
    return model.assemble(blend.blended()["semantic"], merge_instances(kept), **thresholds)


def _touches(mask: np.ndarray, inner: tuple[bool, bool, bool, bool]) -> bool:
    top, left, bottom, right = inner
    return bool((top and mask[0].any()) or (left and mask[:, 0].any()) or (bottom and mask[-1].any())
                or (right and mask[:, -1].any()))


def merge_instances(instances: list[Instance], iou_threshold: float = 0.5) -> list[Instance]:
    """Greedy mask NMS by score: an instance overlapping a better one by IoU > threshold is a duplicate."""
    kept: list[Instance] = []
    for inst in sorted(instances, key=lambda i: -i.score):
        area = inst.mask.sum()
        duplicate = False
        for other in kept:
            inter = np.logical_and(inst.mask, other.mask).sum()
            if inter and inter / (area + other.mask.sum() - inter) > iou_threshold:
                duplicate = True
                break
        if not duplicate:
            inst.bbox = mask_to_xywh(inst.mask)
            kept.append(inst)
    return kept
