"""Detection drawing: masks tinted with the class colour, thresholding, saving."""
import os

import cv2
import numpy as np
import pytest

from ppdet_htc.utils.visualize import class_colors, draw_detections, save_visualization

H, W = 80, 140


def _scene():
    image = np.full((H, W, 3), 128, np.uint8)
    boxes = np.array([[10, 20, 40, 60], [85, 15, 130, 70]], np.float32)
    scores = np.array([0.9, 0.3], np.float32)
    labels = np.array([2, 1], np.int64)
    masks = np.zeros((2, H, W), np.uint8)
    masks[0, 30:50, 15:35] = 1
    masks[1, 25:60, 90:125] = 1
    return image, boxes, scores, labels, masks


def test_output_shape_dtype_and_input_untouched():
    image, boxes, scores, labels, masks = _scene()
    before = image.copy()
    out = draw_detections(image, boxes, scores, labels, masks, class_names=["a", "b", "c"])
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)


def test_mask_pixels_move_toward_class_colour():
    image, boxes, scores, labels, masks = _scene()
    out = draw_detections(image, boxes, scores, labels, masks, threshold=0.5)
    color = class_colors(3)[2].astype(np.float32)
    inside = masks[0].astype(bool)
    before = np.abs(image[inside].astype(np.float32) - color).sum(1)
    after = np.abs(out[inside].astype(np.float32) - color).sum(1)
    assert np.all(after < before)
    # alpha 0.5 blend of grey 128 and the colour, away from the box outline and label
    np.testing.assert_allclose(out[40, 25], np.rint(0.5 * 128 + 0.5 * color), atol=1)
    untouched = np.ones((H, W), bool)
    untouched[:, :75] = False  # detection 0: box, mask, label
    np.testing.assert_array_equal(out[untouched], image[untouched])


def test_below_threshold_detection_is_not_drawn():
    image, boxes, scores, labels, masks = _scene()
    out = draw_detections(image, boxes, scores, labels, masks, threshold=0.5)
    np.testing.assert_array_equal(out[:, 75:], image[:, 75:])  # the 0.3 detection lives there
    out_low = draw_detections(image, boxes, scores, labels, masks, threshold=0.2)
    assert np.any(out_low[:, 75:] != image[:, 75:])
    nothing = draw_detections(image, boxes, scores, labels, masks, threshold=0.95)
    np.testing.assert_array_equal(nothing, image)


def test_without_masks_only_boxes_and_labels_change():
    image, boxes, scores, labels, _ = _scene()
    out = draw_detections(image, boxes, scores, labels, masks=None, class_names=["a", "b", "c"])
    np.testing.assert_array_equal(out[40, 25], image[40, 25])  # box interior stays
    color = tuple(int(c) for c in class_colors(3)[2])
    assert tuple(out[40, 10]) == color  # left edge of the box outline
    assert np.any(out[:20, 10:40] != 128)  # label background above the box


def test_overlapping_masks_show_the_higher_score_on_top():
    image = np.zeros((20, 20, 3), np.uint8)
    masks = np.ones((2, 20, 20), np.uint8)
    boxes = np.array([[0, 0, 19, 19], [0, 0, 19, 19]], np.float32)
    out = draw_detections(image, boxes, np.array([0.6, 0.9]), np.array([0, 1]), masks, alpha=1.0)
    np.testing.assert_array_equal(out[10, 10], class_colors(2)[1])


def test_empty_detections_and_bad_inputs():
    image = np.zeros((10, 12, 3), np.uint8)
    out = draw_detections(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 10, 12)))
    np.testing.assert_array_equal(out, image)
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(image.astype(np.float32), np.zeros((0, 4)), [], [])
    with pytest.raises(ValueError, match="masks"):
        draw_detections(image, [[0, 0, 5, 5]], [0.9], [0], np.zeros((1, 5, 5)))
    with pytest.raises(ValueError, match="label 3"):
        draw_detections(image, [[0, 0, 5, 5]], [0.9], [3], class_names=["a"])


def test_palette_is_fixed_per_class():
    np.testing.assert_array_equal(class_colors(5)[:3], class_colors(3))
    assert len({tuple(c) for c in class_colors(20)}) == 20


def test_save_visualization_writes_bgr_png_atomically(tmp_path):
    image, boxes, scores, labels, masks = _scene()
    path = tmp_path / "vis" / "out.png"
    drawn = save_visualization(str(path), image, boxes, scores, labels, masks)
    loaded = cv2.imread(str(path), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(loaded[:, :, ::-1], drawn)
    assert os.listdir(path.parent) == ["out.png"]
    with pytest.raises(ValueError, match="no extension"):
        save_visualization(str(tmp_path / "noext"), image, boxes, scores, labels)
    with pytest.raises(ValueError, match="out.xyz"):
        save_visualization(str(tmp_path / "out.xyz"), image, boxes, scores, labels)


def _tag_rects(tags):
    return [(x, y, x + w, y + h) for x, y, w, h in tags]


def _overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def test_label_tags_do_not_cover_each_other_when_boxes_crowd():
    """Twelve strongly overlapping boxes: the naive "above the top-left corner" tags would pile up."""
    from ppdet_htc.utils.visualize import place_labels

    rng = np.random.default_rng(3)
    boxes = []
    for _ in range(12):
        x1, y1 = rng.integers(140, 180, size=2)
        boxes.append((int(x1), int(y1), int(x1 + rng.integers(40, 80)), int(y1 + rng.integers(40, 80))))
    sizes = [(70, 17)] * len(boxes)
    naive = [(x1, y1 - 17, 70, 17) for x1, y1, _, _ in boxes]
    assert sum(_overlap(a, b) for i, a in enumerate(_tag_rects(naive)) for b in _tag_rects(naive)[i + 1:]) > 0
    tags = place_labels(boxes, sizes, (400, 400))
    rects = _tag_rects(tags)
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 400 and 0 <= a[1] and a[3] <= 400  # inside the image
        for b in rects[i + 1:]:
            assert _overlap(a, b) == 0, (a, b)
    # Each tag stays near its own box (within 8 tag heights above or below it).
    for (x1, y1, x2, y2), (x, y, w, h) in zip(boxes, tags):
        assert y1 - 9 * h <= y <= y2 + 8 * h and x1 - w <= x <= x2


def test_drawn_crowd_keeps_every_label_legible():
    """End to end: in the drawn picture each tag's rectangle is found intact in its class colour."""
    from ppdet_htc.utils import visualize

    image = np.full((240, 320, 3), 30, np.uint8)
    boxes = np.array([[100 + 6 * i, 80 + 4 * i, 170 + 6 * i, 150 + 4 * i] for i in range(8)], np.float32)
    scores = np.linspace(0.95, 0.6, 8).astype(np.float32)
    labels = np.arange(8) % 4
    calls = []
    original = visualize.place_labels

    def spy(*a, **k):
        calls.append(original(*a, **k))
        return calls[-1]

    visualize.place_labels = spy
    try:
        out = draw_detections(image, boxes, scores, labels, class_names=["ellipse", "quad", "tri", "pent"])
    finally:
        visualize.place_labels = original
    tags = calls[0]
    rects = _tag_rects(tags)
    assert all(_overlap(a, b) == 0 for i, a in enumerate(rects) for b in rects[i + 1:])
    palette = class_colors(4)
    for (x, y, w, h), label in zip(tags, labels[np.argsort(-scores)]):
        corner = out[y + 1, x + w - 2]  # tag background right of the text
        np.testing.assert_array_equal(corner, palette[label])
