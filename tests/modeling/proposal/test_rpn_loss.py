"""RPN training loss vs the NumPy reference (SEMANTICS.md 11.2): anchors labelled by IoU (with
low-quality matches), 256 sampled per image (at most half positive), BCE on the sampled anchors and
smooth-L1 (beta 1/9) or L1 on the positives' deltas, both divided by 256 * B."""
import numpy as np
import paddle
import pytest

from .. import numpy_ref_train as tref


# ---------------------------------------------------------------------------------------------------
# Adapter: the only call into ppdet_htc (re-point it after a refactor)
# ---------------------------------------------------------------------------------------------------
def run_rpn_loss(scores, deltas, anchors, gt_boxes, use_random=False, use_smooth_l1_loss=True,
                 batch_size_per_im=256, fg_fraction=0.5, positive_overlap=0.7, negative_overlap=0.3):
    """RPN losses from per-level objectness logits ``[B,A,H,W]``, deltas ``[B,4A,H,W]`` (channels
    ``4a..4a+3`` = anchor a), anchors ``[H,W,A,4]`` per level and per-image gt boxes ``[G_i,4]``; smooth-L1
    beta 1/9 when ``use_smooth_l1_loss``. Returns floats ``(loss_rpn_cls, loss_rpn_reg)``."""
    from ppdet_htc.modeling.proposal.rpn_head import RPNHead

    head = RPNHead(
        # (the anchors are passed in; RPNHead() alone fails: AnchorGenerator's defaults are 5 sizes, 1 stride)
        anchor_generator={"anchor_sizes": [[32], [64], [128], [256], [512]], "strides": [4, 8, 16, 32, 64]},
        rpn_target_assign={"batch_size_per_im": batch_size_per_im, "fg_fraction": fg_fraction,
                           "positive_overlap": positive_overlap, "negative_overlap": negative_overlap,
                           "use_random": use_random},
        in_channel=4, use_smooth_l1_loss=use_smooth_l1_loss, smooth_l1_loss_beta_nume=1.0,
        smooth_l1_loss_beta_deno=9.0,
    )
    out = head.get_loss([paddle.to_tensor(s) for s in scores], [paddle.to_tensor(d) for d in deltas],
                        [paddle.to_tensor(np.asarray(a, np.float32)) for a in anchors],
                        {"gt_bbox": [paddle.to_tensor(np.asarray(g, np.float32).reshape(-1, 4)) for g in gt_boxes]})
    assert set(out) == {"loss_rpn_cls", "loss_rpn_reg"}
    return float(out["loss_rpn_cls"]), float(out["loss_rpn_reg"])


# ---------------------------------------------------------------------------------------------------
LEVELS = [((10, 12), 16, 4), ((5, 6), 32, 8), ((3, 3), 64, 16)]  # (H, W), anchor size, stride
SHAPES = ((1.0, 1.0), (1.5, 0.75), (0.75, 1.5))  # (w, h) of the 3 anchors per cell, in anchor sizes


def grid_anchors(h, w, size, stride):
    """``[H,W,3,4]`` anchors centred on ``(j*stride, i*stride)`` with integer widths and heights, so
    that IoU ties (anchors inside a gt box) are exact in float32 as in float64."""
    out = np.zeros((h, w, len(SHAPES), 4), np.float32)
    for a, (fw, fh) in enumerate(SHAPES):
        bw, bh = fw * size, fh * size
        cx = np.arange(w)[None, :] * stride
        cy = np.arange(h)[:, None] * stride
        out[:, :, a] = np.stack(np.broadcast_arrays(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), -1)
    return out


