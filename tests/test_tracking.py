"""segcli.tracking: one-to-one mask-IoU matching between frames, a short memory, classes kept apart; and the
overlay colours of tracked ids."""

from __future__ import annotations

import numpy as np

from segcli import draw
from segcli.tracking import Tracker


def _frame(*boxes: tuple[int, int, int, int, int]) -> np.ndarray:
    """An id map with each (id, y0, x0, y1, x1) box filled."""
    ids = np.zeros((40, 40), np.int32)
    for number, y0, x0, y1, x1 in boxes:
        ids[y0:y1, x0:x1] = number
    return ids


def test_objects_keep_their_ids_as_they_move_and_new_ones_get_new_ids():
    tracker = Tracker()
    assert tracker.update(_frame((1, 0, 0, 10, 10), (2, 20, 20, 30, 30)), {1: 0, 2: 0}) == {1: 1, 2: 2}
    # Listed in another order (ids are per frame), moved by two pixels, and a third object appears.
    moved = _frame((1, 22, 22, 32, 32), (2, 2, 2, 12, 12), (3, 0, 30, 8, 38))
    assert tracker.update(moved, {1: 0, 2: 0, 3: 0}) == {1: 2, 2: 1, 3: 3}


def test_a_hidden_object_keeps_its_id_within_the_memory_and_not_after():
    tracker = Tracker(memory=2)
    tracker.update(_frame((1, 0, 0, 10, 10)), {1: 0})
    for _ in range(2):
        tracker.update(_frame(), {})
    assert tracker.update(_frame((1, 1, 1, 11, 11)), {1: 0}) == {1: 1}  # two frames away: remembered
    for _ in range(3):
        tracker.update(_frame(), {})
    assert tracker.update(_frame((1, 1, 1, 11, 11)), {1: 0}) == {1: 2}  # three: forgotten, a new object


def test_classes_never_match_each_other():
    tracker = Tracker()
    tracker.update(_frame((1, 0, 0, 10, 10)), {1: 0})
    assert tracker.update(_frame((1, 0, 0, 10, 10)), {1: 1}) == {1: 2}


def test_matching_is_one_to_one():
    # An object that splits in two: both halves overlap its track enough, one keeps the id, the other is new.
    tracker = Tracker(min_iou=0.3)
    tracker.update(_frame((1, 0, 0, 10, 20)), {1: 0})
    mapping = tracker.update(_frame((1, 0, 0, 10, 9), (2, 0, 11, 10, 20)), {1: 0, 2: 0})
    assert sorted(mapping.values()) == [1, 2]


def test_stitching_links_only_consecutive_planes_above_the_threshold():
    stitch = Tracker(min_iou=0.5, memory=0)
    stitch.update(_frame((1, 0, 0, 10, 10)), {1: 0})
    assert stitch.update(_frame((1, 0, 3, 10, 13)), {1: 0}) == {1: 1}  # IoU 70/130 = 0.54
    assert stitch.update(_frame((1, 0, 8, 10, 18)), {1: 0}) == {1: 2}  # IoU 50/150 = 0.33: a new object
    assert stitch.update(_frame(), {}) == {}
    assert stitch.update(_frame((1, 0, 8, 10, 18)), {1: 0}) == {1: 3}  # a plane without it in between: no memory


def test_restore_sets_the_state_an_update_would_have():
    ran, restored = Tracker(), Tracker()
    first = _frame((1, 0, 0, 10, 10), (2, 20, 20, 30, 30))
    mapping = ran.update(first, {1: 0, 2: 1})
    restored.restore(first, {mapping[1]: 0, mapping[2]: 1})  # what the PNG holds: track ids
    later = _frame((5, 21, 21, 31, 31), (6, 1, 1, 11, 11), (7, 0, 30, 5, 35))
    assert ran.update(later, {5: 1, 6: 0, 7: 0}) == restored.update(later, {5: 1, 6: 0, 7: 0})


def test_tracked_colours_follow_the_id_alone():
    alone = _frame((7, 0, 0, 10, 10))
    crowded = _frame((7, 0, 0, 10, 10), (8, 0, 10, 10, 20), (3, 10, 0, 20, 10))
    assert draw.instance_colors(alone, tracked=True)[7] == draw.instance_colors(crowded, tracked=True)[7]
    shades = draw.panoptic_colors({7: 1}, [False, True], [(0, 0, 0), (200, 40, 40)], tracked=True)
    assert shades[7] == draw.panoptic_colors({7: 1, 5: 1, 9: 1}, [False, True], [(0, 0, 0), (200, 40, 40)],
                                             tracked=True)[7]
