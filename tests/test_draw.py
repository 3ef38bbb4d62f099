"""draw.py on small arrays: sizes, colours where they belong, distinct neighbours, error maps, layouts."""

from __future__ import annotations

import colorsys

import numpy as np

from segcli import draw

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)
GREY = 128


def grey_image(height: int = 20, width: int = 30) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def test_overlay_semantic_keeps_size_tints_classes_and_leaves_skipped_classes_clear():
    labels = np.zeros((20, 30), np.uint8)
    labels[:, 15:] = 1
    out = draw.overlay_semantic(grey_image(), labels, [(0, 0, 0), RED], alpha=1.0, skip=(0,))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert (out[:, :15] == GREY).all()
    assert (out[:, 15:] == RED).all()


def test_overlay_semantic_contours_outline_each_class():
    labels = np.zeros((20, 30), np.uint8)
    labels[5:15, 5:15] = 1
    plain = draw.overlay_semantic(grey_image(), labels, [(0, 0, 0), RED], alpha=1.0, skip=(0,))
    outlined = draw.overlay_semantic(grey_image(), labels, [(0, 0, 0), RED], alpha=1.0, skip=(0,), contours=True)
    changed = (plain != outlined).any(axis=2)
    assert changed[5, 5:15].all() and not changed[10, 10]  # the square's edge, not its inside


def test_touching_instances_get_distinct_colours():
    ids = np.zeros((10, 40), np.uint16)
    for number in range(1, 9):  # eight vertical stripes, each touching the next
        ids[:, (number - 1) * 5 : number * 5] = number
    colors = draw.instance_colors(ids)
    assert set(colors) == set(range(1, 9))
    for number in range(1, 8):
        assert colors[number] != colors[number + 1]


def test_overlay_instances_colours_each_instance_and_keeps_the_background():
    ids = np.zeros((20, 30), np.uint16)
    ids[2:10, 2:14], ids[2:10, 14:26] = 1, 2  # touching side by side
    out = draw.overlay_instances(grey_image(), ids, alpha=1.0, contours=False)
    assert out.shape == (20, 30, 3)
    assert (out[15:] == GREY).all()
    assert tuple(out[5, 6]) != tuple(out[5, 20])


def _hue(color) -> float:
    return colorsys.rgb_to_hsv(*(c / 255 for c in color))[0]


def test_panoptic_colours_share_the_class_hue_and_differ_per_instance():
    class_colors = [(60, 150, 60), (200, 40, 40)]  # stuff "grass", thing "cow"
    segments = {1: 0, 2: 1, 3: 1, 4: 1}
    colors = draw.panoptic_colors(segments, isthing=[False, True], class_colors=class_colors)
    assert colors[1] == class_colors[0]
    cows = [colors[s] for s in (2, 3, 4)]
    assert len(set(cows)) == 3
    for color in cows:
        assert abs(_hue(color) - _hue(class_colors[1])) < 0.03


def test_legend_shows_each_class_colour_and_grows_with_classes():
    panel = draw.legend(["road", "car"], [RED, BLUE])
    flat = {tuple(p) for p in panel.reshape(-1, 3)}
    assert RED in flat and BLUE in flat
    assert draw.legend(["a", "b", "c"], [RED, GREEN, BLUE]).shape[0] > panel.shape[0]


def test_with_legend_adds_a_panel_on_the_right_and_keeps_the_image():
    image = grey_image()
    out = draw.with_legend(image, ["road"], [RED])
    assert out.shape[1] > image.shape[1] and out.shape[0] >= image.shape[0]
    assert (out[:20, :30] == image).all()


def test_the_cached_legend_is_shared_safely_and_a_short_image_is_padded_in_white():
    names, colors = [f"class{i}" for i in range(6)], [RED, GREEN, BLUE] * 2
    first = draw.with_legend(np.zeros((20, 30, 3), np.uint8), names, colors)  # legend taller than the image
    assert first.shape[0] == draw.legend(names, colors).shape[0] and (first[20:, :30] == 255).all()
    first[:] = 0  # drawing on one overlay must not reach the legend the next one gets
    again = draw.with_legend(np.zeros((20, 30, 3), np.uint8), names, colors)
    assert (again[:, 30:] == draw.legend(names, colors)).all() and (again[:, 30:] == 255).any()
    assert not draw.legend(names, colors).flags.writeable


