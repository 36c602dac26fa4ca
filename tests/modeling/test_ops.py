"""ops.distribute_fpn_proposals and ops.multiclass_nms vs the NumPy reference.

Spec: SEMANTICS.md 6.1 (level assignment, CPU epsilon 1e-6 per Q13, per-level order and restore
index) and 8.2 (per-class greedy NMS, strict score threshold, keep_top_k over classes, output order).
"""
import numpy as np
import paddle
import pytest

from ppdet_htc.modeling import ops

from . import numpy_ref as ref



def _t(x, dtype="float32"):
    return paddle.to_tensor(np.asarray(x, dtype=dtype))


# ---------------------------------------------------------------------------------------------------
# distribute_fpn_proposals (6.1)
# ---------------------------------------------------------------------------------------------------
def _random_rois_all_levels(rng, n):
    """Boxes whose sqrt(area) spans all levels (and clamping on both sides), away from boundaries."""
    rows = []
    while len(rows) < n:
        lo, hi = [(0.5, 56.0), (56.0, 112.0), (112.0, 224.0), (224.0, 448.0), (448.0, 2000.0)][rng.randint(5)]
        side = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        aspect = rng.uniform(0.3, 3.0)
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
        x1, y1 = rng.uniform(-50, 800, 2)
        box = [x1, y1, x1 + w, y1 + h]
        _, margin = ref.fpn_level_ref(np.asarray([box], np.float32))
        if margin > 1e-3:
            rows.append(box)
    return np.asarray(rows, np.float32)


def _check_distribution(rois, rois_num, levels_exp):
    multi_rois, restore_index, nums = ops.distribute_fpn_proposals(_t(rois), _t(rois_num, "int32"), 2, 5, 4, 224)
    assert len(multi_rois) == 4 and len(nums) == 4
    R = len(rois)
    restore = restore_index.numpy()
    assert restore.shape == (R, 1)
    img = np.repeat(np.arange(len(rois_num)), rois_num)
    for li, lvl in enumerate(range(2, 6)):
        sel = levels_exp == lvl
        # RoIs of a level keep their original (image-major) relative order
        np.testing.assert_array_equal(multi_rois[li].numpy().reshape(-1, 4), rois[sel], err_msg="level %d" % lvl)
        counts = np.bincount(img[sel], minlength=len(rois_num))
        np.testing.assert_array_equal(nums[li].numpy(), counts, err_msg="per-image counts, level %d" % lvl)
    cat = np.concatenate([m.numpy().reshape(-1, 4) for m in multi_rois])
    np.testing.assert_array_equal(cat[restore.reshape(-1)], rois)
    np.testing.assert_array_equal(np.sort(restore.reshape(-1)), np.arange(R))


def test_distribute_fpn_proposals_random():
    rng = np.random.RandomState(30)
    rois_num = np.array([17, 5, 23], np.int32)
    rois = _random_rois_all_levels(rng, int(rois_num.sum()))
    levels, margin = ref.fpn_level_ref(rois)
    assert margin > 1e-3
    assert set(levels.tolist()) == {2, 3, 4, 5}
    _check_distribution(rois, rois_num, levels)


def test_distribute_fpn_proposals_boundaries_and_degenerate():
    """Exact power-of-two sizes (the epsilon puts them on the upper level), clamping, zero area."""
    rois = np.array(
        [
            [0, 0, 224, 224],  # log2(1 + eps) > 0 -> 4
            [10, 10, 122, 122],  # 112: -> 3
            [0, 0, 448, 448],  # 448: -> 5
            [0, 0, 112, 448],  # sqrt(area) = 224 -> 4
            [0, 0, 223.5, 223.5],  # just below 224 -> 3
            [0, 0, 111.5, 111.5],  # just below 112 -> 2
            [0, 0, 2000, 1500],  # clamp at 5
            [3, 3, 3, 3],  # zero area -> 2 (clamped)
            [5, 5, 1, 1],  # inverted: area 0 -> 2
            [5, 5, 6, 9],  # tiny -> 2
        ],
        np.float32,
    )
    levels, _ = ref.fpn_level_ref(rois)
    np.testing.assert_array_equal(levels, [4, 3, 5, 4, 3, 2, 5, 2, 2, 2])
    _check_distribution(rois, np.array([6, 4], np.int32), levels)


