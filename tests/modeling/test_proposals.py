"""RPN pieces vs the NumPy reference: anchors (SEMANTICS.md 5.2), generate_proposals (5.3),
cross-level collection and ProposalGenerator (5.4), anchor labelling and sampling (11.2)."""
import numpy as np
import paddle
import pytest

from ppdet_htc.modeling import ops
from ppdet_htc.modeling.proposal.anchor_generator import AnchorGenerator
from ppdet_htc.modeling.proposal.proposal_generator import ProposalGenerator, collect_top_proposals
from ppdet_htc.modeling.proposal.target_assign import RPNTargetAssign, label_anchors, sample_labels

from . import numpy_ref as ref

BOX_TOL = dict(rtol=1e-5, atol=1e-4)
SIZES = (32, 64, 128, 256, 512)
STRIDES = (4, 8, 16, 32, 64)


def _t(x, dtype="float32"):
    return paddle.to_tensor(np.asarray(x, dtype=dtype))


# ---------------------------------------------------------------------------------------------------
# 5.2 Anchors
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nested", [True, False])
def test_anchor_generator_matches_reference(nested):
    sizes = [[s] for s in SIZES] if nested else list(SIZES)
    gen = AnchorGenerator(anchor_sizes=sizes, aspect_ratios=[0.5, 1.0, 2.0], strides=list(STRIDES))
    assert gen.num_anchors == 3
    shapes = [(20, 25), (10, 13), (5, 7), (3, 4), (2, 2)]
    feats = [paddle.zeros([2, 4, h, w]) for h, w in shapes]
    out = gen(feats)
    assert len(out) == 5
    for lvl, ((h, w), size, stride) in enumerate(zip(shapes, SIZES, STRIDES)):
        a = out[lvl].numpy()
        assert a.shape == (h, w, 3, 4)
        np.testing.assert_allclose(a, ref.anchors_ref(h, w, size, stride), rtol=1e-6, atol=1e-4)
    # ratio order [0.5, 1, 2] with r = h/w: the first anchor is wide, the last tall; all have area s^2
    a = out[0].numpy()[0, 0]
    wh = a[:, 2:] - a[:, :2]
    assert wh[0, 0] > wh[0, 1] and wh[2, 0] < wh[2, 1]
    np.testing.assert_allclose(wh[:, 0] * wh[:, 1], [32.0**2] * 3, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# 5.3 generate_proposals
# ---------------------------------------------------------------------------------------------------
def _rpn_level_inputs(rng, B, H, W, size, stride, delta_scale=0.4):
    A = 3
    scores = rng.normal(0, 2.0, (B, A, H, W)).astype(np.float32)
    deltas = rng.normal(0, delta_scale, (B, 4 * A, H, W)).astype(np.float32)
    anchors = ref.anchors_ref(H, W, size, stride).astype(np.float32)
    return scores, deltas, anchors


def _match_by_score(boxes, scores, exp_boxes, exp_scores):
    """Pair rows by their (unique, copied) logit and compare the boxes."""
    assert len(boxes) == len(exp_boxes)
    got = np.argsort(scores, kind="stable")
    exp = np.argsort(exp_scores, kind="stable")
    np.testing.assert_allclose(scores[got], exp_scores[exp], rtol=0, atol=1e-6)
    np.testing.assert_allclose(boxes[got], exp_boxes[exp], **BOX_TOL)


def _check_generate_proposals(scores, deltas, anchors, im_hw, pre_n, post_n, nms_thresh, min_size):
    B = scores.shape[0]
    rois, probs, nums = ops.generate_proposals(
        _t(scores), _t(deltas), _t(im_hw), _t(anchors), _t(np.ones_like(anchors)), pre_n, post_n, nms_thresh, min_size
    )
    rois, probs, nums = rois.numpy(), probs.numpy().reshape(-1), nums.numpy()
    assert rois.shape == (int(nums.sum()), 4)
    start = 0
    results = []
    for b in range(B):
        exp_boxes, exp_scores, margin = ref.generate_proposals_ref(
            scores[b], deltas[b], anchors, im_hw[b], pre_n, post_n, nms_thresh, min_size
        )
        assert margin > 3e-5, "fixed-seed data too close to a decision boundary"
        n = int(nums[b])
        assert n == len(exp_boxes), "image {}: {} vs {} proposals".format(b, n, len(exp_boxes))
        _match_by_score(rois[start:start + n], probs[start:start + n], exp_boxes, exp_scores)
        # output keeps descending score order
        assert np.all(np.diff(probs[start:start + n]) <= 0)
        results.append((rois[start:start + n], probs[start:start + n]))
        start += n
    return results


@pytest.mark.parametrize(
    "pre_n,post_n,nms_thresh,min_size",
    [(1000, 1000, 0.7, 0.0), (60, 1000, 0.7, 0.0), (150, 40, 0.7, 0.0), (300, 60, 0.5, 4.0), (1000, 1000, 0.9, 1.0)],
)
def test_generate_proposals_matches_reference(pre_n, post_n, nms_thresh, min_size):
    rng = np.random.RandomState(50)
    H, W = 12, 15
    scores, deltas, anchors = _rpn_level_inputs(rng, 2, H, W, 32, 8)
    deltas[0, 2::4, :3] = 9.0  # huge log-width deltas: clamped at log(1000/16)
    deltas[1, 3::4, -3:] = -6.0  # tiny heights: dropped by the size filter
    im_hw = np.array([[90.4, 118.7], [66.66667, 120.0]], np.float32)  # float, unrounded (Q7)
    res = _check_generate_proposals(scores, deltas, anchors, im_hw, pre_n, post_n, nms_thresh, min_size)
    for (boxes, _), (h, w) in zip(res, im_hw):
        assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= w + 1e-4)
        assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= h + 1e-4)
        m = max(min_size, 1.0)
        assert np.all(boxes[:, 2] - boxes[:, 0] >= m - 1e-4) and np.all(boxes[:, 3] - boxes[:, 1] >= m - 1e-4)


