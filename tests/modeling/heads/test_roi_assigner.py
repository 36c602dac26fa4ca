"""BBoxAssigner (SEMANTICS.md 11.3) vs the NumPy reference: ground truth prepended to the proposals,
IoU labels per cascade stage (0.5 / 0.6 / 0.7), matched ground truth, is_gt flags and sampling."""
import numpy as np
import paddle
import pytest

from .. import numpy_ref_train as tref


# ---------------------------------------------------------------------------------------------------
# Adapter: the only call into ppdet_htc (re-point it after a refactor)
# ---------------------------------------------------------------------------------------------------
def run_assigner(rois, rois_num, gt_boxes, gt_classes, stage, **cfg):
    """Sample the RoIs of one cascade stage.

    rois ``[R,4]`` float32 (image-major), rois_num ``[B]`` int; gt_boxes: per image ``[G_i,4]`` float32;
    gt_classes: per image ``[G_i]`` int (0..C-1). ``stage``: index into ``cascade_iou`` (used as both the
    fg and bg threshold), or None for ``fg_thresh`` / ``bg_thresh``. cfg: ``batch_size_per_im``,
    ``fg_fraction``, ``fg_thresh``, ``bg_thresh``, ``cascade_iou``, ``num_classes``, ``use_random``.

    Returns numpy arrays: ``rois [M,4]``, ``rois_num [B]``, ``labels [M]`` (class, ``num_classes`` = bg,
    -1 ignored), ``gt_boxes [M,4]`` (matched ground truth; zeros for an image without any),
    ``gt_index [M]`` (index of that ground truth in its image), ``is_gt [M]`` bool.
    """
    from ppdet_htc.modeling.heads.roi_assigner import BBoxAssigner
    from ppdet_htc.modeling.sampling import GroundTruth

    assigner = BBoxAssigner(**cfg)
    gt = GroundTruth.from_lists([paddle.to_tensor(np.asarray(g, np.float32).reshape(-1, 4)) for g in gt_boxes],
                                [paddle.to_tensor(np.asarray(c, np.int32).reshape(-1, 1)) for c in gt_classes])
    s = assigner(
        paddle.to_tensor(np.asarray(rois, np.float32).reshape(-1, 4)),
        paddle.to_tensor(np.asarray(rois_num, np.int32)),
        gt,
        stage=stage,
    )
    return {
        "rois": s.rois.numpy(), "rois_num": s.rois_num.numpy(), "labels": s.labels.numpy(),
        "gt_boxes": s.gt_boxes.numpy(), "gt_index": s.gt_index.numpy(), "is_gt": s.is_gt.numpy(),
    }


# ---------------------------------------------------------------------------------------------------
NUM_CLASSES = 4
CFG = dict(batch_size_per_im=16, fg_fraction=0.25, cascade_iou=list(tref.CASCADE_IOU), num_classes=NUM_CLASSES)


def make_image(rng, n_gt, n_props, hw=(80.0, 120.0)):
    """GT boxes, and proposals that are jittered GT copies (IoU spread over 0.3..0.95) plus random boxes."""
    h, w = hw
    wh = rng.uniform(15, 45, (n_gt, 2))
    xy = rng.uniform(0, 1, (n_gt, 2)) * ([w, h] - wh)
    gt = np.concatenate([xy, xy + wh], 1)
    props = []
    for i in range(n_props):
        if n_gt and i % 3 != 2:
            g = gt[rng.integers(n_gt)]
            size = np.tile(g[2:] - g[:2], 2)
            props.append(g + rng.normal(0, rng.choice([0.03, 0.08, 0.15, 0.25]), 4) * size)
        else:
            x1, y1 = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            props.append([x1, y1, x1 + rng.uniform(5, 40), y1 + rng.uniform(5, 40)])
    props = np.asarray(props, np.float64).reshape(-1, 4)
    props[:, 2:] = np.maximum(props[:, 2:], props[:, :2] + 1.0)
    return gt.astype(np.float32), rng.integers(0, NUM_CLASSES, n_gt), props.astype(np.float32)


def make_batch(seed, specs):
    rng = np.random.default_rng(seed)
    imgs = [make_image(rng, g, p) for g, p in specs]
    rois = np.concatenate([p for _, _, p in imgs]).reshape(-1, 4)
    return rois, np.array([len(p) for _, _, p in imgs]), [g for g, _, _ in imgs], [c for _, c, _ in imgs]