def test_distribute_fpn_proposals_image_without_rois():
    rng = np.random.RandomState(31)
    rois_num = np.array([6, 0, 9], np.int32)
    rois = _random_rois_all_levels(rng, 15)
    levels, _ = ref.fpn_level_ref(rois)
    _check_distribution(rois, rois_num, levels)


def test_distribute_fpn_proposals_no_rois():
    multi_rois, restore_index, nums = ops.distribute_fpn_proposals(
        _t(np.zeros((0, 4))), _t([0, 0], "int32"), 2, 5, 4, 224
    )
    assert [list(m.shape) for m in multi_rois] == [[0, 4]] * 4
    assert list(restore_index.shape) == [0, 1]
    assert all(n.numpy().tolist() == [0, 0] for n in nums)


# ---------------------------------------------------------------------------------------------------
# multiclass_nms (8.2)
# ---------------------------------------------------------------------------------------------------
def _nms_inputs(rng, rois_num, C, class_specific=True, degenerate=False):
    """Clusters of overlapping boxes (so NMS suppresses something) with continuous random scores."""
    R = int(sum(rois_num))
    centres = rng.uniform(20, 300, (4, 2))
    cid = rng.randint(0, 4, R)
    wh = rng.uniform(20, 80, (R, 2))
    ctr = centres[cid] + rng.normal(0, 8, (R, 2))
    base = np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=1)
    if class_specific:
        boxes = base[:, None, :] + rng.normal(0, 4, (R, C, 4))
    else:
        boxes = np.repeat(base[:, None, :], C, axis=1)
    boxes = boxes.astype(np.float32)
    if degenerate and R >= 2:
        boxes[0, :] = [400.0, 400.0, 400.0, 460.0]  # zero width
        boxes[1, :] = [560.0, 560.0, 520.0, 600.0]  # inverted
    scores = rng.uniform(0, 1, (R, C)).astype(np.float32)
    return boxes, scores


def _run_nms(boxes, scores, rois_num, score_threshold, nms_threshold, keep_top_k, background_label=-1):
    dets, index, dets_num = ops.multiclass_nms(
        _t(boxes), _t(scores), _t(rois_num, "int32"), score_threshold, nms_threshold, keep_top_k,
        background_label=background_label,
    )
    return dets.numpy().reshape(-1, 6), index.numpy().reshape(-1), dets_num.numpy().reshape(-1)


def _compare_nms(boxes, scores, rois_num, score_threshold, nms_threshold, keep_top_k, background_label=-1):
    dets, index, dets_num = _run_nms(boxes, scores, rois_num, score_threshold, nms_threshold, keep_top_k,
                                     background_label)
    rows, counts, margin = ref.multiclass_nms_ref(
        boxes, scores, rois_num, score_threshold, nms_threshold, keep_top_k, background_label
    )
    assert margin > 1e-5  # no decision of the fixed-seed data sits on a threshold
    np.testing.assert_array_equal(dets_num, counts)
    assert dets.shape == (len(rows), 6)
    img = np.repeat(np.arange(len(rois_num)), dets_num)
    # compare the set of (image, class, score, box) rows: sort both by (image, class, score)
    got = np.concatenate([img[:, None], dets], axis=1).astype(np.float64)
    exp = np.array([(b, c, s) + tuple(box) for b, c, _, s, *box in rows], np.float64).reshape(-1, 7)
    got = got[np.lexsort((-got[:, 2], got[:, 1], got[:, 0]))]
    exp = exp[np.lexsort((-exp[:, 2], exp[:, 1], exp[:, 0]))]
    np.testing.assert_array_equal(got[:, :2], exp[:, :2])
    np.testing.assert_allclose(got[:, 2:], exp[:, 2:], rtol=0, atol=1e-5)
    return dets, index, dets_num, rows


@pytest.mark.parametrize("keep_top_k", [100, 9, 1])
def test_multiclass_nms_batched_random(keep_top_k):
    rng = np.random.RandomState(40)
    rois_num = np.array([14, 0, 25, 6], np.int32)  # the second image has no RoI at all
    C = 5
    boxes, scores = _nms_inputs(rng, rois_num, C)
    scores[-6:] *= 0.02  # the last image has no candidate above the threshold
    dets, _, dets_num, rows = _compare_nms(boxes, scores, rois_num, 0.05, 0.5, keep_top_k)
    assert dets_num[1] == 0 and dets_num[3] == 0
    assert dets_num[0] > 0 and dets_num[2] > 0
    if keep_top_k == 100:
        # NMS must actually have suppressed boxes for this test to mean anything
        above = int((scores[:14] > 0.05).sum()) + int((scores[14:39] > 0.05).sum())
        assert len(rows) < above


