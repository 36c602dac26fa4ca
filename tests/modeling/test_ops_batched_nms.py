"""ops.batched_nms vs a NumPy transcription of mmcv's ``batched_nms`` (SEMANTICS_MMDET.md 5.5, Quirk M4).

The kept indices must be identical (same set, same order): random boxes with many classes and large
coordinates, IoUs exactly at the threshold (kept: the comparison is strict), ties in the scores (lower index
first), decisions that only the float32 offset arithmetic makes, empty input, and an exported (static) program.
"""
import numpy as np
import paddle
import pytest

from ppdet_htc.modeling import ops

from . import numpy_ref_mmcv as ref


def _run(boxes, scores, idxs, thr):
    return ops.batched_nms(paddle.to_tensor(np.asarray(boxes, np.float32)),
                           paddle.to_tensor(np.asarray(scores, np.float32)),
                           paddle.to_tensor(np.asarray(idxs, np.int64)), thr).numpy()


def _random_case(rng, n, num_classes, scale, grid=None):
    xy = rng.uniform(0, scale, size=(n, 2))
    wh = rng.uniform(0, scale / 4, size=(n, 2))
    if grid:  # coordinates on a coarse grid: many IoUs land exactly on simple fractions like 1/2
        xy, wh = np.round(xy / grid) * grid, np.round(wh / grid) * grid
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    if grid:
        scores = np.round(scores * 4) / 4  # many equal scores
    return boxes, scores.astype(np.float32), rng.integers(0, num_classes, n)


@pytest.mark.parametrize("scale, num_classes, thr", [(1333.0, 80, 0.5), (1333.0, 5, 0.7), (20000.0, 80, 0.5),
                                                     (60.0, 1, 0.3)])
def test_random_boxes_match_mmcv(scale, num_classes, thr):
    rng = np.random.default_rng(int(scale) + num_classes)
    for trial in range(25):
        n = int(rng.integers(1, 300))
        boxes, scores, idxs = _random_case(rng, n, num_classes, scale)
        got = _run(boxes, scores, idxs, thr)
        np.testing.assert_array_equal(got, ref.mmcv_batched_nms(boxes, scores, idxs, thr), err_msg=str(trial))
        assert got.dtype == np.int64
        assert (np.diff(scores[got]) <= 0).all()


def test_at_threshold_and_ties_on_a_grid():
    """Integer and quarter-pixel boxes with quantised scores: exact-threshold IoUs and equal scores occur
    (counted, so the test cannot silently miss them) and every decision matches mmcv's."""
    rng = np.random.default_rng(7)
    at_threshold = ties = 0
    for trial in range(150):
        thr = float(rng.choice([0.5, 0.25, 0.6, 0.7]))
        boxes, scores, idxs = _random_case(rng, int(rng.integers(2, 60)), int(rng.integers(1, 4)), 24.0,
                                           grid=float(rng.choice([1.0, 0.25])))
        shifted = ref.offset_boxes(boxes, idxs)
        x1 = np.maximum(shifted[:, None, 0], shifted[None, :, 0])
        x2 = np.minimum(shifted[:, None, 2], shifted[None, :, 2])
        y1 = np.maximum(shifted[:, None, 1], shifted[None, :, 1])
        y2 = np.minimum(shifted[:, None, 3], shifted[None, :, 3])
        inter = np.maximum(np.float32(0), x2 - x1) * np.maximum(np.float32(0), y2 - y1)
        area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / ((area[:, None] + area[None, :]) - inter)
        at_threshold += int((iou == np.float32(thr)).sum())
        ties += len(scores) - len(np.unique(scores))
        np.testing.assert_array_equal(_run(boxes, scores, idxs, thr),
                                      ref.mmcv_batched_nms(boxes, scores, idxs, thr), err_msg=str(trial))
    assert at_threshold >= 10 and ties > 500


def test_hand_made_threshold_cases():
    # IoU exactly 0.5 -> kept (strict >); a hair more -> suppressed.
    boxes = [[0, 0, 10, 10], [0, 0, 10, 5], [100, 0, 110, 10], [100, 0, 110, 5.001]]
    np.testing.assert_array_equal(_run(boxes, [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0], 0.5), [0, 1, 2])
    # Different idxs never suppress each other, even for identical boxes; equal scores: lower index first.
    np.testing.assert_array_equal(_run([[0, 0, 10, 10]] * 3, [0.5, 0.5, 0.5], [2, 0, 2], 0.5), [0, 1])
    # A suppressed box does not suppress: 0 kills 1, 1 would have killed 2, 2 survives.
    boxes = [[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]]
    np.testing.assert_array_equal(_run(boxes, [0.9, 0.8, 0.7], [1, 1, 1], 0.3), [0, 2])
    # Zero-area boxes: IoU 0/0 = NaN never exceeds the threshold, both kept (as in mmcv).
    np.testing.assert_array_equal(_run([[5, 5, 5, 5], [5, 5, 5, 5]], [0.9, 0.8], [0, 0], 0.5), [0, 1])


