"""The mask branch's training path vs the NumPy reference (SEMANTICS.md 9.2, 11.5): mask targets of
the foreground RoIs, and the stage-t loss through the mask information flow (stages < t produce
features only), BCE-with-logits on the target class channel averaged over pixels and RoIs, x weight."""
import numpy as np
import paddle
import pytest

from .. import numpy_ref as ref
from .. import numpy_ref_train as tref


# ---------------------------------------------------------------------------------------------------
# Adapters: the only calls into ppdet_htc (re-point them after a refactor)
# ---------------------------------------------------------------------------------------------------
def build_mask_head(in_channel, out_channel, num_convs, num_classes, num_stages=3):
    """HTC mask branch with ``num_stages`` stages (each: ``num_convs`` 3x3 conv+ReLU, 2x2/2 deconv + ReLU,
    1x1 logits with ``num_classes`` channels, and for stages > 0 a 1x1 conv_res + ReLU from the previous
    stage's features), 14x14 RoIAlign (aligned, adaptive sampling) on P2..P5 (strides 4..32), 28x28 targets."""
    from ppdet_htc.modeling.heads.htc_mask_head import HybridTaskMaskFeat, HybridTaskMaskHead
    from ppdet_htc.modeling.heads.roi_assigner import MaskAssigner

    return HybridTaskMaskHead(
        head=HybridTaskMaskFeat(in_channel=in_channel, out_channel=out_channel, num_convs=num_convs,
                                num_cascade_stages=num_stages, num_classes=num_classes),
        roi_extractor={"resolution": 14, "sampling_ratio": 0, "aligned": True},
        mask_assigner=MaskAssigner(num_classes=num_classes, mask_resolution=28, target="polygon"),
        num_classes=num_classes, in_channel=in_channel,
    )


def randomize_parameters(layer, seed, std):
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.set_value(rng.normal(0, std, p.shape).astype(np.float32))


def mask_stage_params(mask_head, t):
    """Stage t's weights as numpy ``(weight, bias)`` pairs: ``convs`` (list, ``[O,I,3,3]``), ``res``
    (``[I,O,1,1]``, None for stage 0), ``upsample`` (``[O,O,2,2]``, ConvTranspose layout in/out),
    ``logits`` (``[C,O,1,1]``)."""
    sub = mask_head.head.stages[t]

    def wb(layer):
        return layer.weight.numpy(), layer.bias.numpy()

    return {"convs": [wb(c.conv) for c in sub.convs], "res": wb(sub.conv_res.conv) if t > 0 else None,
            "upsample": wb(sub.upsample), "logits": wb(sub.conv_logits)}


def run_mask_assigner(rois, rois_num, labels, gt_index, gt_segms, num_classes, resolution=28):
    """Mask targets of the foreground rows (label in ``[0, C)``) of sampled RoIs (``rois [M,4]``,
    ``rois_num [B]``, ``labels [M]``, ``gt_index [M]``); gt_segms: per image, per object polygons.
    Returns numpy ``(rois [N,4], rois_num [B], labels [N], targets [N,res,res] float32)``."""
    from ppdet_htc.modeling.heads.roi_assigner import MaskAssigner, MaskTargetSource, SampledRoIs

    m = len(labels)
    def t(x, dtype):
        return paddle.to_tensor(np.asarray(x, dtype))

    sampled = SampledRoIs(t(rois, np.float32), t(rois_num, np.int32), t(labels, np.int64), paddle.zeros([m, 4]),
                          t(gt_index, np.int64), paddle.zeros([m], dtype="bool"))
    assigner = MaskAssigner(num_classes=num_classes, mask_resolution=resolution, target="polygon")
    out = assigner(sampled, MaskTargetSource(None, polygons=gt_segms))
    return tuple(o.numpy() for o in out)


def run_mask_loss(mask_head, feats, rois, rois_num, labels, targets, stage, weight):
    """Mask loss of ``stage`` (already multiplied by ``weight``) for fg RoIs ``rois [N,4]`` (counts
    ``[B]``) with labels ``[N]`` and targets ``[N,28,28]``, on FPN features (list of ``[B,C,H,W]``)."""
    def t(x, dtype):
        return paddle.to_tensor(np.asarray(x, dtype))

    loss = mask_head.loss([t(f, np.float32) for f in feats], t(rois, np.float32).reshape([-1, 4]),
                          t(rois_num, np.int32), (t(labels, np.int64), t(targets, np.float32)), stage, weight)
    return float(loss)


# ---------------------------------------------------------------------------------------------------
NUM_CLASSES = 3
STRIDES = (4, 8, 16, 32)


def _objects(rng, n, size=100):
    objs = []
    for _ in range(n):
        parts = []
        for _ in range(rng.integers(1, 3)):
            c = rng.uniform(20, size - 20, 2)
            k = rng.integers(3, 7)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            r = rng.uniform(5, 20, k)
            parts.append(np.stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)], 1).reshape(-1).tolist())
        objs.append(parts)
    return objs


