"""Panoptic post-processing as pure functions; every threshold is an argument.

Two references:
- Bottom-up grouping follows Panoptic-DeepLab (Cheng et al., CVPR 2020) as detectron2's
  `projects/Panoptic-DeepLab/panoptic_deeplab/post_processing.py` implements it: centres are the
  local maxima of the centre heatmap (max-pool NMS) above a threshold, at most top-k of them;
  every thing pixel joins the centre nearest to where its offset points; an instance takes the
  majority class of its pixels; stuff segments smaller than `stuff_area` become void.
- Top-down fusion (`combine_semantic_and_instances`) follows panopticapi's
  `combine_semantic_and_instance_predictions.py` (section 7 of Kirillov et al., "Panoptic
  Segmentation", CVPR 2019) and detectron2's `combine_semantic_and_instance_outputs` of Panoptic FPN.

Tensors come in (one image, no batch axis); `Prediction`s with numpy arrays go out.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segcli.structures import (
    IGNORE_INDEX,
    Instance,
    Mode,
    Prediction,
    Segment,
    id_map_boxes,
    mask_to_xywh,
    paste_segments,
)

# At most this many instance centres per image, whatever `top_k` asks: an untrained model's heatmap has a
# peak almost everywhere, and every centre kept costs a segment in every output (detectron2's default top-k).
MAX_CENTERS = 200



def class_argmax(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """The index of the largest score along `dim` (the first on ties, as argmax). torch's CPU argmax over a dimension
    that is not the innermost is 5 to 20x slower than `max`, whose indices are the same: 36 ms against 1.7 for
    (1, 3, 512, 512) logits over the classes, 19 against 2 for (4, 512, 512) probabilities."""
    return scores.max(dim).indices


def window_max(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """(H, W) -> the maximum of each pixel's kernel x kernel neighbourhood (outside the image counts as -inf), as
    `F.max_pool2d(x, kernel, stride=1, padding=kernel // 2)` gives it: a row pass then a column pass of elementwise
    maxima of shifted views, 0.3 ms at 512 px for kernel 7 where torch's CPU max-pool takes 22 ms."""
    pad = kernel // 2
    h, w = x.shape
    padded = F.pad(x[None], (pad, pad, pad, pad), value=float("-inf"))[0]
    rows = padded[:, :w].clone()
    for shift in range(1, kernel):
        torch.maximum(rows, padded[:, shift : shift + w], out=rows)
    out = rows[:h].clone()
    for shift in range(1, kernel):
        torch.maximum(out, rows[shift : shift + h], out=out)
    return out


# ---------------------------------------------------------------- bottom-up (Panoptic-DeepLab)


