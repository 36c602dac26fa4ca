"""box_utils (delta2bbox, bbox2delta, clip_boxes, bbox_overlaps, nonempty_mask) vs the NumPy reference.

Spec: SEMANTICS.md 7.3 (coding), 7.4 / 8.1 (clipping, non-empty filter), 11.2 (IoU without +1).
"""
import math

import numpy as np
import paddle
import pytest

from ppdet_htc.modeling import box_utils

from . import numpy_ref as ref



def _t(x, dtype="float32"):
    return paddle.to_tensor(np.asarray(x, dtype=dtype))


def _random_boxes(rng, n, lo=-50.0, hi=300.0, min_wh=0.5, max_wh=200.0):
    x1 = rng.uniform(lo, hi, n)
    y1 = rng.uniform(lo, hi, n)
    w = rng.uniform(min_wh, max_wh, n)
    h = rng.uniform(min_wh, max_wh, n)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)


STAGE_WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]


@pytest.mark.parametrize("weights", STAGE_WEIGHTS)
def test_delta2bbox_matches_reference(weights):
    rng = np.random.RandomState(1)
    boxes = _random_boxes(rng, 200)
    deltas = rng.normal(0.0, 1.0, (200, 4)).astype(np.float32) * np.asarray(weights, np.float32) * 0.3
    # Large log-size deltas that must be clamped from above at log(1000/16) (after dividing by ww/wh),
    # and very negative ones that must NOT be clamped from below.
    deltas[:10, 2:] = 12.0 * weights[2]
    deltas[10:20, 2:] = -8.0 * weights[2]
    deltas[20, 2] = math.log(1000.0 / 16) * weights[2] + 1e-3  # just above the clamp
    out = box_utils.delta2bbox(_t(deltas), _t(boxes), weights).numpy()
    exp = ref.delta2bbox_ref(deltas, boxes, weights)
    np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-3)
    # clamped rows: width is exactly exp(log(1000/16)) * w = 62.5 * w
    w = boxes[:10, 2] - boxes[:10, 0]
    np.testing.assert_allclose(out[:10, 2] - out[:10, 0], 62.5 * w, rtol=1e-5)


def test_delta2bbox_degenerate_boxes():
    # zero-size source boxes decode to zero-size boxes at the (shifted-by-0) centre
    boxes = np.array([[5, 5, 5, 5], [0, 0, 0, 10], [3, 4, 13, 4]], np.float32)
    deltas = np.array([[0.5, -0.5, 1.0, 1.0], [0.2, 0.1, 0.3, -0.2], [1.0, 2.0, 50.0, 50.0]], np.float32)
    out = box_utils.delta2bbox(_t(deltas), _t(boxes), (10.0, 10.0, 5.0, 5.0)).numpy()
    np.testing.assert_allclose(out, ref.delta2bbox_ref(deltas, boxes, (10, 10, 5, 5)), atol=1e-5)


def test_delta2bbox_empty():
    empty = box_utils.delta2bbox(_t(np.zeros((0, 4))), _t(np.zeros((0, 4))), (1, 1, 1, 1))
    assert list(empty.shape) == [0, 4]


@pytest.mark.parametrize("weights", STAGE_WEIGHTS)
def test_bbox2delta_matches_reference_and_inverts(weights):
    rng = np.random.RandomState(2)
    src = _random_boxes(rng, 150)
    tgt = _random_boxes(rng, 150)
    out = box_utils.bbox2delta(_t(src), _t(tgt), weights).numpy()
    exp = ref.bbox2delta_ref(src, tgt, weights)
    np.testing.assert_allclose(out, exp, rtol=1e-4, atol=1e-3)
    # delta2bbox(bbox2delta(src, tgt), src) == tgt whenever no log-size delta hits the clamp
    ok = np.all(exp[:, 2:] / np.asarray(weights[2:]) < ref.BBOX_CLIP, axis=1)
    back = ref.delta2bbox_ref(exp, src, weights)
    np.testing.assert_allclose(back[ok], tgt[ok], rtol=1e-6, atol=1e-3)
    back_pd = box_utils.delta2bbox(_t(out), _t(src), weights).numpy()
    np.testing.assert_allclose(back_pd[ok], tgt[ok], rtol=1e-4, atol=2e-2)


def test_bbox2delta_empty():
    out = box_utils.bbox2delta(_t(np.zeros((0, 4))), _t(np.zeros((0, 4))), (1, 1, 1, 1))
    assert list(out.shape) == [0, 4]


def test_clip_boxes_matches_reference():
    rng = np.random.RandomState(3)
    boxes = _random_boxes(rng, 300, lo=-100, hi=700, max_wh=400)
    # inverted boxes and boxes completely outside
    boxes[:5] = boxes[:5][:, [2, 3, 0, 1]]
    boxes[5] = [-30, -20, -10, -5]
    boxes[6] = [900, 900, 950, 1000]
    hw = np.stack([rng.uniform(100, 600, 300), rng.uniform(100, 600, 300)], axis=1).astype(np.float32)
    hw[7] = [480.0, 640.0]
    hw[8] = [426.66666, 1066.6666]  # unrounded float im_shape (Q7)
    out = box_utils.clip_boxes(_t(boxes), _t(hw)).numpy()
    np.testing.assert_allclose(out, ref.clip_boxes_ref(boxes, hw), rtol=0, atol=1e-6)


def test_clip_boxes_empty():
    assert list(box_utils.clip_boxes(_t(np.zeros((0, 4))), _t(np.zeros((0, 2)))).shape) == [0, 4]


@pytest.mark.parametrize("min_size", [0.0, 1.0, 2.5])
def test_nonempty_mask(min_size):
    rng = np.random.RandomState(4)
    boxes = _random_boxes(rng, 100, min_wh=0.0, max_wh=5.0)
    boxes[:4] = [[1, 1, 1, 5], [1, 1, 5, 1], [5, 5, 4, 9], [2, 2, 2 + min_size, 2 + min_size + 1]]
    boxes[4] = [0, 0, 3, -1]
    out = box_utils.nonempty_mask(_t(boxes), min_size).numpy()
    np.testing.assert_array_equal(out, ref.nonempty_ref(boxes, min_size))
    assert list(box_utils.nonempty_mask(_t(np.zeros((0, 4))), min_size).shape) == [0]


def test_bbox_overlaps_matches_reference():
    rng = np.random.RandomState(5)
    a = _random_boxes(rng, 40, lo=0, hi=100, max_wh=80)
    b = _random_boxes(rng, 60, lo=0, hi=100, max_wh=80)
    # degenerate boxes: zero width, zero height, zero area, inverted, and exact duplicates / touching
    a[0] = [10, 10, 10, 50]
    a[1] = [10, 10, 50, 10]
    a[2] = [20, 20, 20, 20]
    a[3] = [60, 60, 40, 80]
    b[0] = a[4]
    b[1] = [a[5, 2], a[5, 1], a[5, 2] + 10, a[5, 3]]  # touches a[5] on its right edge -> 0
    b[2] = [0, 0, 1000, 1000]
    out = box_utils.bbox_overlaps(_t(a), _t(b)).numpy()
    exp = ref.iou_matrix_ref(a, b)
    np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-6)
    assert out[4, 0] == pytest.approx(1.0, abs=1e-6)
    assert out[5, 1] == 0.0
    assert np.all(out[:4] == 0.0)


@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (0, 0)])
def test_bbox_overlaps_empty(n, m):
    rng = np.random.RandomState(6)
    out = box_utils.bbox_overlaps(_t(_random_boxes(rng, n)), _t(_random_boxes(rng, m)))
    assert list(out.shape) == [n, m]
