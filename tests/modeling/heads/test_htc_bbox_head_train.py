"""The box cascade's training path vs the NumPy reference (SEMANTICS.md 7.3, 7.4, 11.3-11.5):
ground-truth removal between stages, box losses, refinement, and the whole interleaved loop
(box sampling -> box loss -> refine -> drop GT / empty -> mask re-sampling -> mask loss -> next stage)."""
import numpy as np
import paddle
import pytest

from .. import numpy_ref as ref
from .. import numpy_ref_train as tref


# ---------------------------------------------------------------------------------------------------
# Adapters: the only calls into ppdet_htc (re-point them after a refactor)
# ---------------------------------------------------------------------------------------------------
def build_cascade_head(num_classes=3, in_channel=8, fc_channel=16, mask_channel=8, mask_convs=2,
                       batch_size_per_im=16, fg_fraction=0.25, use_random=False):
    """A small 3-stage HTC RoI head (box branch with its interleaved mask branch) built by keywords,
    with the default stage delta weights (10,10,5,5)/(20,20,10,10)/(30,30,15,15), stage loss weights
    1/0.5/0.25, cascade IoUs 0.5/0.6/0.7, FPN strides 4..64, 7x7 box / 14x14 mask RoIAlign
    (aligned, adaptive sampling) and 28x28 mask targets."""
    from ppdet_htc.modeling.heads.box_heads import HybridTaskCascadeTwoFCHead
    from ppdet_htc.modeling.heads.htc_mask_head import HybridTaskMaskFeat, HybridTaskMaskHead
    from ppdet_htc.modeling.heads.htc_roi_head import HybridTaskCascadeHead
    from ppdet_htc.modeling.heads.roi_assigner import BBoxAssigner, MaskAssigner

    align = {"sampling_ratio": 0, "aligned": True}
    mask_head = HybridTaskMaskHead(
        head=HybridTaskMaskFeat(in_channel=in_channel, out_channel=mask_channel, num_convs=mask_convs,
                                num_cascade_stages=3, num_classes=num_classes),
        roi_extractor=dict(align, resolution=14), mask_assigner=MaskAssigner(num_classes, 28, target="polygon"),
        num_classes=num_classes, in_channel=in_channel,
    )
    return HybridTaskCascadeHead(
        head=HybridTaskCascadeTwoFCHead(in_channel=in_channel, out_channel=fc_channel, resolution=7),
        roi_extractor=dict(align, resolution=7),
        bbox_assigner=BBoxAssigner(batch_size_per_im=batch_size_per_im, fg_fraction=fg_fraction,
                                   use_random=use_random, cascade_iou=[0.5, 0.6, 0.7], num_classes=num_classes),
        num_classes=num_classes, mask_head=mask_head, roi_channels=in_channel,
    )


def randomize_parameters(layer, seed, std):
    """Overwrite every parameter with N(0, std) so that the stages predict sizeable deltas."""
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.set_value(rng.normal(0, std, p.shape).astype(np.float32))


def run_drop_gt_and_empty(boxes, rois_num, is_gt):
    """Ground-truth removal between stages. boxes ``[M,4]`` (refined, image-major), rois_num ``[B]``,
    is_gt ``[M]`` bool. Returns numpy ``(boxes [K,4], rois_num [B])``."""
    from ppdet_htc.modeling.heads.htc_roi_head import drop_gt_and_empty
    from ppdet_htc.modeling.heads.roi_assigner import SampledRoIs

    m = len(boxes)
    zeros = paddle.zeros([m], dtype="int64")
    boxes = paddle.to_tensor(np.asarray(boxes, np.float32))
    sampled = SampledRoIs(boxes, paddle.to_tensor(np.asarray(rois_num, np.int32)), zeros, paddle.zeros([m, 4]), zeros,
                          paddle.to_tensor(np.asarray(is_gt, bool)))
    out, nums = drop_gt_and_empty(boxes, sampled)
    return out.numpy(), nums.numpy()