def test_generate_proposals_log_size_clamp():
    """Log-size deltas above log(1000/16) are clamped: a 2 px anchor with dw = 5 gives a 125 px wide
    box (not 297 px), visible because it stays inside a 400 px image."""
    rng = np.random.RandomState(54)
    H, W = 10, 10
    scores, deltas, anchors = _rpn_level_inputs(rng, 1, H, W, 2, 40, delta_scale=0.05)
    deltas[0, 2::4] = rng.uniform(4.3, 5.5, (3, H, W))
    deltas[0, 3::4] = rng.uniform(3.0, 5.0, (3, H, W))
    res = _check_generate_proposals(scores, deltas, anchors, np.array([[400.0, 400.0]], np.float32),
                                    1000, 1000, 0.7, 0.0)
    boxes = res[0][0]
    inner = (boxes[:, 0] > 0) & (boxes[:, 2] < 400)
    assert inner.any()
    w = boxes[inner, 2] - boxes[inner, 0]
    assert np.all(w <= 62.5 * 2 * np.sqrt(2) + 1e-3)  # widest anchor (ratio 0.5) is 2*sqrt(2) px


def test_generate_proposals_min_size_is_at_least_one():
    """min_size 0 behaves as 1.0 (Q11): boxes 0.5-1 px wide are removed, 1.2 px kept."""
    rng = np.random.RandomState(51)
    H, W = 6, 6
    scores, deltas, anchors = _rpn_level_inputs(rng, 1, H, W, 32, 8, delta_scale=0.1)
    # anchor width for ratio 1 is 32: exp(dw) * 32 = target width
    deltas[0, 6, :3] = np.log(0.7 / 32)  # ratio-1 anchor, width 0.7 px
    deltas[0, 6, 3:] = np.log(1.2 / 32)  # width 1.2 px
    _check_generate_proposals(scores, deltas, anchors, np.array([[48.0, 48.0]], np.float32), 1000, 1000, 0.7, 0.0)


