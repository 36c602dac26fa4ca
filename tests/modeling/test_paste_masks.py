"""ops.paste_masks vs a full-image per-pixel grid_sample reference (SEMANTICS.md 9.4).

The reference samples every pixel of the canvas (bilinear, zero padding, align_corners=False, pixel
centres) and thresholds with ``>=``; pixels at or beyond each detection's own image size are 0
(product decision Q3: every image is pasted with its own size). The implementation computes a
separable band of rows, so float rounding may differ: masks must be identical except at pixels
whose reference value is within 1e-5 of the threshold.
"""
import numpy as np
import paddle
import pytest

from ppdet_htc.modeling import ops

from . import numpy_ref as ref

EPS = 1e-5
M = 28


def _t(x, dtype="float32"):
    return paddle.to_tensor(np.asarray(x, dtype=dtype))


def _smooth_probs(rng, K, m=M):
    """Blob-like probabilities in [0, 1] (so masks have real structure) with some noise."""
    yy, xx = np.mgrid[0:m, 0:m] / (m - 1.0)
    out = np.empty((K, m, m), np.float32)
    for k in range(K):
        cx, cy = rng.uniform(0.2, 0.8, 2)
        sx, sy = rng.uniform(0.15, 0.5, 2)
        blob = np.exp(-((xx - cx) ** 2 / (2 * sx**2) + (yy - cy) ** 2 / (2 * sy**2)))
        out[k] = np.clip(blob * rng.uniform(0.6, 1.0) + rng.uniform(-0.1, 0.1, (m, m)), 0, 1)
    return out


def _check(probs, boxes, image_hw, canvas_hw, threshold=0.5, **kw):
    out = ops.paste_masks(_t(probs), _t(boxes), _t(image_hw, "int32"), canvas_hw, threshold, **kw).numpy()
    exp, values = ref.paste_masks_ref(probs, boxes, image_hw, canvas_hw, threshold)
    assert out.shape == exp.shape
    assert out.dtype == np.uint8
    fragile = np.abs(values - threshold) <= EPS
    bad = (out != exp) & ~fragile
    assert not bad.any(), "{} pixels differ, first at {}".format(int(bad.sum()), np.argwhere(bad)[:5].tolist())
    return out, exp


def test_paste_masks_random_boxes_one_image():
    rng = np.random.RandomState(100)
    K, H, W = 12, 57, 73
    probs = _smooth_probs(rng, K)
    x1 = rng.uniform(0, W - 5, K)
    y1 = rng.uniform(0, H - 5, K)
    boxes = np.stack([x1, y1, np.minimum(x1 + rng.uniform(2, 50, K), W), np.minimum(y1 + rng.uniform(2, 40, K), H)], 1)
    out, exp = _check(probs, boxes.astype(np.float32), np.tile([H, W], (K, 1)), (H, W))
    assert exp.sum() > 100 and (exp.sum(axis=(1, 2)) > 0).sum() >= K - 2


def test_paste_masks_border_clipped_and_tiny_boxes():
    rng = np.random.RandomState(101)
    H, W = 40, 50
    boxes = np.array(
        [
            [0.0, 0.0, 50.0, 40.0],  # whole canvas, touching all borders
            [0.0, 10.3, 12.7, 40.0],  # touching left and bottom
            [37.2, 0.0, 50.0, 9.9],  # touching right and top
            [-15.0, -8.0, 20.5, 18.2],  # partly outside (unclipped box)
            [30.0, 25.0, 71.0, 66.0],  # partly outside bottom-right
            [10.2, 20.7, 10.7, 21.1],  # tiny (< 1 px)
            [24.0, 24.0, 25.0, 25.0],  # exactly one pixel
            [5.5, 30.25, 8.75, 33.0],  # a few pixels, fractional edges
            [49.6, 39.6, 50.0, 40.0],  # tiny at the bottom-right corner
            [-3.0, 5.0, 0.4, 9.0],  # mostly left of the canvas
        ],
        np.float32,
    )
    K = len(boxes)
    probs = _smooth_probs(rng, K)
    probs[5:9] = np.clip(probs[5:9] + 0.5, 0, 1)  # give the tiny boxes a chance to show up
    out, exp = _check(probs, boxes, np.tile([H, W], (K, 1)), (H, W))
    assert exp[0].sum() > 0 and exp[6].sum() > 0