def test_offset_quantisation_decides_like_mmcv():
    """Class 79 with coordinates up to 1333 lives near 1e5, where float32 steps are ~0.008 px: search pairs
    whose NMS decision differs between plain and offset coordinates, and require mmcv's (offset) decision."""
    rng = np.random.default_rng(5)
    differing = 0
    for _ in range(400):
        x1, y1 = rng.uniform(0, 1200, 2)
        w, h = rng.uniform(20, 120, 2)
        a = np.array([x1, y1, x1 + w, y1 + h], np.float32)
        dx = np.float32(w / 3 + rng.normal(0, 1e-3))  # IoU ~ 0.5
        boxes = np.stack([a, a + np.array([dx, 0, dx, 0], np.float32), [0, 0, 1333, 10]]).astype(np.float32)
        scores = np.array([0.9, 0.8, 0.1], np.float32)
        idxs = np.array([79, 79, 0])
        expected = ref.mmcv_batched_nms(boxes, scores, idxs, 0.5)
        plain = ref.mmcv_nms(boxes[:2], scores[:2], 0.5)
        if len(plain) != int((expected < 2).sum()):
            differing += 1
            np.testing.assert_array_equal(_run(boxes, scores, idxs, 0.5), expected)
    assert differing > 20


def test_per_group_branch_matches_mmcv(monkeypatch):
    """From ``split_thr`` boxes on mmcv runs one NMS per group; with a lowered threshold both branches are
    compared, including negative coordinates, where groups can overlap and the branches really differ."""
    rng = np.random.default_rng(21)
    differ = 0
    for trial in range(30):
        boxes, scores, idxs = _random_case(rng, int(rng.integers(40, 120)), int(rng.integers(2, 6)), 40.0)
        boxes -= np.float32(rng.choice([0.0, 30.0]))  # sometimes far below -1: shifted groups overlap
        single = ref.mmcv_batched_nms(boxes, scores, idxs, 0.5)
        split = ref.mmcv_batched_nms(boxes, scores, idxs, 0.5, split_thr=1)
        differ += not np.array_equal(single, split)
        np.testing.assert_array_equal(_run(boxes, scores, idxs, 0.5), single)
        monkeypatch.setattr(ops, "_NMS_SPLIT_THR", 1)
        np.testing.assert_array_equal(_run(boxes, scores, idxs, 0.5), split)
        monkeypatch.undo()
    assert differ > 0


def test_ten_thousand_boxes_take_the_per_group_branch():
    rng = np.random.default_rng(22)
    boxes, scores, idxs = _random_case(rng, 10000, 200, 1333.0)
    np.testing.assert_array_equal(_run(boxes, scores, idxs, 0.5), ref.mmcv_batched_nms(boxes, scores, idxs, 0.5))


def test_empty_and_single():
    out = _run(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5)
    assert out.shape == (0,) and out.dtype == np.int64
    np.testing.assert_array_equal(_run([[1, 2, 3, 4]], [0.3], [7], 0.5), [0])


def _nms_at_half(boxes, scores, idxs):
    return ops.batched_nms(boxes, scores, idxs, 0.5)


def test_exported_program_matches_dygraph():
    """The same function traced to a static program (how models are exported) keeps the same decisions."""
    spec = [paddle.static.InputSpec([None, 4], "float32"), paddle.static.InputSpec([None], "float32"),
            paddle.static.InputSpec([None], "int64")]
    static = paddle.jit.to_static(_nms_at_half, input_spec=spec, full_graph=True)  # AST: one whole program
    rng = np.random.default_rng(3)
    boxes, scores, idxs = _random_case(rng, 200, 80, 1333.0)
    got = static(paddle.to_tensor(boxes), paddle.to_tensor(scores), paddle.to_tensor(idxs)).numpy()
    np.testing.assert_array_equal(got, ref.mmcv_batched_nms(boxes, scores, idxs, 0.5))
    if int(paddle.__version__.split(".")[0]) >= 3:  # Paddle 2.6's static executor cannot run ops on empty tensors
        empty = static(paddle.zeros([0, 4]), paddle.zeros([0]), paddle.zeros([0], "int64")).numpy()
        assert empty.shape == (0,)
