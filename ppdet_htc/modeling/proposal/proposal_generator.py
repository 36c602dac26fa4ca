"""RPN proposals: per-level decode + NMS (fused kernel), then the best ``post_nms_top_n`` per image."""
import paddle
import paddle.nn.functional as F

from ...core import serializable
from .. import box_utils, ops
from ..box_coder import DeltaXYWHBBoxCoder

__all__ = ["ProposalGenerator", "BatchedNMSProposalGenerator", "collect_top_proposals"]


@serializable
class ProposalGenerator(object):
    """Settings of one proposal pass (train or test), as in PaddleDetection.

    Per image and level: take the ``pre_nms_top_n`` best anchors, decode, clip, drop boxes smaller
    than ``max(min_size, 1)``, NMS at ``nms_thresh`` and keep ``post_nms_top_n`` (``pre_nms_top_n`` when
    ``topk_after_collect``). Then all levels of an image are pooled and the best ``post_nms_top_n`` kept.
    """

    def __init__(
        self,
        pre_nms_top_n: int = 12000,
        post_nms_top_n: int = 2000,
        nms_thresh: float = 0.5,
        min_size: float = 0.1,
        eta: float = 1.0,
        topk_after_collect: bool = False,
    ):
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.eta = eta
        self.topk_after_collect = topk_after_collect

    def __call__(self, scores, deltas, anchors, im_shape):
        """scores/deltas/anchors: lists over levels (see ``ops.generate_proposals``); im_shape ``[B,2]``.

        Returns ``(rois [R,4], rois_num [B] int32)``, image-major, each image's rows by score.
        """
        level_keep = self.pre_nms_top_n if self.topk_after_collect else self.post_nms_top_n
        rois, probs, nums = [], [], []
        for s, d, a in zip(scores, deltas, anchors):
            r, p, n = ops.generate_proposals(
                s, d, im_shape, a, paddle.ones_like(a), self.pre_nms_top_n, level_keep,
                self.nms_thresh, self.min_size, self.eta,
            )
            rois.append(r)
            probs.append(p.reshape([-1]))
            nums.append(n)
        return collect_top_proposals(rois, probs, nums, self.post_nms_top_n)


@serializable
class BatchedNMSProposalGenerator(object):
    """mmdetection's RPN proposals (SEMANTICS_MMDET §5.3): per image and level the ``pre_nms_top_n`` anchors
    with the highest *sigmoid* score, all levels decoded at once (stds 1, log-size clamped both sides,
    clipped to the integer image size), boxes with ``w <= min_size`` or ``h <= min_size`` dropped, one NMS
    over the levels in which levels never suppress each other (mmcv's offset trick), then the best
    ``post_nms_top_n`` per image. Images never suppress each other either (their group ids differ), so
    the whole batch is one NMS call; an image can end with no proposal at all.
    """

    def __init__(self, pre_nms_top_n: int = 1000, post_nms_top_n: int = 1000, nms_thresh: float = 0.7,
                 min_size: float = 0.0):
        self.pre_nms_top_n = int(pre_nms_top_n)
        self.post_nms_top_n = int(post_nms_top_n)
        self.nms_thresh = float(nms_thresh)
        self.min_size = float(min_size)
        self.coder = DeltaXYWHBBoxCoder()

    def __call__(self, scores, deltas, anchors, im_shape):
        """Same contract as :class:`ProposalGenerator` (scores are logits ``[B,A,H,W]`` per level)."""
        batch = scores[0].shape[0]
        cand_scores, cand_deltas, cand_anchors, cand_level = [], [], [], []
        for level, (s, d, a) in enumerate(zip(scores, deltas, anchors)):
            prob = F.sigmoid(s.transpose([0, 2, 3, 1]).reshape([batch, -1]))  # [B, H*W*A], (i*W + j)*A + a
            delta = d.transpose([0, 2, 3, 1]).reshape([batch, -1, 4])
            anchor = a.reshape([-1, 4])
            n = prob.shape[1]
            if 0 < self.pre_nms_top_n < n:
                prob, idx = paddle.topk(prob, self.pre_nms_top_n, axis=1)  # [B, k] by descending score
                delta = paddle.take_along_axis(delta, idx.unsqueeze(2).expand([batch, idx.shape[1], 4]), axis=1)
                anchor = paddle.gather(anchor, idx.reshape([-1])).reshape([batch, -1, 4])
            else:
                anchor = anchor.unsqueeze(0).expand([batch, n, 4])
            cand_scores.append(prob)
            cand_deltas.append(delta)
            cand_anchors.append(anchor)
            cand_level.append(paddle.full(prob.shape, level, dtype="int64"))
        prob = paddle.concat(cand_scores, axis=1)  # [B, N] level after level
        k = prob.shape[1]
        image = paddle.arange(batch, dtype="int64").unsqueeze(1).expand([batch, k]).reshape([-1])
        level = paddle.concat(cand_level, axis=1).reshape([-1])
        counts = paddle.full([batch], k, dtype="int32")
        boxes = self.coder.decode_and_clip(paddle.concat(cand_deltas, axis=1).reshape([-1, 4]),
                                           paddle.concat(cand_anchors, axis=1).reshape([-1, 4]), counts, im_shape)
        prob = prob.reshape([-1])
        valid = paddle.nonzero(box_utils.nonempty_mask(boxes, self.min_size)).reshape([-1])
        boxes, prob, image, level = (paddle.gather(t, valid) for t in (boxes, prob, image, level))
        num_levels = len(scores)
        keep = ops.batched_nms(boxes, prob, image * num_levels + level, self.nms_thresh)
        keep = box_utils.top_k_per_image(keep, paddle.gather(image, keep), batch, self.post_nms_top_n)
        return paddle.gather(boxes, keep), box_utils.count_per_image(paddle.gather(image, keep), batch)