def _rois(rng, n, lo=0.0, hi=90.0, wmin=4.0, wmax=50.0):
    xy = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(wmin, wmax, (n, 2))], 1).astype(np.float32)


def test_mask_assigner_foreground_rows_counts_and_targets():
    """Foreground rows in sampled order; an image without foreground gets count 0; targets are the
    matched object's polygons rasterised in the RoI's 28x28 grid."""
    rng = np.random.default_rng(0)
    segms = [_objects(rng, 3), _objects(rng, 2), _objects(rng, 2)]
    nums = [6, 3, 4]
    rois = _rois(rng, 13)
    labels = np.array([1, 3, 0, 2, 3, 0, 3, 3, 3, 3, 2, 1, 3], np.int64)  # 3 = background
    gt_index = np.array([2, 0, 0, 1, 1, 2, 0, 1, 0, 1, 0, 1, 0], np.int64)
    got = run_mask_assigner(rois, nums, labels, gt_index, segms, NUM_CLASSES)
    exp = tref.mask_targets_ref(rois, nums, labels, gt_index, segms, NUM_CLASSES, 28)
    for g, e in zip(got, exp):
        np.testing.assert_array_equal(g, e)
    assert got[1].tolist() == [4, 0, 2] and got[3].sum() > 0


def test_mask_assigner_without_foreground():
    rng = np.random.default_rng(1)
    rois, nums, labels, targets = run_mask_assigner(_rois(rng, 5), [2, 3], np.full(5, NUM_CLASSES), np.zeros(5),
                                                    [_objects(rng, 1), _objects(rng, 1)], NUM_CLASSES)
    assert rois.shape == (0, 4) and labels.shape == (0,) and targets.shape == (0, 28, 28)
    assert nums.tolist() == [0, 0]


def _roi_features_ref(feats, rois, rois_num):
    """14x14 RoIAlign of every RoI on its FPN level (SEMANTICS.md 6.1 with the CPU epsilon)."""
    levels, margin = ref.fpn_level_ref(rois)
    assert margin > 1e-4
    img = np.repeat(np.arange(len(rois_num)), rois_num)
    out = []
    for r, (box, lvl) in enumerate(zip(rois, levels)):
        f, m = ref.roi_align_single_ref(feats[lvl - 2][img[r]], box, 14, 1.0 / STRIDES[lvl - 2])
        assert m > 1e-5
        out.append(f)
    return np.stack(out), levels


def _mask_case(seed):
    """Two 128x160 images, C=4 features on P2..P5 (+P6), RoIs from 6 to 150 px (levels 2..4)."""
    rng = np.random.default_rng(seed)
    feats = [rng.normal(0, 1, (2, 4, 128 // s, 160 // s)).astype(np.float32) for s in (4, 8, 16, 32, 64)]
    rois = np.concatenate([_rois(rng, 5, 0, 100, 6, 60), _rois(rng, 3, 0, 20, 110, 150)])
    nums = np.array([5, 3])
    labels = rng.integers(0, NUM_CLASSES, len(rois))
    targets = (rng.random((len(rois), 28, 28)) < 0.4).astype(np.float32)
    return feats, rois, nums, labels, targets


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_mask_loss_through_the_information_flow(stage):
    """loss_mask(stage t) = w * mean BCE(logit_t[label], target), where logit_t comes from
    f_0 = convs_0(x), f_s = convs_s(x + ReLU(conv_res_s(f_{s-1}))) for s <= t, and x is the 14x14
    RoIAlign of each RoI on its FPN level."""
    feats, rois, nums, labels, targets = _mask_case(40 + stage)
    head = build_mask_head(4, 6, 2, NUM_CLASSES)
    randomize_parameters(head, seed=stage, std=0.5)
    head.train()
    weight = tref.STAGE_LOSS_WEIGHTS[stage]
    got = run_mask_loss(head, feats, rois, nums, labels, targets, stage, weight)
    x, levels = _roi_features_ref(feats, rois, nums)
    assert len(set(levels.tolist())) >= 2
    params = [mask_stage_params(head, s) for s in range(3)]
    logits = tref.htc_mask_logits_ref(x, params, stage)
    exp = tref.mask_loss_ref(logits, labels, targets, weight)
    np.testing.assert_allclose(got, exp, rtol=1e-5)
    if stage > 0:  # the flow matters: the stage alone (without f_{t-1}) gives another loss
        no_flow = tref.mask_loss_ref(tref.htc_mask_logits_ref(x, [dict(params[stage], res=None)], 0),
                                     labels, targets, weight)
        assert abs(no_flow - exp) > 1e-2 * exp


def test_mask_loss_without_rois_is_zero():
    feats, _, _, _, _ = _mask_case(50)
    head = build_mask_head(4, 6, 2, NUM_CLASSES)
    for stage in range(3):
        assert run_mask_loss(head, feats, np.zeros((0, 4)), [0, 0], np.zeros(0), np.zeros((0, 28, 28)),
                             stage, 0.5) == 0.0