def check_gt_index(got_index, exp_index, iou_cols):
    """Exact where the best ground truth is unique; on ties, one of the best (as the existing
    label_anchors tests). ``iou_cols [G, M]``: IoU of the sampled candidates."""
    if iou_cols.shape[0] == 0:
        np.testing.assert_array_equal(got_index, 0)
        return
    top = np.sort(iou_cols, axis=0)
    unique = top[-1] > top[-2] if iou_cols.shape[0] > 1 else np.ones(iou_cols.shape[1], bool)
    np.testing.assert_array_equal(got_index[unique], exp_index[unique])
    assert np.all(iou_cols[got_index, np.arange(iou_cols.shape[1])] == iou_cols.max(axis=0))


def check_deterministic(out, rois, rois_num, gts, classes, fg_t, bg_t, cfg):
    exp, per_image = tref.bbox_assign_ref(rois, rois_num, gts, classes, fg_t, bg_t, cfg["batch_size_per_im"],
                                          cfg["fg_fraction"], cfg["num_classes"])
    for a in per_image:
        assert a["margin"] > 1e-5, "fixed-seed data too close to an IoU threshold"
    np.testing.assert_array_equal(out["rois_num"], exp["rois_num"])
    np.testing.assert_array_equal(out["rois"], exp["rois"].astype(np.float32))  # gathered, bit-exact
    np.testing.assert_array_equal(out["labels"], exp["labels"])
    np.testing.assert_array_equal(out["is_gt"], exp["is_gt"])
    start = 0
    for b, (a, n) in enumerate(zip(per_image, exp["rois_num"])):
        sl = slice(start, start + n)
        check_gt_index(out["gt_index"][sl], exp["gt_index"][sl], a["iou"][:, a["keep"]])
        gt = np.asarray(gts[b], np.float32).reshape(-1, 4)
        want = gt[out["gt_index"][sl]] if len(gt) else np.zeros((n, 4), np.float32)
        np.testing.assert_array_equal(out["gt_boxes"][sl], want)
        start += n
    return exp, per_image


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_stage_labels_and_order_match_reference(stage):
    """use_random=False: [fg in candidate order, bg in candidate order], GT rows first among candidates,
    threshold cascade_iou[stage]; two images with different GT / proposal counts."""
    rois, nums, gts, classes = make_batch(10 + stage, [(3, 40), (1, 25)])
    cfg = dict(CFG, use_random=False)
    out = run_assigner(rois, nums, gts, classes, stage, **cfg)
    thr = tref.CASCADE_IOU[stage]
    exp, per_image = check_deterministic(out, rois, nums, gts, classes, thr, thr, cfg)
    # the case is not trivial: the fg cap binds in image 0, every image has fg and bg, and some
    # candidates lie between neighbouring stage thresholds (a wrong threshold changes labels)
    assert len(per_image[0]["fg_pool"]) > per_image[0]["n_fg"] == 4
    assert all(a["n_fg"] > 0 and a["n_bg"] > 0 for a in per_image)
    best = np.concatenate([a["iou"].max(axis=0) for a in per_image])
    for lo, hi in [(thr - 0.1, thr), (thr, thr + 0.1)]:
        assert ((best >= lo) & (best < hi)).any()
    # GT rows are candidates with IoU 1 with themselves: foreground of their own class
    assert out["is_gt"].sum() > 0
    gt_rows = np.nonzero(out["is_gt"])[0]
    assert np.all(out["labels"][gt_rows] < NUM_CLASSES)
    np.testing.assert_array_equal(out["rois"][gt_rows], out["gt_boxes"][gt_rows])


