"""RPN training targets: label anchors by IoU with ground truth and sample 256 per image."""
import paddle

from ...core import register
from ..box_utils import bbox2delta
from ..sampling import GroundTruth, sample_per_image
from ...errors import ConfigError

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
    """Anchor labels (1 fg, 0 bg, -1 ignored) and regression targets for the RPN loss, all images at once.

    IoU >= ``positive_overlap`` is fg, IoU < ``negative_overlap`` is bg; the best anchors of every ground
    truth are fg too (low-quality matches: with ``min_pos_iou <= 0`` any IoU > 0, PaddleDetection; else
    IoU >= ``min_pos_iou``, mmdetection's 0.3). ``reassign_low_quality`` (mmdetection) also points such an
    anchor's target at that ground truth (the last one in order wins), instead of its best overall match.
    ``allowed_border >= 0`` (mmdetection: 0) ignores anchors not inside the image by that margin; the
    default -1 keeps all (PaddleDetection's behaviour: its ``check_inside_image`` has no effect).
    ``batch_size_per_im`` anchors are sampled per image with ``fg_fraction`` positives at most. Losses are
    divided by ``batch_size_per_im * B`` (``normalize_by: 'batch_size_per_im'``, PaddleDetection) or by the
    number of sampled anchors (``'num_sampled'``, mmdetection).
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
        min_pos_iou: float = 0.0,
        reassign_low_quality: bool = False,
        allowed_border: float = -1.0,
        normalize_by: str = "batch_size_per_im",
    ):
        if normalize_by not in ("batch_size_per_im", "num_sampled"):
            raise ConfigError("RPNTargetAssign.normalize_by must be 'batch_size_per_im' or 'num_sampled', got "
                             "{!r}".format(normalize_by))
        self.batch_size_per_im = batch_size_per_im
        self.fg_fraction = fg_fraction
        self.positive_overlap = positive_overlap
        self.negative_overlap = negative_overlap
        self.ignore_thresh = ignore_thresh
        self.use_random = use_random
        self.assign_on_cpu = assign_on_cpu
        self.min_pos_iou = float(min_pos_iou)
        self.reassign_low_quality = bool(reassign_low_quality)
        self.allowed_border = float(allowed_border)
        self.normalize_by = normalize_by

    def __call__(self, anchors, gt, im_shape=None):
        """anchors ``[N,4]`` (shared by the images); gt: :class:`GroundTruth` (or a list of ``[G_i,4]``);
        im_shape ``[B,2]`` (needed with ``allowed_border >= 0``).

        Returns ``(labels [B*N] int32, targets [B*N,4], norm)``, image-major; ``norm`` divides the losses.
        """
        if not isinstance(gt, GroundTruth):
            gt = GroundTruth.from_lists(gt, [paddle.zeros([b.reshape([-1, 4]).shape[0]], dtype="int64") for b in gt])
        batch, width, n = gt.batch, gt.width, anchors.shape[0]
        iou = _anchor_iou(anchors, gt.boxes)  # [B, N, G]
        iou = paddle.where(gt.valid.unsqueeze(1), iou, paddle.full_like(iou, -1.0))
        best = iou.max(axis=2)  # [B, N]; -1 for an image without ground truth
        match = iou.argmax(axis=2)
        pos = best >= self.positive_overlap
        neg = best < self.negative_overlap
        best_per_gt = iou.max(axis=1, keepdim=True)  # [B, 1, G]
        quality = best_per_gt > 0 if self.min_pos_iou <= 0 else best_per_gt >= self.min_pos_iou
        low = paddle.logical_and(iou == best_per_gt, paddle.logical_and(quality, gt.valid.unsqueeze(1)))
        has_low = low.any(axis=2)
        pos = paddle.logical_or(pos, has_low)
        if self.reassign_low_quality:
            last = (low.astype("int64") * (paddle.arange(width, dtype="int64") + 1)).argmax(axis=2)
            match = paddle.where(has_low, last, match)
        neg = paddle.logical_and(neg, paddle.logical_not(pos))
        if self.allowed_border >= 0:
            inside = _inside(anchors, im_shape, self.allowed_border)  # [B, N]
            pos = paddle.logical_and(pos, inside)
            neg = paddle.logical_and(neg, inside)
        image = paddle.arange(batch, dtype="int64").unsqueeze(1).expand([batch, n]).reshape([-1])
        keep = sample_per_image(pos.reshape([-1]), neg.reshape([-1]), image, batch, self.batch_size_per_im,
                                self.fg_fraction, self.use_random)
        is_pos = pos.reshape([-1])
        chosen = paddle.zeros([batch * n], dtype="int32")
        chosen = paddle.scatter(chosen, keep, paddle.ones_like(keep).astype("int32"))
        labels = paddle.where(chosen > 0, is_pos.astype("int32"), paddle.full_like(chosen, -1))
        flat_anchors = anchors.unsqueeze(0).expand([batch, n, 4]).reshape([-1, 4])
        matched = paddle.gather(gt.boxes.reshape([-1, 4]), image * width + match.reshape([-1]))
        has_gt = paddle.gather(gt.num, image) > 0  # (then the match is a real box, not padding)
        matched = paddle.where(has_gt.unsqueeze(1), matched, flat_anchors)  # no truth: zero targets
        targets = bbox2delta(flat_anchors, matched, [1.0, 1.0, 1.0, 1.0])
        labels.stop_gradient = True
        targets.stop_gradient = True
        if self.normalize_by == "num_sampled":
            norm = paddle.clip((labels >= 0).astype("float32").sum(), min=1.0)
        else:
            norm = float(self.batch_size_per_im * batch)
        return labels, targets, norm


def _anchor_iou(anchors, truth):
    """IoU ``[B,N,G]`` of anchors ``[N,4]`` with each image's truths ``[B,G,4]`` (one plane per coordinate)."""
    ax1, ay1, ax2, ay2 = [anchors[:, i].reshape([1, -1, 1]) for i in range(4)]
    gx1, gy1, gx2, gy2 = [truth[:, :, i].unsqueeze(1) for i in range(4)]
    iw = paddle.clip(paddle.minimum(ax2, gx2) - paddle.maximum(ax1, gx1), min=0)
    ih = paddle.clip(paddle.minimum(ay2, gy2) - paddle.maximum(ay1, gy1), min=0)
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (gx2 - gx1) * (gy2 - gy1) - inter
    return paddle.where(inter > 0, inter / paddle.clip(union, min=1e-10), paddle.zeros_like(inter))


def _inside(anchors, im_shape, border):
    """``[B,N]``: anchor inside image b's ``[0, w) x [0, h)`` extended by ``border`` (mmdetection's test)."""
    h = im_shape[:, 0:1].astype("float32")
    w = im_shape[:, 1:2].astype("float32")
    return ((anchors[:, 0].unsqueeze(0) >= -border) & (anchors[:, 1].unsqueeze(0) >= -border)
            & (anchors[:, 2].unsqueeze(0) < w + border) & (anchors[:, 3].unsqueeze(0) < h + border))