def test_generate_proposals_no_box_survives():
    """Every box is smaller than 1 px in one image: that image gets one [0,0,0,0] box with score 0."""
    rng = np.random.RandomState(52)
    scores, deltas, anchors = _rpn_level_inputs(rng, 3, 5, 6, 32, 8)
    deltas[1, 2::4] = -8.0  # widths 32 * exp(-8) << 1
    im_hw = np.array([[40.0, 48.0], [40.0, 48.0], [40.0, 48.0]], np.float32)
    res = _check_generate_proposals(scores, deltas, anchors, im_hw, 1000, 1000, 0.7, 0.0)
    boxes, probs = res[1]
    np.testing.assert_array_equal(boxes, np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(probs, [0.0])
    assert len(res[0][0]) > 1 and len(res[2][0]) > 1


def test_generate_proposals_anchors_outside_image():
    """Image smaller than the padded grid: boxes are clipped to the float im_shape; boxes fully
    outside collapse to width 0 and are dropped."""
    rng = np.random.RandomState(53)
    scores, deltas, anchors = _rpn_level_inputs(rng, 1, 10, 10, 64, 16)
    _check_generate_proposals(scores, deltas, anchors, np.array([[50.5, 70.25]], np.float32), 1000, 1000, 0.7, 0.0)


# ---------------------------------------------------------------------------------------------------
# 5.4 collection and the full ProposalGenerator
# ---------------------------------------------------------------------------------------------------
def _rows_set(a):
    a = np.asarray(a, np.float64).reshape(-1, 4)
    return a[np.lexsort(a.T[::-1])]


def _level_lists(rng, nums_per_level):
    rois, scores = [], []
    for nums in nums_per_level:
        n = int(sum(nums))
        x1 = rng.uniform(0, 100, n)
        y1 = rng.uniform(0, 100, n)
        rois.append(np.stack([x1, y1, x1 + rng.uniform(1, 50, n), y1 + rng.uniform(1, 50, n)], 1).astype(np.float32))
        scores.append(rng.normal(0, 3, n).astype(np.float32))
    return rois, scores


def _check_collect(rois, scores, nums_per_level, top_n):
    B = len(nums_per_level[0])
    out, out_num = collect_top_proposals(
        [_t(r) for r in rois], [_t(s) for s in scores], [_t(n, "int32") for n in nums_per_level], top_n
    )
    out, out_num = out.numpy().reshape(-1, 4), out_num.numpy()
    assert out.shape == (int(out_num.sum()), 4)
    # split the per-level inputs per image
    starts = [np.concatenate([[0], np.cumsum(n)]) for n in nums_per_level]
    pos = 0
    for b in range(B):
        lb = [r[st[b]:st[b + 1]] for r, st in zip(rois, starts)]
        ls = [s[st[b]:st[b + 1]] for s, st in zip(scores, starts)]
        exp_boxes, _, margin = ref.collect_top_ref(lb, ls, top_n)
        assert margin > 1e-6
        n = int(out_num[b])
        assert n == len(exp_boxes)
        np.testing.assert_array_equal(_rows_set(out[pos:pos + n]), _rows_set(exp_boxes))
        pos += n
    return out, out_num


@pytest.mark.parametrize("top_n", [1, 7, 25, 1000])
def test_collect_top_proposals(top_n):
    rng = np.random.RandomState(60)
    # 3 images x 4 levels; image 1 has nothing on levels 0 and 2, image 2 nothing at all on level 3
    nums_per_level = [np.array(n, np.int32) for n in ([9, 0, 4], [6, 3, 11], [5, 0, 8], [2, 7, 0])]
    rois, scores = _level_lists(rng, nums_per_level)
    _check_collect(rois, scores, nums_per_level, top_n)


def test_collect_top_proposals_all_empty():
    rng = np.random.RandomState(61)
    nums_per_level = [np.array([0, 0], np.int32), np.array([0, 0], np.int32)]
    rois, scores = _level_lists(rng, nums_per_level)
    out, out_num = _check_collect(rois, scores, nums_per_level, 10)
    assert out.shape == (0, 4) and out_num.tolist() == [0, 0]


def test_collect_top_proposals_one_image_empty():
    rng = np.random.RandomState(62)
    nums_per_level = [np.array([0, 3], np.int32), np.array([0, 5], np.int32)]
    rois, scores = _level_lists(rng, nums_per_level)
    _, out_num = _check_collect(rois, scores, nums_per_level, 4)
    assert out_num.tolist() == [0, 4]


def _match_nearest(got, exp, tol):
    """Bijective matching of two box sets by nearest neighbour (max-abs distance)."""
    assert len(got) == len(exp)
    used = np.zeros(len(got), bool)
    for e in exp:
        d = np.abs(got - e).max(axis=1) if len(got) else np.zeros(0)
        d[used] = np.inf
        j = int(np.argmin(d))
        assert d[j] <= tol + 1e-5 * np.abs(e).max(), "no proposal matches reference box {}".format(e)
        used[j] = True


@pytest.mark.parametrize("topk_after_collect", [False, True])
def test_proposal_generator_end_to_end(topk_after_collect):
    rng = np.random.RandomState(72 + int(topk_after_collect))
    B = 2
    shapes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    inputs = [_rpn_level_inputs(rng, B, h, w, s, st) for (h, w), s, st in zip(shapes, SIZES, STRIDES)]
    im_hw = np.array([[60.3, 77.9], [64.0, 50.5]], np.float32)
    pg = ProposalGenerator(pre_nms_top_n=120, post_nms_top_n=60, nms_thresh=0.7, min_size=0.0,
                           topk_after_collect=topk_after_collect)
    rois, rois_num = pg([_t(x[0]) for x in inputs], [_t(x[1]) for x in inputs], [_t(x[2]) for x in inputs],
                        _t(im_hw))
    rois, rois_num = rois.numpy(), rois_num.numpy()
    level_keep = pg.pre_nms_top_n if topk_after_collect else pg.post_nms_top_n
    pos = 0
    for b in range(B):
        lb, ls = [], []
        for scores, deltas, anchors in inputs:
            boxes, sc, margin = ref.generate_proposals_ref(
                scores[b], deltas[b], anchors, im_hw[b], pg.pre_nms_top_n, level_keep, pg.nms_thresh, pg.min_size
            )
            assert margin > 3e-5
            lb.append(boxes)
            ls.append(sc)
        exp, _, margin = ref.collect_top_ref(lb, ls, pg.post_nms_top_n)
        assert margin > 1e-6
        n = int(rois_num[b])
        assert n == len(exp)
        _match_nearest(rois[pos:pos + n], exp, 1e-4)
        pos += n
    assert pos == len(rois)


# ---------------------------------------------------------------------------------------------------
# 11.2 label_anchors / sample_labels / RPNTargetAssign
# ---------------------------------------------------------------------------------------------------
def _gt_and_anchors(rng, G, n_anchors):
    anchors = ref.anchors_ref(6, 8, 32, 8).reshape(-1, 4)
    anchors = np.concatenate([anchors, ref.anchors_ref(3, 4, 64, 16).reshape(-1, 4)])[:n_anchors]
    x1 = rng.uniform(0, 50, G)
    y1 = rng.uniform(0, 40, G)
    gt = np.stack([x1, y1, x1 + rng.uniform(10, 60, G), y1 + rng.uniform(10, 60, G)], 1)
    return gt.astype(np.float32), anchors.astype(np.float32)


def _check_label_anchors(iou, pos, neg, allow_low_quality=True):
    matches, labels = label_anchors(_t(iou), pos, neg, allow_low_quality)
    matches, labels = matches.numpy(), labels.numpy()
    exp_m, exp_l = ref.label_anchors_ref(iou, pos, neg, allow_low_quality)
    np.testing.assert_array_equal(labels, exp_l)
    top2 = np.sort(iou, axis=0)[-2:] if iou.shape[0] > 1 else None
    unique = np.ones(iou.shape[1], bool) if top2 is None else top2[1] > top2[0]
    np.testing.assert_array_equal(matches[unique], exp_m[unique])
    # on ties the match is still one of the best ground truths
    assert np.all(iou[matches, np.arange(iou.shape[1])] == iou.max(axis=0))
    return labels


@pytest.mark.parametrize("allow_low_quality", [True, False])
def test_label_anchors_random_boxes(allow_low_quality):
    rng = np.random.RandomState(80)
    gt, anchors = _gt_and_anchors(rng, 5, 200)
    iou = ref.iou_matrix_ref(gt, anchors).astype(np.float32)
    labels = _check_label_anchors(iou, 0.7, 0.3, allow_low_quality)
    assert set(np.unique(labels).tolist()) <= {-1, 0, 1}
    assert (labels == 0).any() and (labels == -1).any()


def test_label_anchors_ties_and_zero_rows():
    """Low-quality rule: every anchor tying a gt's (positive) best IoU becomes 1; a gt without any
    overlap (best IoU 0) adds nothing; an ignore band between 0.3 and 0.7."""
    iou = np.array(
        [
            [0.10, 0.45, 0.45, 0.20, 0.00, 0.40, 0.00],  # best 0.45 on two anchors
            [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # gt without overlap
            [0.35, 0.05, 0.30, 0.35, 0.71, 0.10, 0.00],
            [0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],  # ties everywhere: all become positive
        ],
        np.float32,
    )
    labels = _check_label_anchors(iou, 0.7, 0.3, True)
    np.testing.assert_array_equal(labels, [1, 1, 1, 1, 1, 1, 1])
    labels = _check_label_anchors(iou[:3], 0.7, 0.3, True)
    np.testing.assert_array_equal(labels, [-1, 1, 1, -1, 1, -1, 0])
    labels = _check_label_anchors(iou[:3], 0.7, 0.3, False)
    np.testing.assert_array_equal(labels, [-1, -1, -1, -1, 1, -1, 0])


def test_label_anchors_single_gt_and_box_sampler_thresholds():
    """fg == bg threshold (BBoxAssigner style, SEMANTICS.md 11.3): no ignore band."""
    rng = np.random.RandomState(81)
    gt, anchors = _gt_and_anchors(rng, 1, 120)
    iou = ref.iou_matrix_ref(gt, anchors).astype(np.float32)
    _check_label_anchors(iou, 0.7, 0.3, True)
    gt, anchors = _gt_and_anchors(rng, 4, 120)
    iou = ref.iou_matrix_ref(gt, anchors).astype(np.float32)
    labels = _check_label_anchors(iou, 0.5, 0.5, False)
    assert not (labels == -1).any()


def _check_sample(labels, num, frac, bg_label, use_random):
    fg, bg = sample_labels(_t(labels, "int32"), num, frac, bg_label, use_random)
    fg, bg = fg.numpy(), bg.numpy()
    pos, neg, n_fg, n_bg = ref.sample_counts_ref(labels, num, frac, bg_label)
    assert len(fg) == n_fg and len(bg) == n_bg
    assert len(np.unique(fg)) == n_fg and len(np.unique(bg)) == n_bg
    assert set(fg.tolist()) <= set(pos.tolist()) and set(bg.tolist()) <= set(neg.tolist())
    if not use_random:
        np.testing.assert_array_equal(fg, pos[:n_fg])
        np.testing.assert_array_equal(bg, neg[:n_bg])
    return fg, bg


@pytest.mark.parametrize("use_random", [True, False])
@pytest.mark.parametrize(
    "n_pos,n_neg,n_ign",
    [(300, 2000, 100), (20, 2000, 50), (0, 500, 10), (40, 0, 5), (200, 60, 0), (0, 0, 30), (0, 0, 0)],
)
def test_sample_labels_rpn_style(n_pos, n_neg, n_ign, use_random):
    rng = np.random.RandomState(90)
    labels = np.array([1] * n_pos + [0] * n_neg + [-1] * n_ign, np.int32)
    rng.shuffle(labels)
    _check_sample(labels, 256, 0.5, 0, use_random)


@pytest.mark.parametrize("use_random", [True, False])
def test_sample_labels_class_labels(use_random):
    """R-CNN style: class labels 0..79 are positives, 80 is background, -1 ignored (512, 0.25)."""
    rng = np.random.RandomState(91)
    labels = rng.choice([-1, 80, 0, 5, 79], size=1500, p=[0.1, 0.6, 0.1, 0.1, 0.1]).astype(np.int32)
    fg, _ = _check_sample(labels, 512, 0.25, 80, use_random)
    assert len(fg) == 128
    labels = np.full(50, 80, np.int32)
    labels[[3, 17]] = [0, 12]
    fg, bg = _check_sample(labels, 512, 0.25, 80, use_random)
    assert sorted(fg.tolist()) == [3, 17] and len(bg) == 48


def test_sample_labels_random_subsets_differ_between_calls():
    labels = np.array([1] * 400 + [0] * 3000, np.int32)
    paddle.seed(3)
    a, _ = sample_labels(_t(labels, "int32"), 256, 0.5, 0, True)
    b, _ = sample_labels(_t(labels, "int32"), 256, 0.5, 0, True)
    assert sorted(a.numpy().tolist()) != sorted(b.numpy().tolist())


def test_rpn_target_assign_against_reference():
    rng = np.random.RandomState(92)
    gt0, anchors = _gt_and_anchors(rng, 3, 60)
    gt1 = np.zeros((0, 4), np.float32)  # image without ground truth: all anchors negative
    assigner = RPNTargetAssign(batch_size_per_im=32, fg_fraction=0.5, positive_overlap=0.7, negative_overlap=0.3)
    labels, targets, norm = assigner(_t(anchors), [_t(gt0), _t(gt1)])
    labels, targets = labels.numpy(), targets.numpy()
    n = len(anchors)
    assert labels.shape == (2 * n,) and targets.shape == (2 * n, 4) and norm == 64.0
    iou = ref.iou_matrix_ref(gt0, anchors)
    matches, exp_labels = ref.label_anchors_ref(iou, 0.7, 0.3)
    _, _, n_fg, n_bg = ref.sample_counts_ref(exp_labels, 32, 0.5, 0)
    l0 = labels[:n]
    assert (l0 == 1).sum() == n_fg and (l0 == 0).sum() == n_bg
    assert np.all(exp_labels[l0 == 1] == 1) and np.all(exp_labels[l0 == 0] == 0)
    np.testing.assert_allclose(targets[:n], ref.bbox2delta_ref(anchors, gt0[matches], [1, 1, 1, 1]),
                               rtol=1e-4, atol=1e-4)
    l1 = labels[n:]
    assert (l1 == 0).sum() == min(n, 32) and (l1 == 1).sum() == 0
    np.testing.assert_array_equal(targets[n:], 0.0)
