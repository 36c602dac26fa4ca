"""Batched mask targets equal a straightforward per-RoI construction (pycocotools / scalar bilinear)."""
import numpy as np
import paddle
import pycocotools.mask as mask_util
import pytest

from ppdet_htc.modeling.heads.mask_targets import bitmap_mask_targets, polygon_mask_targets
from ppdet_htc.modeling.heads.roi_assigner import MaskAssigner, SampledRoIs


def _reference_polygon_target(polys, box, m):
    """One RoI: shift/scale the polygons into the box grid and let pycocotools rasterise their union."""
    x1, y1, x2, y2 = [float(v) for v in box]
    sx, sy = m / max(x2 - x1, 0.1), m / max(y2 - y1, 0.1)
    moved = []
    for p in polys:
        q = np.asarray(p, np.float64).reshape(-1, 2)
        moved.append(np.stack([(q[:, 0] - x1) * sx, (q[:, 1] - y1) * sy], 1).reshape(-1).tolist())
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(moved, m, m))).astype(np.float32)


def _reference_bitmap_target(bitmap, box, m):
    """One RoI, pixel by pixel: bilinear sample at the grid centres, zero outside the image."""
    h, w = bitmap.shape
    x1, y1, x2, y2 = [float(v) for v in box]
    bw, bh = max(x2 - x1, 0.1), max(y2 - y1, 0.1)

    def at(y, x):
        return float(bitmap[y, x]) if 0 <= y < h and 0 <= x < w else 0.0

    out = np.zeros((m, m), np.float32)
    for i in range(m):
        for j in range(m):
            y = y1 + (i + 0.5) * bh / m - 0.5
            x = x1 + (j + 0.5) * bw / m - 0.5
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            fy, fx = y - y0, x - x0
            v = ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
                 + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1))
            out[i, j] = v >= 0.5
    return out


def _random_objects(rng, n_obj, size=120):
    objs = []
    for _ in range(n_obj):
        polys = []
        for _ in range(rng.integers(1, 4)):  # 1-3 parts per object, 3-8 vertices each
            c = rng.uniform(10, size - 10, 2)
            k = rng.integers(3, 9)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            r = rng.uniform(3, 30, k)
            polys.append(np.stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)], 1).reshape(-1).tolist())
        objs.append(polys)
    return objs


def _random_boxes(rng, n, size=120):
    xy = rng.uniform(-10, size, (n, 2))
    wh = rng.uniform(0.0, 60, (n, 2))
    wh[0] = 0.0  # a degenerate box
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polygon_targets_match_per_roi_pycocotools(seed):
    rng = np.random.default_rng(seed)
    objs = _random_objects(rng, 5)
    roi_obj = rng.integers(0, 5, 40)
    boxes = _random_boxes(rng, 40)
    got = polygon_mask_targets(objs, roi_obj, boxes, 28)
    want = np.stack([_reference_polygon_target(objs[o], b, 28) for o, b in zip(roi_obj, boxes)])
    assert got.shape == (40, 28, 28) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert want.sum() > 0  # the case is not trivially empty


def test_polygon_targets_empty_and_missing_polygons():
    assert polygon_mask_targets([], np.zeros(0, int), np.zeros((0, 4)), 14).shape == (0, 14, 14)
    objs = [None, [[0, 0, 1, 1]], [[2, 2, 20, 2, 20, 20]]]  # no polygon / a too-short polygon / a triangle
    got = polygon_mask_targets(objs, [0, 1, 2], np.array([[0, 0, 28, 28]] * 3, np.float32), 28)
    assert got[0].sum() == 0 and got[1].sum() == 0 and got[2].sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_bitmap_targets_match_scalar_bilinear(seed):
    rng = np.random.default_rng(seed)
    h, w = 50, 70
    bitmaps = (rng.random((3, h, w)) < 0.5).astype(np.uint8)
    bitmaps[1] = 0
    bitmaps[1, 10:30, 20:50] = 1
    roi_obj = rng.integers(0, 3, 12)
    boxes = _random_boxes(rng, 12, size=60)
    got = bitmap_mask_targets(bitmaps, roi_obj, boxes, 14)
    want = np.stack([_reference_bitmap_target(bitmaps[o], b, 14) for o, b in zip(roi_obj, boxes)])
    np.testing.assert_array_equal(got, want)
    assert bitmap_mask_targets(bitmaps, np.zeros(0, int), np.zeros((0, 4)), 14).shape == (0, 14, 14)


def test_mask_assigner_mixes_polygons_and_bitmaps_across_images():
    rng = np.random.default_rng(5)
    objs_a = _random_objects(rng, 3)
    bitmap = np.zeros((120, 120), np.uint8)
    bitmap[30:80, 40:90] = 1
    segms = [objs_a, [bitmap, objs_a[0]]]
    # image 0: 4 RoIs (one background), image 1: 3 RoIs (bitmap object, polygon object, background)
    rois = _random_boxes(rng, 7) + np.float32(1)
    labels = np.array([0, 2, 3, 1, 1, 0, 3], np.int64)  # 3 = background (num_classes 3)
    gt_index = np.array([0, 2, 0, 1, 0, 1, 0], np.int64)
    sampled = SampledRoIs(paddle.to_tensor(rois), paddle.to_tensor(np.array([4, 3], np.int32)),
                          paddle.to_tensor(labels), paddle.to_tensor(rois), paddle.to_tensor(gt_index),
                          paddle.to_tensor(np.zeros(7, bool)))
    out_rois, nums, out_labels, masks = MaskAssigner(num_classes=3, mask_resolution=28)(sampled, segms)
    fg = labels < 3
    np.testing.assert_array_equal(nums.numpy(), [3, 2])
    np.testing.assert_array_equal(out_labels.numpy(), labels[fg])
    np.testing.assert_allclose(out_rois.numpy(), rois[fg])
    want = [_reference_polygon_target(objs_a[0], rois[0], 28), _reference_polygon_target(objs_a[2], rois[1], 28),
            _reference_polygon_target(objs_a[1], rois[3], 28), _reference_bitmap_target(bitmap, rois[4], 28),
            _reference_polygon_target(objs_a[0], rois[5], 28)]
    np.testing.assert_array_equal(masks.numpy(), np.stack(want))