def run_box_loss(head, stage, logits, deltas, rois, labels, gt_boxes):
    """Unweighted box losses of ``stage``: logits ``[M,C+1]``, class-agnostic deltas ``[M,4]`` on the
    sampled rois ``[M,4]`` with labels ``[M]`` (C = background) and matched gt boxes ``[M,4]``.
    Returns floats ``(cls, reg)``."""
    from ppdet_htc.modeling.heads.roi_assigner import SampledRoIs

    m = len(labels)
    sampled = SampledRoIs(paddle.to_tensor(np.asarray(rois, np.float32)), paddle.to_tensor(np.array([m], np.int32)),
                          paddle.to_tensor(np.asarray(labels, np.int64)),
                          paddle.to_tensor(np.asarray(gt_boxes, np.float32)),
                          paddle.zeros([m], dtype="int64"), paddle.zeros([m], dtype="bool"))
    cls, reg = head._box_loss(stage, paddle.to_tensor(np.asarray(logits, np.float32)),
                              paddle.to_tensor(np.asarray(deltas, np.float32)), sampled)
    return float(cls), float(reg)


def run_refine(head, stage, deltas, rois, rois_num, im_shape):
    """Boxes after ``stage``: its deltas ``[R,4]`` decoded on its RoIs ``[R,4]`` (counts ``[B]``),
    clipped to each image's float ``im_shape [B,2]`` (h, w). Returns numpy ``[R,4]``."""
    def t(x, dtype="float32"):
        return paddle.to_tensor(np.asarray(x, dtype))

    out = head.refine(stage, t(deltas), t(rois), t(rois_num, "int32"), t(im_shape))
    return out.numpy()


def _sampled_np(s):
    return {"rois": s.rois.numpy(), "rois_num": s.rois_num.numpy(), "labels": s.labels.numpy(),
            "gt_boxes": s.gt_boxes.numpy(), "gt_index": s.gt_index.numpy(), "is_gt": s.is_gt.numpy()}


def run_cascade_loss_recording(head, feats, rois, rois_num, inputs):
    """Training losses of the RoI head, recording what every stage saw.

    feats: FPN levels ``[B,C,H,W]`` (P2..P6); rois ``[R,4]`` proposals with counts ``[B]``; inputs:
    ``gt_bbox`` / ``gt_class`` per image tensors, ``gt_poly`` per image polygon lists, ``im_shape [B,2]``.
    Returns ``(losses {name: float}, records)``, records[t] (numpy): ``box_input`` (proposals, counts)
    given to stage t's box sampler, ``box`` (its sampled RoIs: rois, rois_num, labels, gt_boxes,
    gt_index, is_gt), ``logits [M,C+1]``, ``deltas [M,4]``, ``mask_input`` / ``mask`` (the same for the
    mask re-sampling), ``mask_targets`` (fg rois, counts, labels, targets ``[N,28,28]``) and
    ``mask_logits [N,C,28,28]`` (stage t's mask logits of all classes).
    """
    records = [dict() for _ in range(head.num_cascade_stages)]
    assigner, stage_forward = head.bbox_assigner, head.stage_forward
    mask_head = head.mask_head
    mask_assigner, mask_feat = mask_head.mask_assigner, mask_head.head
    current = []

    def rec_assigner(r, n, gt, stage=None):
        s = assigner(r, n, gt, stage=stage)
        key = "mask" if "box" in records[stage] else "box"
        records[stage][key + "_input"] = (r.numpy(), n.numpy())
        records[stage][key] = _sampled_np(s)
        current[:] = [stage]
        return s

    def rec_stage_forward(t, *args, **kwargs):
        logit, deltas = stage_forward(t, *args, **kwargs)
        records[t]["logits"], records[t]["deltas"] = logit.numpy(), deltas.numpy()
        return logit, deltas

    def rec_mask_assigner(sampled, source):
        out = mask_assigner(sampled, source)
        records[current[0]]["mask_targets"] = tuple(o.numpy() for o in out)
        return out

    def rec_mask_forward(x, stage, all_logits=False):
        outs = type(mask_feat).forward(mask_feat, x, stage, all_logits)
        records[stage]["mask_logits"] = outs[-1].numpy()
        return outs

    head.bbox_assigner, head.stage_forward = rec_assigner, rec_stage_forward
    mask_head.mask_assigner, mask_feat.forward = rec_mask_assigner, rec_mask_forward
    try:
        losses = head.loss(feats, rois, rois_num, inputs)
    finally:
        head.bbox_assigner, mask_head.mask_assigner = assigner, mask_assigner
        del head.stage_forward, mask_feat.forward
    return {k: float(v) for k, v in losses.items()}, records