def collect_top_proposals(rois, scores, nums, top_n):
    """Pool per-level proposals of each image and keep the ``top_n`` highest scores per image.

    rois/scores/nums: lists over levels of ``[N_l,4]``, ``[N_l]``, ``[B]`` (image-major rows).
    Vectorised over images: each image's candidates fill one row of a padded ``[B, N]`` score
    matrix (``N`` = all candidates of the batch, a shape known without a device sync), then ``topk``.
    Returns ``(rois [R,4], rois_num [B] int32)`` with each image's rows in descending score.
    """
    if not paddle.in_dynamic_mode():
        return _collect_top_proposals_static(rois, scores, nums, top_n)
    batch = nums[0].shape[0]
    width = sum(int(r.shape[0]) for r in rois)
    if width == 0:
        return paddle.zeros([0, 4], dtype="float32"), paddle.zeros([batch], dtype="int32")
    all_rois = paddle.concat([r for r in rois if r.shape[0] > 0])
    all_scores = paddle.concat([s for s in scores if s.shape[0] > 0]).astype("float32")
    counts = paddle.stack([n.astype("int64") for n in nums], axis=1)  # [B, L]
    level_start = paddle.cumsum(counts, axis=1) - counts  # column where level l starts, per image
    per_image = counts.sum(axis=1)
    flat = []
    for lvl, n in enumerate(nums):
        if rois[lvl].shape[0] == 0:
            continue
        n = n.astype("int64")
        img = paddle.repeat_interleave(paddle.arange(batch, dtype="int64"), n)
        rank = paddle.arange(img.shape[0], dtype="int64") - paddle.gather(paddle.cumsum(n) - n, img)
        flat.append(img * width + paddle.gather(level_start[:, lvl], img) + rank)
    flat = paddle.concat(flat)
    padded = paddle.full([batch * width], float("-inf"), dtype="float32")
    padded = paddle.scatter(padded, flat, all_scores, overwrite=True).reshape([batch, width])
    row_of = paddle.zeros([batch * width], dtype="int64")
    row_of = paddle.scatter(row_of, flat, paddle.arange(width, dtype="int64"), overwrite=True)
    k = min(int(top_n), width)
    _, top_idx = paddle.topk(padded, k, axis=1)
    keep_num = paddle.minimum(per_image, paddle.full_like(per_image, k))
    valid = paddle.arange(k, dtype="int64")[None, :] < keep_num[:, None]
    src = paddle.take_along_axis(row_of.reshape([batch, width]), top_idx, axis=1)
    src = paddle.masked_select(src, valid)
    return paddle.gather(all_rois, src), keep_num.astype("int32")


def _collect_top_proposals_static(rois, scores, nums, top_n):
    """``collect_top_proposals`` in an exported program, which takes one image per run.

    The per-image counts that ``generate_proposals`` returns are not usable in PIR programs (their
    declared and actual dtypes differ), and with one image they are just the row counts.
    """
    all_rois = paddle.concat(rois)
    all_scores = paddle.concat(scores).astype("float32")
    width = paddle.shape(all_scores)[0]
    k = paddle.minimum(width, paddle.full([], int(top_n), dtype=width.dtype))
    _, top_idx = paddle.topk(all_scores, k)
    return paddle.gather(all_rois, top_idx), k.reshape([1]).astype("int32")