def test_paste_masks_constant_probability_covers_box():
    """prob == 1 everywhere: a pixel is on iff its centre lies in [x1, x2] x [y1, y2] (value >= 0.5)."""
    H, W = 30, 40
    boxes = np.array([[3.2, 4.6, 17.9, 21.3], [0.0, 0.0, 40.0, 30.0], [-5.0, 25.0, 7.5, 35.0]], np.float32)
    probs = np.ones((3, M, M), np.float32)
    out, exp = _check(probs, boxes, np.tile([H, W], (3, 1)), (H, W))
    cx = np.arange(W) + 0.5
    cy = np.arange(H) + 0.5
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        inside = ((cy >= y1) & (cy <= y2))[:, None] & ((cx >= x1) & (cx <= x2))[None, :]
        np.testing.assert_array_equal(exp[k], inside.astype(np.uint8))


def test_paste_masks_several_image_sizes_in_one_canvas():
    """Detections of images with different (h, w): pixels beyond each image's own size stay 0."""
    rng = np.random.RandomState(102)
    image_hw = np.array([[45, 60], [45, 60], [30, 70], [52, 33], [52, 33], [52, 33]], np.int32)
    canvas = (int(image_hw[:, 0].max()), int(image_hw[:, 1].max()))
    K = len(image_hw)
    # boxes extending beyond the own image (and beyond the canvas) so the cut is visible
    boxes = np.array(
        [[10, 10, 58, 44], [30, 5, 75, 60], [40, 12, 69, 29], [3, 20, 40, 60], [0, 0, 33, 52], [20, 40, 33, 52]],
        np.float32,
    )
    probs = _smooth_probs(rng, K)
    probs[:, 8:20, 8:20] = 0.95
    out, exp = _check(probs, boxes, image_hw, canvas)
    for k, (h, w) in enumerate(image_hw):
        assert not out[k, h:, :].any() and not out[k, :, w:].any()
    # the own-size cut actually removed something that the sampled values would have switched on
    _, values = ref.paste_masks_ref(probs, boxes, np.tile(canvas, (K, 1)), canvas)
    assert any((values[k, h:, :] >= 0.5).any() or (values[k, :, w:] >= 0.5).any() for k, (h, w) in enumerate(image_hw))


def test_paste_masks_chunked_matches_unchunked():
    """``max_elements`` only bounds memory: a tiny budget (one detection per chunk) gives the same masks."""
    rng = np.random.RandomState(103)
    K, H, W = 7, 33, 41
    probs = _smooth_probs(rng, K)
    x1 = rng.uniform(-5, W - 5, K)
    y1 = rng.uniform(-5, H - 5, K)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, 30, K), y1 + rng.uniform(1, 30, K)], 1).astype(np.float32)
    hw = np.tile([H, W], (K, 1))
    out_small, _ = _check(probs, boxes, hw, (H, W), max_elements=1)
    out_big, _ = _check(probs, boxes, hw, (H, W))
    np.testing.assert_array_equal(out_small, out_big)


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_paste_masks_thresholds_at_or_above_half(threshold):
    rng = np.random.RandomState(104)
    K, H, W = 6, 36, 48
    probs = _smooth_probs(rng, K)
    x1 = rng.uniform(0, W - 5, K)
    y1 = rng.uniform(0, H - 5, K)
    boxes = np.stack([x1, y1, x1 + rng.uniform(3, 40, K), y1 + rng.uniform(3, 30, K)], 1).astype(np.float32)
    _check(probs, boxes, np.tile([H, W], (K, 1)), (H, W), threshold)


def test_paste_masks_threshold_below_half_large_box():
    """The docstring promises the exact grid_sample value for any ``threshold``. With threshold 0.3
    and a 280 px tall box (M = 28), rows 1-3 px above y1 sample the first mask row with weight
    up to 0.5 (zero padding), i.e. values >= 0.3 outside the computed band."""
    H, W = 320, 40
    probs = np.ones((1, M, M), np.float32)
    boxes = np.array([[5.0, 20.0, 30.0, 300.0]], np.float32)
    _check(probs, boxes, np.array([[H, W]], np.int32), (H, W), threshold=0.3)


def test_paste_masks_empty():
    out = ops.paste_masks(_t(np.zeros((0, M, M))), _t(np.zeros((0, 4))), _t(np.zeros((0, 2)), "int32"), (20, 30))
    assert list(out.shape) == [0, 20, 30]