def test_multiclass_nms_shared_boxes_like_post_process():
    """BBoxPostProcess passes the same decoded box for every class; background column index C."""
    rng = np.random.RandomState(41)
    rois_num = np.array([30, 12], np.int32)
    C = 8
    boxes, scores = _nms_inputs(rng, rois_num, C, class_specific=False, degenerate=True)
    _compare_nms(boxes, scores, rois_num, 0.3, 0.5, 100, background_label=C)


@pytest.mark.parametrize("nms_threshold", [0.3, 0.7])
def test_multiclass_nms_thresholds_and_degenerate_boxes(nms_threshold):
    rng = np.random.RandomState(42)
    rois_num = np.array([20, 20], np.int32)
    boxes, scores = _nms_inputs(rng, rois_num, 3, degenerate=True)
    _compare_nms(boxes, scores, rois_num, 0.2, nms_threshold, 100)


def test_multiclass_nms_background_label_inside_columns_is_skipped():
    rng = np.random.RandomState(43)
    rois_num = np.array([10, 7], np.int32)
    boxes, scores = _nms_inputs(rng, rois_num, 4)
    dets, _, _, _ = _compare_nms(boxes, scores, rois_num, 0.05, 0.5, 100, background_label=0)
    assert not np.any(dets[:, 0] == 0)


def test_multiclass_nms_output_order_and_index():
    """Docstring / SEMANTICS.md 8.2 step 5: per image, classes ascending, then input row ascending.

    The second output addresses the flattened ``[R, C]`` input: ``index = row * C + class``.
    """
    rng = np.random.RandomState(44)
    rois_num = np.array([18, 11], np.int32)
    C = 4
    boxes, scores = _nms_inputs(rng, rois_num, C)
    dets, index, dets_num, rows = _compare_nms(boxes, scores, rois_num, 0.05, 0.5, 12)
    assert index.shape == (len(rows),)
    row, cls = index // C, index % C
    np.testing.assert_array_equal(cls, dets[:, 0].astype(np.int64))
    np.testing.assert_allclose(dets[:, 1], scores[row, cls], rtol=0, atol=0)
    np.testing.assert_allclose(dets[:, 2:], boxes[row, cls], rtol=0, atol=0)
    exp_rows = np.array([r[2] for r in rows])
    np.testing.assert_array_equal(row, exp_rows)  # same order as the reference: class, then row
    start = 0
    for n in dets_num:
        key = list(zip(dets[start:start + n, 0], row[start:start + n]))
        assert key == sorted(key)
        start += n


def test_multiclass_nms_no_candidates_and_empty_input():
    rng = np.random.RandomState(45)
    boxes, scores = _nms_inputs(rng, [5, 4], 3)
    dets, index, dets_num = _run_nms(boxes, scores * 0.01, np.array([5, 4], np.int32), 0.05, 0.5, 100)
    assert dets.shape == (0, 6) and index.shape == (0,)
    np.testing.assert_array_equal(dets_num, [0, 0])
    dets, index, dets_num = _run_nms(
        np.zeros((0, 3, 4), np.float32), np.zeros((0, 3), np.float32), np.array([0, 0], np.int32), 0.05, 0.5, 100
    )
    assert dets.shape == (0, 6) and index.shape == (0,)
    np.testing.assert_array_equal(dets_num, [0, 0])


def test_multiclass_nms_strict_score_threshold():
    """A score exactly equal to the threshold is not a candidate (``score > threshold``)."""
    boxes = np.array([[[0, 0, 10, 10]], [[50, 50, 60, 60]], [[100, 100, 110, 110]]], np.float32)
    scores = np.array([[0.25], [0.2500001], [0.75]], np.float32)
    dets, _, dets_num = _run_nms(boxes, scores, np.array([3], np.int32), 0.25, 0.5, 100)
    np.testing.assert_array_equal(dets_num, [2])
    np.testing.assert_allclose(sorted(dets[:, 1]), [scores[1, 0], 0.75])