# ---------------------------------------------------------------------------------------------------
BOX_TOL = dict(rtol=1e-5, atol=1e-4)
LOSS_TOL = dict(rtol=1e-5, atol=1e-7)
NUM_CLASSES = 3


def _boxes(rng, n, lo=0.0, hi=80.0, wmin=2.0, wmax=40.0):
    xy = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(wmin, wmax, (n, 2))], 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# ground-truth removal between stages
# ---------------------------------------------------------------------------------------------------
def test_drop_gt_and_empty_per_image():
    """GT rows and boxes without area (zero or negative width / height) go; an image with nothing left
    keeps its first row (even if it is a GT row or empty); counts per image."""
    rng = np.random.default_rng(1)
    nums = [8, 3, 3]                # rows 0-7, 8-10, 11-13
    boxes = _boxes(rng, 14)
    is_gt = np.zeros(14, bool)
    is_gt[[0, 5]] = True            # image 0: two GT rows ...
    boxes[1] = [5, 5, 5, 9]         # ... a zero-width, a zero-height and an inverted box
    boxes[3] = [5, 5, 9, 5]
    boxes[4] = [9, 5, 5, 9]
    is_gt[8] = True                 # image 1: a GT row and two empty boxes -> keeps its row 0 (the GT row)
    boxes[9] = [3, 3, 3, 3]
    boxes[10] = [0, 7, 4, 7]
    is_gt[11] = True                # image 2: first row GT, the others kept
    got, got_num = run_drop_gt_and_empty(boxes, nums, is_gt)
    exp, exp_num = tref.drop_gt_and_empty_ref(boxes, nums, is_gt)
    np.testing.assert_array_equal(got_num, exp_num)
    np.testing.assert_array_equal(got, exp.astype(np.float32))
    assert exp_num.tolist() == [3, 1, 2]
    np.testing.assert_array_equal(got, boxes[[2, 6, 7, 8, 12, 13]])


def test_drop_gt_and_empty_single_image_and_nothing_dropped():
    rng = np.random.default_rng(2)
    boxes = _boxes(rng, 5)
    got, got_num = run_drop_gt_and_empty(boxes, [5], np.ones(5, bool))
    np.testing.assert_array_equal(got, boxes[:1])
    assert got_num.tolist() == [1]
    got, got_num = run_drop_gt_and_empty(boxes, [2, 3], np.zeros(5, bool))
    np.testing.assert_array_equal(got, boxes)
    assert got_num.tolist() == [2, 3]