def find_instance_centers(heatmap: torch.Tensor, threshold: float = 0.1, nms_kernel: int = 7,
                          top_k: int = MAX_CENTERS) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) or (1, H, W) heatmap -> centres (K, 2) as (y, x) and their scores (K,), best first.

    A centre is a pixel above `threshold` that equals the maximum of its `nms_kernel` x `nms_kernel`
    neighbourhood (max-pool NMS); at most `top_k` are kept.
    """
    heatmap = heatmap.reshape(heatmap.shape[-2:]).float()
    if nms_kernel % 2 != 1:
        raise ValueError(f"nms_kernel must be odd, got {nms_kernel}")
    pooled = window_max(heatmap, nms_kernel)
    peaks = (heatmap == pooled) & (heatmap > threshold)
    centers = peaks.nonzero()
    scores = heatmap[peaks]
    order = scores.argsort(descending=True)[:top_k]
    return centers[order], scores[order]


def group_pixels(centers: torch.Tensor, offsets: torch.Tensor, thing_mask: torch.Tensor,
                 chunk: int = 1 << 13) -> torch.Tensor:
    """(H, W) int64 instance ids: each pixel of `thing_mask` gets 1 + the index of the centre nearest
    to (pixel + offset); 0 elsewhere, and everywhere when there is no centre.

    offsets: (2, H, W) as (dy, dx) in pixels. The nearest centre c of a point p maximises 2 p.c - |c|^2 (the
    squared distance without the |p|^2 all centres share): one matrix product per `chunk` pixels, no square
    roots, 2.5x faster than cdist with 200 centres; the chunk keeps the K x chunk scores in the cache.
    """
    h, w = thing_mask.shape
    ids = torch.zeros(h * w, dtype=torch.int64, device=offsets.device)
    if len(centers) == 0:
        return ids.view(h, w)
    ys, xs = torch.meshgrid(torch.arange(h, device=offsets.device), torch.arange(w, device=offsets.device),
                            indexing="ij")
    pointed = torch.stack([ys + offsets[0], xs + offsets[1]], dim=-1).reshape(-1, 2).float()
    where = thing_mask.reshape(-1).nonzero()[:, 0]
    centers = centers.float()
    squares, doubled = (centers * centers).sum(1), (2 * centers).T.contiguous()
    for part in where.split(chunk):
        ids[part] = torch.addmm(squares, pointed[part], doubled, beta=-1).argmax(1) + 1
    return ids.view(h, w)


def majority_labels(semantic: torch.Tensor, instance_ids: torch.Tensor, num_instances: int,
                    num_classes: int) -> torch.Tensor:
    """(K,) int64: the most frequent class of each instance's pixels (ids 1..K), one bincount for all."""
    inside = instance_ids > 0
    joint = (instance_ids[inside] - 1) * num_classes + semantic[inside].long()
    votes = torch.bincount(joint, minlength=num_instances * num_classes).view(num_instances, num_classes)
    return votes.argmax(1)


def bottom_up_prediction(semantic_logits: torch.Tensor, center: torch.Tensor, offsets: torch.Tensor,
                         thing_classes: list[int],
                         *, center_threshold: float = 0.1, nms_kernel: int = 7, top_k: int = MAX_CENTERS,
                         stuff_area: int = 64, mode: Mode = Mode.PANOPTIC) -> Prediction:
    """One image's Panoptic-DeepLab outputs -> `Prediction` (semantic map, instances by score, panoptic map;
    for `mode` semantic the map alone, for instance no panoptic map).

    semantic_logits (C, H, W), center (1, H, W) heatmap, offsets (2, H, W). Thing pixels (semantic
    argmax in `thing_classes`) are grouped around the centres; those no centre claims become void
    in the panoptic map. An instance's score is its mean class probability times its centre's
    heatmap value (clamped to [0, 1]), as detectron2's Panoptic-DeepLab scores instances.

    Cost: a few passes over the image for all centres together (areas, classes, scores and boxes by
    bincount), then work proportional to each real segment's box; at most `top_k` centres (an untrained
    model's noisy heatmap has hundreds of peaks).
    """
    num_classes = semantic_logits.shape[0]
    probabilities = semantic_logits.float().softmax(0)
    semantic = class_argmax(probabilities, 0)
    if mode == Mode.SEMANTIC:
        return Prediction(semantic=semantic.to(torch.uint8).cpu().numpy())
    is_thing = torch.zeros(num_classes, dtype=torch.bool, device=semantic.device)
    is_thing[list(thing_classes)] = True
    centers, center_scores = find_instance_centers(center, center_threshold, nms_kernel, min(top_k, MAX_CENTERS))
    ids = group_pixels(centers, offsets, is_thing[semantic])
    count = len(centers)
    labels = majority_labels(semantic, ids, count, num_classes)
    flat = ids.reshape(-1)
    areas = torch.bincount(flat, minlength=count + 1)[1:]
    # Each pixel's probability of its instance's class, summed per instance: all mean scores in one pass.
    pixel_label = torch.cat([labels.new_zeros(1), labels])[flat]
    own = probabilities.reshape(num_classes, -1).gather(0, pixel_label[None])[0]
    scores = torch.bincount(flat, weights=own.double(), minlength=count + 1)[1:] / areas.clamp(min=1)
    scores = (scores.float() * center_scores.clamp(0, 1)).tolist()
    kept = sorted((k for k in range(count) if areas[k] > 0), key=lambda k: -scores[k])
    ids_np = ids.cpu().numpy()
    boxes = id_map_boxes(ids_np, count)
    instances = []
    for k in kept:
        x0, y0, x1, y1 = boxes[k]
        mask = np.zeros(ids_np.shape, bool)
        mask[y0:y1, x0:x1] = ids_np[y0:y1, x0:x1] == k + 1
        instances.append(Instance(mask=mask, label=int(labels[k]), score=scores[k],
                                  bbox=(float(x0), float(y0), float(x1 - x0), float(y1 - y0))))
    semantic_np = semantic.to(torch.uint8).cpu().numpy()
    if mode == Mode.INSTANCE:
        return Prediction(semantic=semantic_np, instances=instances)
    panoptic, segments = _paste_disjoint(semantic_np, ids_np, count, [(k + 1, int(areas[k])) for k in kept], instances,
                                         is_thing.tolist(), stuff_area)
    return Prediction(semantic=semantic_np, instances=instances, panoptic=panoptic, segments=segments)


