"""RPN training targets: label anchors by IoU with ground truth and sample 256 per image."""
import paddle

from ...core import register
from ..box_utils import bbox2delta, bbox_overlaps

__all__ = ["RPNTargetAssign", "label_anchors", "sample_labels"]


def label_anchors(iou, positive_overlap, negative_overlap, allow_low_quality=True):
    """Match every column (anchor / RoI) of ``iou [G,N]`` to its best row (ground truth).

    Returns ``(matches [N] int64, labels [N] int32)`` with label 1 if the best IoU is
    ``>= positive_overlap``, 0 if it is in ``(-1, negative_overlap)``, -1 otherwise. With
    ``allow_low_quality`` every anchor that ties a ground truth's best (positive) IoU is also 1.
    """
    matched_vals = iou.max(axis=0)
    matches = iou.argmax(axis=0)
    labels = paddle.full(matched_vals.shape, -1, dtype="int32")
    neg = paddle.logical_and(matched_vals > -1, matched_vals < negative_overlap)
    labels = paddle.where(neg, paddle.zeros_like(labels), labels)
    labels = paddle.where(matched_vals >= positive_overlap, paddle.ones_like(labels), labels)
    if allow_low_quality:
        best_per_gt = iou.max(axis=1, keepdim=True)
        is_best = paddle.logical_and(iou > 0, iou == best_per_gt).astype("int32").sum(axis=0)
        labels = paddle.where(is_best > 0, paddle.ones_like(labels), labels)
    return matches, labels


def sample_labels(labels, num_samples, fg_fraction, bg_label, use_random=True):
    """Pick at most ``num_samples*fg_fraction`` positives and fill up with negatives.

    Positives are labels other than -1 and ``bg_label``; negatives equal ``bg_label``.
    Returns ``(fg_inds, bg_inds)`` int64 (random subsets via ``paddle.randperm``).
    """
    positive = paddle.nonzero(paddle.logical_and(labels != -1, labels != bg_label)).reshape([-1])
    negative = paddle.nonzero(labels == bg_label).reshape([-1])
    fg_num = min(int(positive.shape[0]), int(num_samples * fg_fraction))
    bg_num = min(int(negative.shape[0]), num_samples - fg_num)

    def pick(idx, n):
        if n == 0:
            return paddle.zeros([0], dtype="int64")
        if use_random:
            perm = paddle.randperm(idx.shape[0], dtype="int64")[:n]
            return paddle.gather(idx, perm)
        return idx[:n]

    return pick(positive, fg_num), pick(negative, bg_num)


@register
class RPNTargetAssign(object):
    """Anchor labels (1 fg, 0 bg, -1 ignored) and regression targets for the RPN loss.

    IoU >= ``positive_overlap`` (or the best anchor of a ground truth) is fg, IoU < ``negative_overlap``
    is bg; ``batch_size_per_im`` anchors are sampled per image with ``fg_fraction`` positives at most.
    As in the reference, anchors crossing the image border are not excluded.
    """

    def __init__(
        self,
        batch_size_per_im: int = 256,
        fg_fraction: float = 0.5,
        positive_overlap: float = 0.7,
        negative_overlap: float = 0.3,
        ignore_thresh: float = -1.0,
        use_random: bool = True,
        assign_on_cpu: bool = False,
    ):
        self.batch_size_per_im = batch_size_per_im
        self.fg_fraction = fg_fraction
        self.positive_overlap = positive_overlap
        self.negative_overlap = negative_overlap
        self.ignore_thresh = ignore_thresh
        self.use_random = use_random
        self.assign_on_cpu = assign_on_cpu

    def __call__(self, anchors, gt_boxes):
        """anchors ``[N,4]``; gt_boxes: list over images of ``[G_i,4]``.

        Returns ``(labels [B*N] int32, targets [B*N,4], norm)`` with ``norm = batch_size_per_im * B``.
        """
        all_labels, all_targets = [], []
        n = anchors.shape[0]
        for gt in gt_boxes:
            gt = gt.reshape([-1, 4]).astype("float32")
            if gt.shape[0] == 0:
                labels = paddle.zeros([n], dtype="int32")
                matched = paddle.zeros([n, 4], dtype="float32")
            else:
                iou = bbox_overlaps(gt, anchors)
                matches, labels = label_anchors(iou, self.positive_overlap, self.negative_overlap)
                matched = paddle.gather(gt, matches)
            fg, bg = sample_labels(labels, self.batch_size_per_im, self.fg_fraction, 0, self.use_random)
            out = paddle.full([n], -1, dtype="int32")
            if bg.shape[0]:
                out = paddle.scatter(out, bg, paddle.zeros([bg.shape[0]], dtype="int32"))
            if fg.shape[0]:
                out = paddle.scatter(out, fg, paddle.ones([fg.shape[0]], dtype="int32"))
            if gt.shape[0] == 0:
                targets = paddle.zeros([n, 4], dtype="float32")
            else:
                targets = bbox2delta(anchors, matched, [1.0, 1.0, 1.0, 1.0])
            all_labels.append(out)
            all_targets.append(targets)
        labels = paddle.concat(all_labels)
        targets = paddle.concat(all_targets)
        labels.stop_gradient = True
        targets.stop_gradient = True
        return labels, targets, float(self.batch_size_per_im * len(gt_boxes))