# ---------------------------------------------------------------------------------------------------
# box losses
# ---------------------------------------------------------------------------------------------------
def _loss_case(rng, m, n_fg):
    rois = _boxes(rng, m)
    labels = np.full(m, NUM_CLASSES, np.int64)
    fg = rng.choice(m, n_fg, replace=False)
    labels[fg] = rng.integers(0, NUM_CLASSES, n_fg)
    size = np.tile(rois[:, 2:] - rois[:, :2], 2)
    gt_boxes = (rois + rng.normal(0, 0.15, (m, 4)) * size).astype(np.float32)
    gt_boxes[:, 2:] = np.maximum(gt_boxes[:, 2:], gt_boxes[:, :2] + 1)
    logits = rng.normal(0, 2, (m, NUM_CLASSES + 1)).astype(np.float32)
    deltas = rng.normal(0, 1, (m, 4)).astype(np.float32)
    return logits, deltas, rois, labels, gt_boxes


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_box_loss_matches_reference(stage):
    """CE averaged over all M sampled RoIs; L1 of class-agnostic deltas vs bbox2delta(roi, gt, w_stage)
    over the foreground, divided by M (not by the fg count)."""
    head = build_cascade_head(NUM_CLASSES)
    logits, deltas, rois, labels, gt_boxes = _loss_case(np.random.default_rng(10 + stage), 24, 7)
    cls, reg = run_box_loss(head, stage, logits, deltas, rois, labels, gt_boxes)
    exp_cls, exp_reg = tref.box_loss_ref(logits, deltas, rois, labels, gt_boxes, tref.STAGE_DELTA_WEIGHTS[stage],
                                         NUM_CLASSES)
    np.testing.assert_allclose(cls, exp_cls, **LOSS_TOL)
    np.testing.assert_allclose(reg, exp_reg, **LOSS_TOL)
    # the stage's weights matter: another stage's weights give another regression loss
    other = tref.box_loss_ref(logits, deltas, rois, labels, gt_boxes, tref.STAGE_DELTA_WEIGHTS[(stage + 1) % 3],
                              NUM_CLASSES)[1]
    assert abs(other - exp_reg) > 1e-2 * exp_reg


def test_box_loss_without_foreground_is_zero_regression():
    head = build_cascade_head(NUM_CLASSES)
    logits, deltas, rois, labels, gt_boxes = _loss_case(np.random.default_rng(13), 9, 0)
    cls, reg = run_box_loss(head, 0, logits, deltas, rois, labels, gt_boxes)
    np.testing.assert_allclose(cls, tref.softmax_ce_ref(logits, labels).mean(), **LOSS_TOL)
    assert reg == 0.0


# ---------------------------------------------------------------------------------------------------
# refinement between stages
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_refine_decodes_with_stage_weights_and_clips_to_each_image(stage):
    head = build_cascade_head(NUM_CLASSES)
    rng = np.random.default_rng(20 + stage)
    rois = _boxes(rng, 12, lo=0, hi=70, wmin=5)
    w = np.asarray(tref.STAGE_DELTA_WEIGHTS[stage], np.float32)
    deltas = (rng.normal(0, 0.6, (12, 4)) * w).astype(np.float32)
    deltas[0, 2:] = 6.0 * w[2:]  # log-size beyond log(1000/16): clamped
    nums = [5, 7]
    im_shape = np.array([[50.5, 66.25], [70.0, 40.75]], np.float32)  # float, unrounded
    got = run_refine(head, stage, deltas, rois, nums, im_shape)
    exp = tref.refine_ref(deltas, rois, nums, im_shape, tref.STAGE_DELTA_WEIGHTS[stage])
    np.testing.assert_allclose(got, exp, **BOX_TOL)
    # each image is clipped to its own shape: the other image's shape would give other boxes
    swapped = tref.refine_ref(deltas, rois, nums, im_shape[::-1], tref.STAGE_DELTA_WEIGHTS[stage])
    assert np.abs(swapped[:5] - exp[:5]).max() > 1 and np.abs(swapped[5:] - exp[5:]).max() > 1


# ---------------------------------------------------------------------------------------------------
# the interleaved training loop
# ---------------------------------------------------------------------------------------------------
def _polygon_in(box, rng):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    pts = [(x1 + rng.uniform(0, 0.3) * w, y1 + rng.uniform(0, 0.3) * h), (x2 - rng.uniform(0, 0.3) * w, y1),
           (x2, y2 - rng.uniform(0, 0.3) * h), (x1 + rng.uniform(0.2, 0.5) * w, y2)]
    return [[float(c) for p in pts for c in p]]