def _case(seed, n_gts, delta_scale=0.3):
    rng = np.random.default_rng(seed)
    b = len(n_gts)
    anchors = [grid_anchors(h, w, size, stride) for (h, w), size, stride in LEVELS]
    scores = [rng.normal(0, 2, (b, 3, h, w)).astype(np.float32) for (h, w), _, _ in LEVELS]
    deltas = [rng.normal(0, delta_scale, (b, 12, h, w)).astype(np.float32) for (h, w), _, _ in LEVELS]
    gts = []
    for n in n_gts:
        wh = rng.uniform(10, 40, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * ([48, 40] - wh)
        gts.append(np.concatenate([xy, xy + wh], 1).astype(np.float32))
    return scores, deltas, anchors, gts


@pytest.mark.parametrize("smooth", [True, False], ids=["smooth_l1", "l1"])
@pytest.mark.parametrize("bs", [256, 8], ids=["all_sampled", "quota_binds"])
def test_rpn_loss_matches_reference(smooth, bs):
    """Two images (3 and 1 GT), use_random=False: the first positives / negatives in anchor order."""
    scores, deltas, anchors, gts = _case(0, [3, 1])
    got = run_rpn_loss(scores, deltas, anchors, gts, use_smooth_l1_loss=smooth, batch_size_per_im=bs)
    cls, reg, margin, info = tref.rpn_loss_ref(scores, deltas, anchors, gts, batch_size_per_im=bs,
                                               use_smooth_l1=smooth)
    assert margin > 1e-5, "fixed-seed data too close to a labelling decision"
    np.testing.assert_allclose(got, (cls, reg), rtol=1e-5)
    assert all(len(i["pos"]) > 0 for i in info)
    assert sum(i["n_low_quality"] for i in info) > 0  # positives by the best-anchor-of-a-gt rule
    if bs == 8:  # the positive quota (4) and the total (8) bind in image 0
        assert info[0]["n_pos_pool"] > 4 and len(info[0]["pos"]) == 4 and len(info[0]["neg"]) == 4
    else:
        assert info[0]["n_neg_pool"] > 256 - len(info[0]["pos"]) == len(info[0]["neg"])
    # smooth-L1 and L1 differ on this case (some |d| < 1/9), so the flag is pinned too
    other = tref.rpn_loss_ref(scores, deltas, anchors, gts, batch_size_per_im=bs, use_smooth_l1=not smooth)[1]
    assert abs(other - reg) > 1e-3 * reg


def test_rpn_loss_image_without_ground_truth():
    """No GT: all anchors are negatives (min(N, 256) sampled), no regression; the other image as usual."""
    scores, deltas, anchors, gts = _case(1, [2, 0])
    got = run_rpn_loss(scores, deltas, anchors, gts)
    cls, reg, margin, info = tref.rpn_loss_ref(scores, deltas, anchors, gts)
    assert margin > 1e-5
    np.testing.assert_allclose(got, (cls, reg), rtol=1e-5)
    n_anchors = sum(a.size // 4 for a in anchors)
    assert len(info[1]["neg"]) == min(n_anchors, 256) and len(info[1]["pos"]) == 0


def test_rpn_loss_without_any_ground_truth():
    scores, deltas, anchors, gts = _case(2, [0])
    cls, reg = run_rpn_loss(scores, deltas, anchors, gts)
    exp_cls, exp_reg, _, _ = tref.rpn_loss_ref(scores, deltas, anchors, gts)
    np.testing.assert_allclose(cls, exp_cls, rtol=1e-5)
    assert reg == 0.0 and exp_reg == 0.0


def test_rpn_loss_random_sampling_of_everything_equals_reference():
    """use_random=True with quotas larger than the pools samples every eligible anchor, so the loss is
    the deterministic one (random order does not change a sum)."""
    scores, deltas, anchors, gts = _case(3, [1])
    n_anchors = sum(a.size // 4 for a in anchors)
    got = run_rpn_loss(scores, deltas, anchors, gts, use_random=True, batch_size_per_im=2 * n_anchors)
    cls, reg, margin, info = tref.rpn_loss_ref(scores, deltas, anchors, gts, batch_size_per_im=2 * n_anchors)
    assert margin > 1e-5
    assert len(info[0]["pos"]) == info[0]["n_pos_pool"] and len(info[0]["neg"]) == info[0]["n_neg_pool"]
    np.testing.assert_allclose(got, (cls, reg), rtol=1e-5)
