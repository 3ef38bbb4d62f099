"""A training plan from the data (nnU-Net's idea): fingerprint the dataset, then derive the settings.

    fingerprint (image sizes, bit depth and intensity range, object sizes per class, class frequencies)
        => Plan (scale, crop, batch size, instance-head settings, class weighting, intensity scaling)

Both are dataclasses saved as JSON (`OUT/plan.json` and the card's "plan"), printed before the first
step, and every choice yields to the option that sets it (`--scale`, `--crop`, `--batch-size`, ...).
The rules are few and stated beside each choice:
- scale: 1 (the images' own pixels) unless objects are large: then objects shrink to about 48 px;
- crop: four object diameters of context, at least 160 px (the measured nuclei recipe), at most 256 px,
  and no larger than the (scaled) images; a multiple of 32;
- zoom: off. `--zoom 0.25` (windows zoomed by up to 25% either way, nnU-Net's scaling augmentation) did not
  pay on DSB nuclei at 28 minutes (validation nucleus PQ 0.704 against 0.714 without, same seed and core);
- rotate: vertical flips and quarter turns too when the images have no up: most of them grey (microscopy,
  EM, medical) or deeper than 8 bits; colour photos keep horizontal flips only. On DSB nuclei (28 minutes,
  one core) validation nucleus PQ 0.706 -> 0.714, test AP50 0.682 -> 0.718;
- invert: off. `--invert` (half the windows in inverted intensities, so that objects learnt on dark ground serve
  bright ground: fluorescence and brightfield microscopy) did not pay on DSB nuclei, whose training images mix
  the two (26 of 104 on bright ground): best validation nucleus PQ 0.668 against 0.727, 28 min, both cores;
- dark ground: images on bright ground inverted (`segcli.preprocess.on_dark_ground`, in training and at inference)
  when the images are microscopy-like (as for rotate) and fall in two polarities: between 5% and 95% of them on
  bright ground (median grey level above 128), the others on dark ground (below 64), none between (EM images and
  photos spread over the middle: no): fluorescence and brightfield, as DSB 2018. There (28 minutes, both cores,
  seed 0, two runs) test mask AP50 0.728 -> 0.747 / 0.745, validation 0.650 -> 0.677 / 0.658, the bright-ground
  images ahead on both splits, nucleus PQ level (docs/training.md);
- stain: H&E stain jitter (Tellez et al. 2018) when most images are stained histology: colour, and the coloured
  pixels mostly pink to purple (`preprocess.is_stained`). Histology has no up either, so rotate is on for it too;
- batch: about 8 x 160^2 pixels per step (what trained the nuclei recipe at 3 steps/s on this CPU), for a
  `--crop` given too;
- centre Gaussian (Panoptic-DeepLab heads): a quarter of the median object diameter, 1.5 to 8 px;
  object boundary width (contour models): 1 px below 32 px objects, else 2; and a loss weight of 10 where
  objects touch (contour models; the U-Net paper's w0: merged touching objects are their main error);
- class weights: inverse square-root frequency when a class covers under 5% of the pixels;
- intensity: 8-bit images as they are, deeper ones stretched from their 0.1/99.9 percentiles;
- channels: what the images hold as read (`--channels`: those picked; `--channels all`: every one, the count from
  the data, the same in every image); images of other than three channels have no up (rotate), as grey ones.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from segcli import io
from segcli.errors import DataError
from segcli.preprocess import BRIGHT_GROUND, is_stained, median_grey
from segcli.structures import IGNORE_INDEX

SAMPLE_IMAGES = 64  # the fingerprint reads at most this many training images, evenly spread
PIXELS_PER_STEP = 8 * 160 * 160
TARGET_DIAMETER = 48.0  # px: objects larger than LARGE_DIAMETER are scaled down to this
LARGE_DIAMETER = 96.0
RARE_CLASS = 0.05
ZOOM = 0.0  # the plan's zoom: off (see the rule above); --zoom sets it
GREY_SHARE = 0.5  # images whose three channels agree (within GREY_TOLERANCE levels), above which data has no up
GREY_TOLERANCE = 2
STAINED_SHARE = 0.5  # images that look stained (H&E), above which a dataset is histology
MIXED_GROUND = (0.05, 0.95)  # shares of images on bright ground between which a dataset mixes polarities
DARK_GROUND = 64.0  # median grey level below which an image shows its objects on dark ground
CONTACT_WEIGHT = 10.0  # DSB nuclei, same seed and budget: test nucleus PQ 0.617 -> 0.639, merges 133 -> 123


@dataclass
class Fingerprint:
    """What the plan is derived from, measured on up to SAMPLE_IMAGES training images."""

    images: int  # images measured
    height: list[int]  # min, median, max
    width: list[int]
    bit_depth: int  # 8, 16 or 32 (float)
    intensity_range: list[float]  # smallest and largest stored value
    object_diameter: dict[str, float]  # per thing class: median sqrt(area) of its instances, px
    objects_per_image: float  # median
    class_frequency: dict[str, float]  # share of the labelled pixels, per class
    grey_share: float = 0.0  # share of the images whose colour channels agree (grey images stored as RGB)
    bright_ground_share: float = 0.0  # share of the images whose median grey level is above mid-grey (128)
    mid_grey_share: float = 0.0  # share of the images whose median grey level is neither dark (< 64) nor bright
    stained_share: float = 0.0  # share of the images that look like stained histology (preprocess.is_stained)
    channels: int = 3  # image channels as read (train --channels)
    channel_names: list[str] = field(default_factory=lambda: ["red", "green", "blue"])

    def median_diameter(self) -> float | None:
        values = [v for v in self.object_diameter.values() if v]
        return float(np.median(values)) if values else None


@dataclass
class Plan:
    """The settings of a run; `source` says for each whether the data chose it ("plan") or an option did."""

    scale: float = 1.0
    crop: int = 160
    zoom: float = ZOOM
    rotate: bool = False
    invert: bool = False
    stain: bool = False
    dark_ground: bool = False
    batch_size: int = 8
    class_weights: str = "none"
    intensity: str = "8-bit as is"
    channels: int = 3  # the model's input channels: the images' (train --channels)
    channel_names: list[str] = field(default_factory=list)
    model_args: dict = field(default_factory=dict)  # builder options the plan sets (center_sigma, boundary_width)
    source: dict = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str]]:
        """(setting, value, source) for the table printed before training."""
        values = {"scale": f"{self.scale:g}", "crop": f"{self.crop} px", "zoom": f"{self.zoom:g}",
                  "rotate": "yes" if self.rotate else "no",
                  "invert": "yes" if self.invert else "no", "stain": "yes" if self.stain else "no",
                  "dark_ground": "yes" if self.dark_ground else "no",
                  "batch_size": str(self.batch_size),
                  "class_weights": self.class_weights, "intensity": self.intensity,
                  "channels": f"{self.channels}" + (f" ({', '.join(self.channel_names)})" * bool(self.channel_names)),
                  **{k: f"{v:g}" for k, v in self.model_args.items()}}
        return [(k, v, self.source.get(k, "plan")) for k, v in values.items()]


def fingerprint(dataset) -> Fingerprint:
    """Measure a dataset split (see Fingerprint)."""
    n = len(dataset)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(n, SAMPLE_IMAGES))})
    space = dataset.label_space
    heights, widths, diameters, objects = [], [], {i: [] for i in space.thing_indices}, []
    counts = np.zeros(space.num_classes, np.int64)
    depth, low, high, grey, stained, grounds = 8, math.inf, -math.inf, 0, 0, []
    channels = dataset[picks[0]].image.shape[2] if picks else 3
    for i in picks:
        sample = dataset[i]
        if sample.image.shape[2] != channels:
            raise DataError(f"{sample.path}: {sample.image.shape[2]} channels, the other images {channels}; "
                            "choose the same channels of each with --channels")
        grey += _is_grey(sample.image)
        stained += is_stained(sample.image)
        grounds.append(median_grey(sample.image))
        heights.append(sample.image.shape[0])
        widths.append(sample.image.shape[1])
        if sample.path:
            raw = io.read_raw_intensities(sample.path)
            depth = max(depth, 32 if raw.dtype.kind == "f" else 8 * raw.dtype.itemsize)
            low, high = min(low, float(np.nanmin(raw))), max(high, float(np.nanmax(raw)))
        if sample.semantic is not None:
            values = sample.semantic[sample.semantic != IGNORE_INDEX]
            counts += np.bincount(values.ravel(), minlength=space.num_classes)[: space.num_classes]
        things = [inst for inst in sample.instances if inst.label in diameters and not inst.iscrowd]
        objects.append(len(things))
        for inst in things:
            diameters[inst.label].append(math.sqrt(inst.area))
    total = max(1, int(counts.sum()))
    return Fingerprint(
        images=len(picks), height=_spread(heights), width=_spread(widths), bit_depth=depth,
        intensity_range=[low, high] if low <= high else [0.0, 255.0],
        object_diameter={space.names[c]: round(float(np.median(d)), 1) for c, d in diameters.items() if d},
        objects_per_image=float(np.median(objects)) if objects else 0.0,
        class_frequency={space.names[c]: round(float(counts[c]) / total, 4) for c in range(space.num_classes)},
        grey_share=round(grey / max(1, len(picks)), 3),
        bright_ground_share=_share(grounds, lambda g: g > BRIGHT_GROUND),
        mid_grey_share=_share(grounds, lambda g: DARK_GROUND <= g <= BRIGHT_GROUND),
        stained_share=round(stained / max(1, len(picks)), 3), channels=channels,
        channel_names=_channel_names(dataset, picks, channels))


def _channel_names(dataset, picks: list[int], channels: int) -> list[str]:
    """The names of the channels the images hold as read (OME-TIFF metadata, RGB, or "channel N")."""
    names = io.channel_names(dataset.records[picks[0]].image, dataset.channels) if picks else []
    return names if len(names) == channels else [f"channel {i}" for i in range(channels)]


def _share(values: list[float], test) -> float:
    return round(sum(map(test, values)) / max(1, len(values)), 3)


def _is_grey(image) -> bool:
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    return int(np.abs(image.astype(np.int16) - image[..., :1]).max()) <= GREY_TOLERANCE


def _spread(values: list[int]) -> list[int]:
    return [int(min(values)), int(np.median(values)), int(max(values))]


def make_plan(print_: Fingerprint, builder=None, mode: str = "semantic") -> Plan:
    """The settings the rules of the module docstring give for this fingerprint (and model builder)."""
    diameter = print_.median_diameter()
    scale = 1.0
    if diameter is not None and diameter > LARGE_DIAMETER:
        scale = round(TARGET_DIAMETER / diameter, 2)
    side = min(print_.height[1], print_.width[1]) * scale  # the median image's short side, scaled
    context = 4 * diameter * scale if diameter is not None else 0.0
    crop = int(min(256, max(160, context)))
    crop = max(32, min(crop, int(side) // 32 * 32 if side >= 32 else 32))
    crop = crop // 32 * 32
    batch = batch_for_crop(crop)
    rare = [name for name, share in print_.class_frequency.items() if share < RARE_CLASS]
    # Images without an up or a colour scheme: grey, deeper than 8 bits, or channels that are not RGB.
    microscopy = print_.grey_share >= GREY_SHARE or print_.bit_depth > 8 or print_.channels != 3
    # Two polarities, each image clearly one of them (EM or photos have every grey level between: no).
    mixed = MIXED_GROUND[0] <= print_.bright_ground_share <= MIXED_GROUND[1] and print_.mid_grey_share == 0
    histology = print_.stained_share >= STAINED_SHARE and print_.channels == 3  # stains are RGB colours
    plan = Plan(scale=scale, crop=crop, zoom=ZOOM, rotate=microscopy or histology, stain=histology,
                dark_ground=microscopy and mixed, batch_size=batch,
                class_weights="auto" if rare and mode == "semantic" else "none",
                intensity="8-bit as is" if print_.bit_depth == 8 else "per-image 0.1/99.9 percentiles",
                channels=print_.channels, channel_names=list(print_.channel_names))
    accepted = inspect.signature(builder).parameters if builder is not None else {}
    if "center_sigma" in accepted and diameter is not None:
        plan.model_args["center_sigma"] = round(min(8.0, max(1.5, diameter * scale / 4)), 1)
    if "boundary_width" in accepted and diameter is not None:
        plan.model_args["boundary_width"] = 1 if diameter * scale < 32 else 2
    if "contact_weight" in accepted and diameter is not None:
        plan.model_args["contact_weight"] = CONTACT_WEIGHT
    return plan


def batch_for_crop(crop: int) -> int:
    """About PIXELS_PER_STEP pixels a step in windows of this side: 8 of 160 px, 3 of 256 px (2 to 16)."""
    return int(min(16, max(2, round(PIXELS_PER_STEP / crop**2))))


def plan_record(plan: Plan, print_: Fingerprint) -> dict:
    """The JSON form saved as OUT/plan.json and in the card."""
    return {"plan": asdict(plan), "fingerprint": asdict(print_)}
