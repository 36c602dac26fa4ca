"""Batched mask targets equal a straightforward per-RoI construction (pycocotools / scalar bilinear)."""
import numpy as np
import paddle
import pycocotools.mask as mask_util
import pytest

from ppdet_htc.modeling.heads.mask_targets import bitmap_mask_targets, polygon_mask_targets
from ppdet_htc.modeling.heads.roi_assigner import MaskAssigner, MaskTargetSource, SampledRoIs
from ppdet_htc.modeling.sampling import GroundTruth
from tests.modeling.numpy_ref import roi_align_single_ref


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
    assigner = MaskAssigner(num_classes=3, mask_resolution=28, target="polygon")
    out_rois, nums, out_labels, masks = assigner(sampled, MaskTargetSource(None, polygons=segms))
    fg = labels < 3
    np.testing.assert_array_equal(nums.numpy(), [3, 2])
    np.testing.assert_array_equal(out_labels.numpy(), labels[fg])
    np.testing.assert_allclose(out_rois.numpy(), rois[fg])
    want = [_reference_polygon_target(objs_a[0], rois[0], 28), _reference_polygon_target(objs_a[2], rois[1], 28),
            _reference_polygon_target(objs_a[1], rois[3], 28), _reference_bitmap_target(bitmap, rois[4], 28),
            _reference_polygon_target(objs_a[0], rois[5], 28)]
    np.testing.assert_array_equal(masks.numpy(), np.stack(want))


def test_device_bitmap_targets_are_roialign_of_the_object_masks():
    """mmdetection's targets: RoIAlign (aligned, adaptive sampling) of the object's bitmap over the RoI, >= 0.5,
    compared with the NumPy RoIAlign; RoIs of two images pointing at objects in any order."""
    rng = np.random.default_rng(3)
    h, w = 64, 96
    bitmaps = []
    for count in (3, 2):  # objects per image
        masks = np.zeros((count, h, w), np.uint8)
        for k in range(count):
            x0, y0 = rng.integers(0, w - 30), rng.integers(0, h - 20)
            masks[k, y0:y0 + rng.integers(8, 20), x0:x0 + rng.integers(10, 30)] = 1
            masks[k] |= (rng.random((h, w)) < 0.05).astype(np.uint8)  # ragged edges
        bitmaps.append(masks)
    gt = GroundTruth.from_lists([paddle.zeros([3, 4]), paddle.zeros([2, 4])],
                                [paddle.zeros([3], dtype="int64"), paddle.zeros([2], dtype="int64")])
    n = 9
    xy = rng.uniform(0, [w - 20, h - 15], size=(n, 2))
    rois = np.concatenate([xy, xy + rng.uniform(4, 40, size=(n, 2))], axis=1).astype(np.float32)
    rois_num = np.array([5, 4], np.int32)
    gt_index = np.array([2, 0, 1, 0, 2, 1, 0, 1, 0], np.int64)
    labels = np.array([0, 1, 1, 0, 4, 1, 0, 1, 1], np.int64)  # 4 = background (num_classes 4)
    sampled = SampledRoIs(paddle.to_tensor(rois), paddle.to_tensor(rois_num), paddle.to_tensor(labels),
                          paddle.to_tensor(rois), paddle.to_tensor(gt_index), paddle.to_tensor(np.zeros(n, bool)))
    source = MaskTargetSource(gt, bitmaps=[paddle.to_tensor(b) for b in bitmaps])
    out_rois, nums, out_labels, masks = MaskAssigner(num_classes=4, mask_resolution=14)(sampled, source)
    fg = labels < 4
    image = np.repeat([0, 1], rois_num)
    np.testing.assert_array_equal(nums.numpy(), [4, 4])
    np.testing.assert_array_equal(out_labels.numpy(), labels[fg])
    want = []
    for i in np.nonzero(fg)[0]:
        mask = bitmaps[image[i]][gt_index[i]].astype(np.float32)[None]
        want.append(roi_align_single_ref(mask, rois[i], 14, 1.0, 0)[0][0] >= 0.5)
    np.testing.assert_array_equal(masks.numpy(), np.stack(want).astype(np.float32))


def test_device_bitmap_targets_without_foreground():
    gt = GroundTruth.from_lists([paddle.zeros([1, 4])], [paddle.zeros([1], dtype="int64")])
    sampled = SampledRoIs(paddle.zeros([2, 4]) + paddle.to_tensor([0.0, 0.0, 5.0, 5.0]),
                          paddle.to_tensor(np.array([2], np.int32)), paddle.to_tensor(np.array([3, 3])),
                          paddle.zeros([2, 4]), paddle.zeros([2], dtype="int64"), paddle.zeros([2], dtype="bool"))
    rois, nums, labels, masks = MaskAssigner(num_classes=3, mask_resolution=28)(
        sampled, MaskTargetSource(gt, bitmaps=[paddle.zeros([1, 16, 16], dtype="uint8")]))
    assert rois.shape == [0, 4] and masks.shape == [0, 28, 28] and nums.numpy().tolist() == [0]