def test_error_map_colours_tp_fp_fn_where_they_are_and_leaves_agreeing_background_plain():
    gt = np.zeros((4, 6), np.uint8)
    pred = np.zeros((4, 6), np.uint8)
    gt[0, :2], pred[0, :2] = 1, 1  # true positives
    pred[1, :2] = 2  # predicted, not there: false positives
    gt[2, :2] = 1  # there, not predicted: false negatives
    gt[3, :2], pred[3, :2] = 1, 255  # void prediction on an object: missed as well
    gt[3, 4:] = 255  # void ground truth: nothing to judge
    pred[3, 4:] = 2
    out = draw.error_map(grey_image(4, 6), gt, pred, background=0, alpha=1.0)
    assert len(set(draw.ERROR_COLORS.values())) == 3
    assert (out[0, :2] == draw.ERROR_COLORS["tp"]).all()
    assert (out[1, :2] == draw.ERROR_COLORS["fp"]).all()
    assert (out[2, :2] == draw.ERROR_COLORS["fn"]).all()
    assert (out[3, :2] == draw.ERROR_COLORS["fn"]).all()
    assert (out[:3, 2:] == GREY).all() and (out[3, 2:] == GREY).all()


def test_error_map_without_background_judges_every_class():
    gt = np.array([[0, 1]], np.uint8)
    pred = np.array([[0, 0]], np.uint8)
    out = draw.error_map(grey_image(1, 2), gt, pred, background=None, alpha=1.0)
    assert tuple(out[0, 0]) == draw.ERROR_COLORS["tp"] and tuple(out[0, 1]) == draw.ERROR_COLORS["fp"]


def test_side_by_side_puts_titled_panels_in_a_row_scaled_to_the_first_height():
    panels = [grey_image(20, 30), grey_image(20, 10), grey_image(40, 40)]
    out = draw.side_by_side(panels, ["a", "b", "c"], gap=4)
    assert out.shape == (20 + draw.TITLE_HEIGHT, 30 + 4 + 10 + 4 + 20, 3)
    assert (out[draw.TITLE_HEIGHT :, :30] == GREY).all()  # titles sit above the pixels, not on them


def test_grid_lays_out_rows_of_cols_with_cells_as_large_as_the_largest_image():
    images = [grey_image(20, 30)] * 4 + [grey_image(10, 50)]
    sheet = draw.grid(images, cols=2, labels=[str(i) for i in range(5)], gap=4)
    assert sheet.shape == (3 * (20 + 4) + 4, 2 * (50 + 4) + 4, 3)


def test_grid_with_a_cell_size_fits_images_into_squares():
    sheet = draw.grid([grey_image(20, 30)] * 3, cols=3, cell=16, gap=2)
    assert sheet.shape == (16 + 4, 3 * 18 + 2, 3)


def test_text_shrinks_to_fit_its_width():
    image = grey_image(30, 200)
    assert (draw.text(image, "errors, mIoU 0.812", (0, 0))[:, 90:] != GREY).any()  # 109 px wide at full size
    fitted = draw.text(image, "errors, mIoU 0.812", (0, 0), max_width=90)
    assert (fitted[:, 91:] == GREY).all() and (fitted[:, :90] != GREY).any()


def test_thumbnail_limits_the_longer_side_and_never_enlarges():
    assert draw.thumbnail(grey_image(100, 50), 40).shape == (40, 20, 3)
    assert draw.thumbnail(grey_image(10, 20), 40).shape == (10, 20, 3)


def test_byte_counts_are_exact_beyond_float32_precision_and_match_bincount():
    from segcli.draw import byte_counts

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, (64, 48)).astype(np.uint8)
    labels[:3] = 255
    assert np.array_equal(byte_counts(labels), np.bincount(labels.ravel(), minlength=256))
    # OpenCV's histogram counts in float32, where 19,999,999 does not exist: counted in blocks, it stays exact.
    large = np.full((5000, 4000), 3, np.uint8)
    large[0, 0] = 9
    counts = byte_counts(large)
    assert counts[3] == 19_999_999 and counts[9] == 1 and counts.sum() == large.size


def test_colorize_maps_every_index_to_its_colour_and_ignore_to_white():
    from segcli.draw import VOID_COLOR, colorize

    labels = np.array([[0, 1, 2], [255, 7, 1]], np.uint8)
    colors = [(10, 20, 30), (200, 100, 50), (0, 255, 0)]
    rgb = colorize(labels, colors)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert [tuple(v) for v in rgb[0]] == colors
    assert tuple(rgb[1, 0]) == VOID_COLOR and tuple(rgb[1, 1]) == (0, 0, 0) and tuple(rgb[1, 2]) == colors[1]