def _paste_disjoint(semantic: np.ndarray, ids: np.ndarray, count: int, kept: list[tuple[int, int]],
                    instances: list[Instance], isthing: list[bool],
                    stuff_area: int) -> tuple[np.ndarray, list[Segment]]:
    """`paste_segments` for instances that cannot overlap (ids 1..count of one map; `kept` (id, area) pairs in
    paste order): instance segments renumbered by one lookup, then the stuff classes as there."""
    lookup = np.zeros(count + 1, np.int32)
    segments: list[Segment] = []
    for number, ((old, area), inst) in enumerate(zip(kept, instances), 1):
        lookup[old] = number
        segments.append(Segment(number, inst.label, area, inst.bbox, score=inst.score))
    panoptic = lookup[ids]
    free_area = np.bincount(semantic[panoptic == 0], minlength=256)
    for label in np.flatnonzero(free_area).tolist():
        if label == IGNORE_INDEX or label >= len(isthing) or isthing[label] or free_area[label] < stuff_area:
            continue
        region = (semantic == label) & (panoptic == 0)
        segment_id = len(segments) + 1
        panoptic[region] = segment_id
        segments.append(Segment(segment_id, label, int(free_area[label]), mask_to_xywh(region)))
    return panoptic, segments


# ---------------------------------------------------------------- top-down fusion (Mask R-CNN + semantic)


def combine_semantic_and_instances(semantic: np.ndarray, instances: list[Instance], isthing: list[bool], *,
                                   overlap_threshold: float = 0.5, stuff_area: int = 64 * 64,
                                   score_threshold: float = 0.5) -> tuple[np.ndarray, list[Segment]]:
    """The standard heuristic fusion of an instance and a semantic prediction into one panoptic map.

    As panopticapi's `combine_semantic_and_instance_predictions.py` and detectron2's Panoptic FPN
    (`combine_semantic_and_instance_outputs`) define it. The defaults here are theirs (stuff_area 64 x 64
    px); segcli's models pass their own (Mask R-CNN's default: stuff_area 64 px):
    1. instances scoring below `score_threshold` are dropped (panopticapi's `confidence_thr`);
    2. the rest are pasted in descending score; one whose area is more than `overlap_threshold`
       covered by instances already pasted is skipped, a partly covered one keeps its free pixels;
    3. every stuff class of `semantic` fills the pixels still free, if they number at least
       `stuff_area` (panopticapi's `stuff_area_limit`). Thing classes of `semantic` add nothing:
       things come only from instances, so thing pixels no instance claims stay void.
    Returns the (H, W) int32 segment-id map (0 = void) and its segments, instances first.
    """
    kept = sorted((inst for inst in instances if inst.score >= score_threshold), key=lambda inst: -inst.score)
    return paste_segments(semantic, kept, isthing, stuff_area, overlap_threshold=overlap_threshold)