@pytest.mark.parametrize("stage", [0, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_subsets_are_eligible_and_counted(stage, seed):
    """use_random=True: exactly n_fg = min(#fg, int(16*0.25)) foreground rows first, then
    n_bg = min(#bg, 16 - n_fg) background rows, each a distinct candidate of the right pool, with the
    reference's label / matched ground truth / is_gt."""
    rois, nums, gts, classes = make_batch(20 + seed, [(4, 60), (2, 30)])
    cfg = dict(CFG, use_random=True)
    paddle.seed(seed)
    out = run_assigner(rois, nums, gts, classes, stage, **cfg)
    thr = tref.CASCADE_IOU[stage]
    _, per_image = tref.bbox_assign_ref(rois, nums, gts, classes, thr, thr, 16, 0.25, NUM_CLASSES)
    np.testing.assert_array_equal(out["rois_num"], [a["n_fg"] + a["n_bg"] for a in per_image])
    start = 0
    for b, a in enumerate(per_image):
        assert a["margin"] > 1e-5
        n = a["n_fg"] + a["n_bg"]
        sl = slice(start, start + n)
        cand = a["cand"].astype(np.float32)
        # each sampled row is one candidate (candidates are distinct boxes)
        idx = np.array([np.nonzero((cand == r).all(axis=1))[0][0] for r in out["rois"][sl]])
        assert len(np.unique(idx)) == n
        assert set(idx[:a["n_fg"]]) <= set(a["fg_pool"]) and set(idx[a["n_fg"]:]) <= set(a["bg_pool"])
        np.testing.assert_array_equal(out["labels"][sl], a["labels"][idx])
        np.testing.assert_array_equal(out["is_gt"][sl], idx < a["n_gt"])
        check_gt_index(out["gt_index"][sl], a["matches"][idx], a["iou"][:, idx])
        np.testing.assert_array_equal(out["gt_boxes"][sl], np.asarray(gts[b], np.float32)[out["gt_index"][sl]])
        start += n
    # the pools are larger than the quotas, so the subset is really a choice ...
    assert len(per_image[0]["fg_pool"]) > per_image[0]["n_fg"] and len(per_image[0]["bg_pool"]) > per_image[0]["n_bg"]
    # ... and a random one: another call picks other rows
    again = run_assigner(rois, nums, gts, classes, stage, **cfg)
    assert again["rois"].shape == out["rois"].shape and not np.array_equal(again["rois"], out["rois"])


def test_without_stage_uses_fg_and_bg_thresholds_and_never_samples_ignored():
    """stage=None: fg if IoU >= fg_thresh, bg if IoU < bg_thresh, ignored (-1) in between; ignored
    candidates are never sampled."""
    rois, nums, gts, classes = make_batch(30, [(3, 50), (2, 20)])
    cfg = dict(CFG, fg_thresh=0.5, bg_thresh=0.3, use_random=False, batch_size_per_im=128,
               fg_fraction=0.5)
    out = run_assigner(rois, nums, gts, classes, None, **cfg)
    _, per_image = check_deterministic(out, rois, nums, gts, classes, 0.5, 0.3, cfg)
    assert any((a["labels"] == -1).any() for a in per_image)
    assert not (out["labels"] == -1).any()
    # quotas of 64 fg / 128 exceed the pools: every fg and bg candidate is sampled
    for a in per_image:
        assert a["n_fg"] == len(a["fg_pool"]) and a["n_bg"] == len(a["bg_pool"])


@pytest.mark.parametrize("order", ["gt_first", "gt_second"])
def test_image_without_ground_truth_is_all_background(order):
    """No GT: every proposal is a background candidate (no GT prepended), matched index 0, matched box
    zeros, is_gt False; the other image is unaffected."""
    rng = np.random.default_rng(40)
    g0, c0, p0 = make_image(rng, 2, 30)
    _, _, p1 = make_image(rng, 0, 9)
    empty_gt, empty_cls = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    specs = [(g0, c0, p0), (empty_gt, empty_cls, p1)]
    if order == "gt_second":
        specs = specs[::-1]
    rois = np.concatenate([s[2] for s in specs])
    nums = [len(s[2]) for s in specs]
    gts, classes = [s[0] for s in specs], [s[1] for s in specs]
    cfg = dict(CFG, use_random=False)
    out = run_assigner(rois, nums, gts, classes, 0, **cfg)
    check_deterministic(out, rois, nums, gts, classes, 0.5, 0.5, cfg)
    b = 1 if order == "gt_first" else 0
    start = int(out["rois_num"][:b].sum())
    n = int(out["rois_num"][b])
    assert n == 9
    sl = slice(start, start + n)
    np.testing.assert_array_equal(out["rois"][sl], p1)
    assert np.all(out["labels"][sl] == NUM_CLASSES) and not out["is_gt"][sl].any()
    np.testing.assert_array_equal(out["gt_index"][sl], 0)
    np.testing.assert_array_equal(out["gt_boxes"][sl], 0.0)


@pytest.mark.parametrize("batch", [1, 2])
def test_image_without_proposals_samples_its_ground_truth(batch):
    """0 proposals: the candidates are the GT boxes alone, all foreground (IoU 1 with themselves), at
    most int(16*0.25) = 4 of them, no background; the image still has rows."""
    rng = np.random.default_rng(41)
    g0, c0, _ = make_image(rng, 6, 0)
    specs = [(g0, c0, np.zeros((0, 4), np.float32))]
    if batch == 2:
        g1, c1, p1 = make_image(rng, 2, 12)
        specs.append((g1, c1, p1))
    rois = np.concatenate([s[2] for s in specs])
    nums = [len(s[2]) for s in specs]
    cfg = dict(CFG, use_random=False)
    out = run_assigner(rois, nums, [s[0] for s in specs], [s[1] for s in specs], 1, **cfg)
    check_deterministic(out, rois, nums, [s[0] for s in specs], [s[1] for s in specs], 0.6, 0.6, cfg)
    assert out["rois_num"][0] == 4
    np.testing.assert_array_equal(out["rois"][:4], g0[:4])
    np.testing.assert_array_equal(out["labels"][:4], c0[:4])
    np.testing.assert_array_equal(out["gt_index"][:4], np.arange(4))
    assert out["is_gt"][:4].all()
