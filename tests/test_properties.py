"""Property tests (hypothesis) of the pure functions that read outside data or split work."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from segcli import io
from segcli.inference import InferenceOptions, tile_starts, tiled_dense_forward
from segcli.models.base import SegModel
from segcli.structures import mask_to_rle, rle_error, rle_string_counts

FAST = settings(max_examples=40, deadline=None)

masks = st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(lambda shape: arrays(bool, shape))


@FAST
@given(masks)
def test_rle_round_trips_through_pycocotools(mask):
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)
    runs = rle_string_counts(rle["counts"])
    assert sum(runs) == mask.size and rle_error(rle, *mask.shape) is None
    # The runs read back, given to pycocotools as an uncompressed RLE, are the same mask again.
    again = mask_utils.frPyObjects({"size": list(mask.shape), "counts": runs}, *mask.shape)
    assert np.array_equal(mask_utils.decode(again).astype(bool), mask)


@FAST
@given(masks, st.integers(-3, 3).filter(lambda d: d != 0))
def test_rle_whose_runs_do_not_cover_the_image_is_named(mask, delta):
    runs = rle_string_counts(mask_to_rle(mask)["counts"])
    runs[-1] += delta
    assert rle_error({"size": list(mask.shape), "counts": runs}, *mask.shape) is not None


@FAST
@given(arrays(np.int64, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, 256**3 - 1)))
def test_panoptic_ids_and_rgb_round_trip(ids):
    rgb = io.id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (*ids.shape, 3)
    assert np.array_equal(io.rgb_to_id(rgb), ids)
    r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
    assert np.array_equal(r + 256 * g + 65536 * b, ids)  # COCO's formula


@FAST
@given(st.integers(1, 300), st.integers(1, 64), st.floats(0.0, 0.9))
def test_tiles_cover_every_pixel_inside_the_image(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts == sorted(set(starts)) and starts[0] == 0
    covered = np.zeros(length, bool)
    for start in starts:
        assert 0 <= start and start + min(tile, length) <= length
        covered[start : start + min(tile, length)] = True
    assert covered.all()


class _Echo(SegModel):
    """Outputs its input: a blend of its tiles must give back the image exactly where the weights are normalised."""

    def forward(self, x):
        return {"semantic": x * 1.0}

    def compute_losses(self, outputs, targets):  # inference only: nothing to train
        return {}

    def postprocess(self, outputs, mode="semantic", **thresholds):  # the blended maps are the result
        return []


@FAST
@given(st.integers(1, 70), st.integers(1, 70), st.integers(4, 40), st.floats(0.0, 0.75))
def test_tiled_blending_weights_are_normalised(h, w, tile, overlap):
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    options = InferenceOptions(tile=tile, overlap=overlap, batch_size=3)
    blended = tiled_dense_forward(_Echo(), image, options)["semantic"]
    assert torch.allclose(blended, image, atol=1e-5)


@FAST
@given(st.lists(st.integers(), max_size=60), st.integers(1, 9))
def test_shards_put_every_input_in_exactly_one_share(items, count):
    shares = [io.shard(items, index, count) for index in range(count)]
    assert sorted(x for share in shares for x in share) == sorted(items)
    positions = [i for index in range(count) for i in io.shard(list(range(len(items))), index, count)]
    assert sorted(positions) == list(range(len(items)))  # each position once: none lost, none twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # even shares