# ---------------------------------------------------------------- contours (interior / boundary classes)


def contour_prediction(probabilities: torch.Tensor, thing_classes: list[int], *, interior_threshold: float = 0.5,
                       min_area: int = 10, stuff_area: int = 64, mode: Mode = Mode.PANOPTIC,
                       distance: torch.Tensor | None = None, distance_threshold: float = 0.0) -> Prediction:
    """One image's class probabilities plus a "thing boundary" class -> `Prediction` (what `mode` needs).

    probabilities: (C + 1, H, W), softmax over the C classes and, last, the boundary of a thing.
    distance: optional (H, W) predicted distance to the object's boundary, 1 at its deepest pixel.
    The approach of the DSB 2018 winners' U-Nets and of StarDist's baselines for touching nuclei:
    1. semantic map: argmax over the C classes, a boundary pixel counting for its likeliest thing class;
    2. seeds: 4-connected components of the interior (thing probability above `interior_threshold`),
       which the predicted boundaries keep apart where objects touch; with `distance`, only the interior
       pixels deeper than `distance_threshold` (the cores, which the saddle between two touching objects
       keeps apart even where no boundary was predicted);
    3. every thing pixel joins its nearest seed in the same connected thing region (the seeds grown
       back over the mask); a thing region without any seed becomes one instance;
    4. instances smaller than `min_area` pixels are dropped (void); an instance takes the majority
       class of its pixels, and its score is its mean probability of that class (boundary included).
    """
    semantic, classes = contour_semantic(probabilities, thing_classes)
    if mode == Mode.SEMANTIC:
        return Prediction(semantic=semantic.to(torch.uint8).cpu().numpy())
    things = list(thing_classes)
    p = probabilities.float()
    interior = (p[things].sum(0) > interior_threshold).cpu().numpy() if things else np.zeros(semantic.shape, bool)
    foreground = thing_pixels(semantic, things, classes.shape[0]).cpu().numpy() | interior
    if distance is not None:
        interior &= (distance > distance_threshold).cpu().numpy()
    ids = grow_seeds(interior, foreground, min_area)
    return prediction_from_ids(ids, semantic, classes, things, mode, stuff_area)