def _training_batch(seed, n_gts):
    """Two images (padded 64x96) with float im_shape, polygons, and proposals: jittered GT copies,
    random boxes, and (first in each image) boxes beyond the image's valid width that refine to
    zero-width boxes after clipping."""
    rng = np.random.default_rng(seed)
    im_shape = np.array([[60.5, 90.25], [64.0, 80.0]], np.float32)
    feats = [paddle.to_tensor(rng.normal(0, 1, (2, 8, 64 // s, 96 // s)).astype(np.float32))
             for s in (4, 8, 16, 32, 64)]
    gts, classes, polys, props = [], [], [], []
    for b, n_gt in enumerate(n_gts):
        h, w = im_shape[b]
        wh = rng.uniform(14, 30, (n_gt, 2))
        xy = rng.uniform(0, 1, (n_gt, 2)) * ([w - 2, h - 2] - wh)
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        gts.append(gt)
        classes.append(rng.integers(0, NUM_CLASSES, n_gt))
        polys.append([_polygon_in(g, rng) for g in gt])
        p = [[w + 1, 10, w + 5, 30], [w + 0.5, 20, w + 4, 44]]
        for i in range(22):
            if n_gt and i % 3:
                g = gt[rng.integers(n_gt)]
                p.append(g + rng.normal(0, rng.choice([0.05, 0.1, 0.2]), 4) * np.tile(g[2:] - g[:2], 2))
            else:
                x1, y1 = rng.uniform(0, w - 12), rng.uniform(0, h - 12)
                p.append([x1, y1, x1 + rng.uniform(6, 30), y1 + rng.uniform(6, 30)])
        p = np.asarray(p, np.float64)
        p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 1.0)
        props.append(p.astype(np.float32))
    inputs = {
        "gt_bbox": [paddle.to_tensor(g) for g in gts],
        "gt_class": [paddle.to_tensor(c.astype(np.int32).reshape(-1, 1)) for c in classes],
        "gt_poly": polys,
        "im_shape": paddle.to_tensor(im_shape),
    }
    rois = np.concatenate(props)
    nums = np.array([len(p) for p in props], np.int32)
    return feats, rois, nums, inputs, gts, classes, polys, im_shape


def _check_sampled(got, rois_in, nums_in, gts, classes, thr, bs, frac):
    exp, per_image = tref.bbox_assign_ref(rois_in, nums_in, gts, classes, thr, thr, bs, frac, NUM_CLASSES)
    for a in per_image:
        assert a["margin"] > 1e-5, "fixed-seed data too close to an IoU threshold"
    np.testing.assert_array_equal(got["rois_num"], exp["rois_num"])
    np.testing.assert_array_equal(got["rois"], exp["rois"].astype(np.float32))
    np.testing.assert_array_equal(got["labels"], exp["labels"])
    np.testing.assert_array_equal(got["is_gt"], exp["is_gt"])
    fg = exp["labels"] < NUM_CLASSES
    np.testing.assert_array_equal(got["gt_index"][fg], exp["gt_index"][fg])
    np.testing.assert_array_equal(got["gt_boxes"][fg], exp["gt_boxes"][fg].astype(np.float32))


@pytest.mark.parametrize("n_gts", [(3, 2), (3, 0)], ids=["both_images_with_gt", "second_image_without_gt"])
def test_interleaved_cascade_losses_match_reference(n_gts):
    """Per stage t (IoU 0.5/0.6/0.7, delta weights w_t, loss weights 1/0.5/0.25), use_random=False:
    box sampling of [gt; proposals] -> loss_bbox_{cls,reg}_stage{t} = lw_t * reference on the stage's
    logits/deltas -> refine (decode with w_t, clip per image) -> drop GT rows and empty boxes -> mask
    re-sampling of the refined boxes (GT prepended again, same IoU) -> pycocotools targets of its
    foreground -> loss_mask_stage{t} = lw_t * BCE on the label channel -> the refined boxes are the
    next stage's proposals."""
    feats, rois, nums, inputs, gts, classes, polys, im_shape = _training_batch(7, n_gts)
    head = build_cascade_head(NUM_CLASSES, batch_size_per_im=16, fg_fraction=0.25, use_random=False)
    randomize_parameters(head, seed=3, std=0.2)
    head.train()
    losses, records = run_cascade_loss_recording(head, feats, paddle.to_tensor(rois), paddle.to_tensor(nums), inputs)
    assert set(losses) == {"loss_{}_stage{}".format(k, t) for k in ("bbox_cls", "bbox_reg", "mask") for t in range(3)}
    props, props_num = rois.astype(np.float64), nums.astype(np.int64)
    dropped_empty = 0
    for t in range(3):
        r = records[t]
        thr, lw, dw = tref.CASCADE_IOU[t], tref.STAGE_LOSS_WEIGHTS[t], tref.STAGE_DELTA_WEIGHTS[t]
        # box branch: the proposals are the previous stage's refined boxes
        np.testing.assert_array_equal(r["box_input"][1], props_num)
        np.testing.assert_allclose(r["box_input"][0], props, **BOX_TOL)
        box = r["box"]
        _check_sampled(box, r["box_input"][0], r["box_input"][1], gts, classes, thr, 16, 0.25)
        cls, reg = tref.box_loss_ref(r["logits"], r["deltas"], box["rois"], box["labels"], box["gt_boxes"], dw,
                                     NUM_CLASSES)
        assert reg > 0
        np.testing.assert_allclose(losses["loss_bbox_cls_stage{}".format(t)], lw * cls, **LOSS_TOL)
        np.testing.assert_allclose(losses["loss_bbox_reg_stage{}".format(t)], lw * reg, **LOSS_TOL)
        # refinement, then GT rows and empty boxes removed
        refined = tref.refine_ref(r["deltas"], box["rois"], box["rois_num"], im_shape, dw)
        w_h = np.concatenate([refined[:, 2] - refined[:, 0], refined[:, 3] - refined[:, 1]])
        assert np.all((w_h == 0) | (np.abs(w_h) > 1e-3)), "a refined box is too close to empty"
        dropped_empty += int((~ref.nonempty_ref(refined) & ~box["is_gt"]).sum())
        props, props_num = tref.drop_gt_and_empty_ref(refined, box["rois_num"], box["is_gt"])
        # mask branch: re-sampled refined boxes, foreground targets, loss of stage t's logits
        np.testing.assert_array_equal(r["mask_input"][1], props_num)
        np.testing.assert_allclose(r["mask_input"][0], props, **BOX_TOL)
        m = r["mask"]
        _check_sampled(m, r["mask_input"][0], r["mask_input"][1], gts, classes, thr, 16, 0.25)
        exp_rois, exp_counts, exp_labels, exp_targets = tref.mask_targets_ref(
            m["rois"], m["rois_num"], m["labels"], m["gt_index"], polys, NUM_CLASSES, 28)
        got_rois, got_counts, got_labels, got_targets = r["mask_targets"]
        np.testing.assert_array_equal(got_rois, exp_rois)
        np.testing.assert_array_equal(got_counts, exp_counts)
        np.testing.assert_array_equal(got_labels, exp_labels)
        np.testing.assert_array_equal(got_targets, exp_targets)
        assert len(exp_labels) > 0 and exp_targets.sum() > 0
        assert r["mask_logits"].shape == (len(exp_labels), NUM_CLASSES, 28, 28)
        np.testing.assert_allclose(losses["loss_mask_stage{}".format(t)],
                                   tref.mask_loss_ref(r["mask_logits"], exp_labels, exp_targets, lw), **LOSS_TOL)
        if n_gts[1] == 0:
            assert exp_counts[1] == 0 and m["rois_num"][1] > 0
        props = r["mask_input"][0].astype(np.float64)  # continue from the head's own float32 boxes
    assert dropped_empty > 0, "the case should exercise the removal of empty boxes"