def contour_semantic(probabilities: torch.Tensor, thing_classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(C + 1, H, W) probabilities (the last: boundary of a thing) -> the (H, W) class map and the (C, H, W) class
    probabilities, each boundary pixel's probability added to its likeliest thing class."""
    num_classes = probabilities.shape[0] - 1
    p = probabilities.float()
    classes = p[:num_classes].clone()
    if thing_classes:
        thing_index = torch.tensor(list(thing_classes), device=p.device)
        best = thing_index[class_argmax(p[thing_index], 0)]  # the likeliest thing class of each pixel
        classes.scatter_add_(0, best[None], p[num_classes][None])
    return class_argmax(classes, 0), classes


def thing_pixels(semantic: torch.Tensor, thing_classes: list[int], num_classes: int) -> torch.Tensor:
    """(H, W) bool: the pixels of a class map whose class is a thing."""
    is_thing = torch.zeros(num_classes, dtype=torch.bool, device=semantic.device)
    is_thing[list(thing_classes)] = True
    return is_thing[semantic]


def prediction_from_ids(ids: np.ndarray, semantic: torch.Tensor, classes: torch.Tensor, thing_classes: list[int],
                        mode: Mode, stuff_area: int, scores: np.ndarray | None = None,
                        labels_from: torch.Tensor | None = None) -> Prediction:
    """An instance id map (0 = none) with its class map and class probabilities -> the `Prediction` `mode` needs.
    An instance takes the majority class of its pixels in `labels_from` (default: the class map); `scores[k]` is
    instance k's score (default: its mean probability of its class)."""
    num_classes = classes.shape[0]
    semantic_np = semantic.to(torch.uint8).cpu().numpy()
    votes = semantic_np if labels_from is None else labels_from.to(torch.uint8).cpu().numpy()
    instances = _instances_from_ids(ids, votes, classes.cpu().numpy(), num_classes, scores)
    if mode == Mode.INSTANCE:
        return Prediction(semantic=semantic_np, instances=instances)
    isthing = [c in set(thing_classes) for c in range(num_classes)]
    panoptic, segments = paste_segments(semantic_np, instances, isthing, stuff_area)
    return Prediction(semantic=semantic_np, instances=instances, panoptic=panoptic, segments=segments)


def grow_seeds(interior: np.ndarray, foreground: np.ndarray, min_area: int = 0) -> np.ndarray:
    """(H, W) int32 ids 1..K: the 4-connected components of `interior`, grown over `foreground` to the nearest
    seed of the same (8-connected) foreground region; seedless regions become instances of their own; instances
    below `min_area` pixels are removed and the rest renumbered."""
    _, seeds = cv2.connectedComponents(interior.astype(np.uint8), connectivity=4)
    _, regions = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
    ids = np.zeros(interior.shape, np.int32)
    if seeds.max() > 0:
        # Every pixel -> the seed pixel nearest to it (one label per seed pixel), -> that pixel's seed.
        _, nearest = cv2.distanceTransformWithLabels((seeds == 0).astype(np.uint8), cv2.DIST_L2, 5,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        lookup = np.zeros(int(nearest.max()) + 1, np.int32)
        seeded = seeds > 0
        lookup[nearest[seeded]] = seeds[seeded]
        ids = lookup[nearest]
        seed_region = np.zeros(int(seeds.max()) + 1, np.int32)
        seed_region[seeds[seeded]] = regions[seeded]
        ids[~foreground | (seed_region[ids] != regions)] = 0
    has_seed = np.zeros(int(regions.max()) + 1, bool)
    has_seed[regions[ids > 0]] = True
    has_seed[0] = True
    orphan = ~has_seed[regions]
    if orphan.any():
        ids[orphan] = ids.max() + np.unique(regions[orphan], return_inverse=True)[1].reshape(-1) + 1
    areas = np.bincount(ids.ravel())
    keep = areas >= max(1, min_area)
    keep[0] = False
    renumber = np.zeros(len(areas), np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    return renumber[ids]


def _instances_from_ids(ids: np.ndarray, semantic: np.ndarray, class_probabilities: np.ndarray,
                        num_classes: int, scores: np.ndarray | None = None) -> list[Instance]:
    """Instances of an id map by descending score: majority class, mean probability of that class (or `scores`)."""
    count = int(ids.max())
    if count == 0:
        return []
    flat = ids.ravel()
    votes = np.bincount(flat * num_classes + semantic.ravel(), minlength=(count + 1) * num_classes)
    votes = votes.reshape(count + 1, num_classes)
    labels = votes.argmax(1)
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(count + 2))
    instances = []
    for k in range(1, count + 1):
        pixels = order[starts[k] : starts[k + 1]]
        mask = np.zeros(flat.shape, bool)
        mask[pixels] = True
        score = float(class_probabilities[labels[k]].ravel()[pixels].mean() if scores is None else scores[k])
        instances.append(Instance(mask=mask.reshape(ids.shape), label=int(labels[k]), score=min(1.0, score)))
    instances.sort(key=lambda inst: -inst.score)
    return instances


# ---------------------------------------------------------------- star-convex polygons (StarDist)

# At most this many polygon candidates per image (the most probable first): an untrained model has a local maximum
# of its object probability almost everywhere, and each candidate costs a polygon drawn.
MAX_STAR_CANDIDATES = 3000


def ray_angles(n_rays: int) -> np.ndarray:
    """The directions of a star-convex polygon's rays, radians from +x towards +y (rows grow down: clockwise as
    shown)."""
    return np.arange(n_rays) * (2 * np.pi / n_rays)


def star_prediction(probabilities: torch.Tensor, thing_classes: list[int], *, object_probability: torch.Tensor,
                    rays: torch.Tensor, prob_threshold: float = 0.5, nms_threshold: float = 0.4, min_area: int = 10,
                    stuff_area: int = 64, mode: Mode = Mode.PANOPTIC) -> Prediction:
    """One image's class probabilities (as `contour_prediction`'s), its (H, W) object probability and (R, H, W) ray
    distances, px -> `Prediction`: StarDist's grouping (Schmidt et al., MICCAI 2018).

    1. semantic map as `contour_prediction`'s;
    2. candidates: the local maxima (3 x 3) of the object probability above `prob_threshold`, each the centre of
       the polygon its R rays' ends outline;
    3. non-maximum suppression, most probable first: a polygon is dropped when more than `nms_threshold` of its
       area is claimed by polygons kept before it, and a kept one takes its pixels still free;
    4. instances under `min_area` px are dropped; an instance takes its likeliest thing class (majority of its
       pixels), and its score is its centre's object probability.
    """
    semantic, classes = contour_semantic(probabilities, thing_classes)
    if mode == Mode.SEMANTIC:
        return Prediction(semantic=semantic.to(torch.uint8).cpu().numpy())
    if not thing_classes:
        return prediction_from_ids(np.zeros(semantic.shape, np.int32), semantic, classes, [], mode, stuff_area)
    ids, scores = star_polygons(object_probability.float(), rays.float(), prob_threshold, nms_threshold)
    areas = np.bincount(ids.ravel(), minlength=len(scores))
    keep = areas >= max(1, min_area)
    keep[0] = False
    renumber = np.zeros(len(areas), np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    things = torch.tensor(list(thing_classes), device=classes.device)
    likeliest_thing = things[class_argmax(classes[things], 0)]  # a polygon's class comes from thing classes only
    return prediction_from_ids(renumber[ids], semantic, classes, thing_classes, mode, stuff_area,
                               np.concatenate([[0.0], scores[keep]]), labels_from=likeliest_thing)


def star_polygons(probability: torch.Tensor, rays: torch.Tensor, prob_threshold: float,
                  nms_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) object probability and (R, H, W) ray lengths -> the (H, W) int32 id map of the polygons kept by
    non-maximum suppression (see `star_prediction`) and their scores (index 0: none)."""
    h, w = probability.shape
    peaks = (probability >= F.max_pool2d(probability[None, None], 3, 1, 1)[0, 0]) & (probability > prob_threshold)
    ys, xs = torch.nonzero(peaks, as_tuple=True)
    order = probability[ys, xs].argsort(descending=True)[:MAX_STAR_CANDIDATES]
    ys, xs = ys[order], xs[order]
    centre_scores = probability[ys, xs].cpu().numpy()
    lengths = rays[:, ys, xs].clamp(min=0).T.cpu().numpy()  # (K, R)
    angles = ray_angles(rays.shape[0])
    vx = xs.cpu().numpy()[:, None] + lengths * np.cos(angles)
    vy = ys.cpu().numpy()[:, None] + lengths * np.sin(angles)
    owner = np.zeros((h, w), np.int32)
    scores = [0.0]
    for i in range(len(centre_scores)):
        x0, y0 = max(0, int(np.floor(vx[i].min()))), max(0, int(np.floor(vy[i].min())))
        x1, y1 = min(w, int(np.ceil(vx[i].max())) + 1), min(h, int(np.ceil(vy[i].max())) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
        corners = np.round(np.stack([vx[i] - x0, vy[i] - y0], 1) * 16).astype(np.int32)  # 4 bits of sub-pixel
        cv2.fillPoly(patch, [corners], 1, lineType=cv2.LINE_8, shift=4)
        inside = patch.view(bool)
        claimed = owner[y0:y1, x0:x1]
        area = int(inside.sum())
        if area == 0 or np.count_nonzero(claimed[inside]) > nms_threshold * area:
            continue
        claimed[inside & (claimed == 0)] = len(scores)
        scores.append(float(centre_scores[i]))
    return owner, np.asarray(scores, np.float64)
