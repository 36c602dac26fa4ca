"""Training-target building blocks shared by the RPN and the R-CNN stages, batched over images.

Everything here is tensor arithmetic over all images of a batch at once: no host round trip, no Python
loop over images or boxes (GPUs never wait for the CPU while targets are built).

* :class:`GroundTruth`: the batch's boxes and classes padded to ``[B, G]`` with a validity mask.
* :func:`match_boxes`: best ground truth of each box (IoU, index), boxes only meet their own image's truth.
* :func:`sample_per_image`: at most ``num * pos_fraction`` positives per image and negatives up to ``num``,
  chosen at random (or by position), returned image-major with positives first.
"""
import paddle
import paddle.nn.functional as F

from . import box_utils

__all__ = ["GroundTruth", "match_boxes", "sample_per_image", "pairwise_iou"]


class GroundTruth(object):
    """Padded ground truth of a batch: ``boxes [B,G,4]``, ``classes [B,G]`` int64, ``num [B]`` int64,
    ``valid [B,G]`` bool (``G >= 1``; padding rows are zero boxes with ``valid`` False)."""

    def __init__(self, boxes, classes, num):
        self.boxes = boxes
        self.classes = classes
        self.num = num
        g = boxes.shape[1]
        self.valid = paddle.arange(g, dtype="int64").unsqueeze(0) < num.unsqueeze(1)

    @property
    def batch(self):
        return self.boxes.shape[0]

    @property
    def width(self):
        return self.boxes.shape[1]

    @classmethod
    def from_lists(cls, boxes, classes):
        """From per-image tensors ``boxes[i] [G_i,4]`` and ``classes[i] [G_i]`` / ``[G_i,1]``.

        Shapes of the listed tensors are known on the host, so padding needs no device round trip.
        """
        batch = len(boxes)
        counts = [int(b.reshape([-1, 4]).shape[0]) for b in boxes]
        width = max(max(counts) if counts else 0, 1)
        padded_boxes, padded_classes = [], []
        for b, c, n in zip(boxes, classes, counts):
            b = b.reshape([-1, 4]).astype("float32")
            c = c.reshape([-1]).astype("int64")
            if n < width:
                b = paddle.concat([b, paddle.zeros([width - n, 4], dtype="float32")]) if n else \
                    paddle.zeros([width, 4], dtype="float32")
                c = paddle.concat([c, paddle.zeros([width - n], dtype="int64")]) if n else \
                    paddle.zeros([width], dtype="int64")
            padded_boxes.append(b)
            padded_classes.append(c)
        num = paddle.to_tensor(counts, dtype="int64") if batch else paddle.zeros([0], dtype="int64")
        return cls(paddle.stack(padded_boxes), paddle.stack(padded_classes), num)

    @classmethod
    def from_inputs(cls, inputs):
        """From a collated training batch (``gt_bbox`` / ``gt_class`` lists, one entry per image; the
        classes may be missing when only boxes matter, as for the RPN)."""
        boxes = inputs["gt_bbox"]
        classes = inputs.get("gt_class")
        if classes is None:
            classes = [paddle.zeros([b.reshape([-1, 4]).shape[0]], dtype="int64") for b in boxes]
        return cls.from_lists(boxes, classes)

    def offsets(self):
        """``[B]`` int64 index of each image's first ground truth in the flattened (unpadded) list."""
        return paddle.cumsum(self.num) - self.num


def pairwise_iou(boxes, truth):
    """IoU of ``boxes [N,4]`` with ``truth [N,G,4]`` (each box against its own row of truths) -> ``[N,G]``.

    No ``+1``; 0 where the boxes do not overlap.
    """
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_t = (truth[:, :, 2] - truth[:, :, 0]) * (truth[:, :, 3] - truth[:, :, 1])
    lt = paddle.maximum(boxes[:, None, :2], truth[:, :, :2])
    rb = paddle.minimum(boxes[:, None, 2:], truth[:, :, 2:])
    wh = paddle.clip(rb - lt, min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    union = area_b[:, None] + area_t - inter
    return paddle.where(inter > 0, inter / paddle.clip(union, min=1e-10), paddle.zeros_like(inter))


def match_boxes(boxes, image, gt):
    """Best ground truth of every box among its own image's: ``(max_iou [N], gt_index [N] int64)``.

    Padding truths count as IoU 0 (so an image without truth gives IoU 0, index 0).
    """
    truth = paddle.gather(gt.boxes, image)  # [N, G, 4]
    iou = pairwise_iou(boxes, truth)
    iou = paddle.where(box_utils.gather_mask(gt.valid, image), iou, paddle.zeros_like(iou))
    return iou.max(axis=1), iou.argmax(axis=1)


def _rank(values):
    """Rank of every element (0 = smallest); ties get distinct ranks."""
    return paddle.argsort(paddle.argsort(values))


def sample_per_image(is_pos, is_neg, image, batch, num_samples, pos_fraction, use_random=True, priority=None):
    """Rows to train on: per image at most ``int(num_samples * pos_fraction)`` positives, then negatives up
    to ``num_samples`` in all; random subsets (``use_random``) or the lowest ``priority`` first.

    is_pos/is_neg ``[N]`` bool, image ``[N]`` int64 (rows may come in any order). ``priority`` ``[N]``
    (default: the row position) orders rows when ``use_random`` is False, and the output within a group.
    Returns row indices ``[M]`` int64, image-major, each image's positives before its negatives.
    """
    n = is_pos.shape[0]
    if n == 0:
        return paddle.zeros([0], dtype="int64")
    image = image.astype("int64")
    group = paddle.where(is_pos, paddle.zeros_like(image),
                         paddle.where(is_neg, paddle.ones_like(image), paddle.full_like(image, 2)))
    onehot = F.one_hot(image, batch).astype("int64")  # [N, B]
    pos_count = (onehot * is_pos.astype("int64").unsqueeze(1)).sum(axis=0)
    neg_count = (onehot * is_neg.astype("int64").unsqueeze(1)).sum(axis=0)
    take_pos = paddle.minimum(pos_count, paddle.full_like(pos_count, int(num_samples * pos_fraction)))
    take_neg = paddle.minimum(neg_count, int(num_samples) - take_pos)
    quota = paddle.stack([take_pos, take_neg, paddle.zeros_like(take_pos)], axis=1).reshape([-1])  # [B*3]
    if use_random:
        order_key = _rank(paddle.rand([n]))
    else:
        order_key = _rank(priority if priority is not None else paddle.arange(n, dtype="int64"))
    block = image * 3 + group
    order = paddle.argsort(block * n + order_key)  # unique keys: (image, group) blocks, each by order_key
    sorted_block = paddle.gather(block, order)
    count = box_utils.count_per_image(sorted_block, batch * 3).astype("int64")
    start = paddle.cumsum(count) - count
    rank = paddle.arange(n, dtype="int64") - paddle.gather(start, sorted_block)
    keep = paddle.nonzero(rank < paddle.gather(quota, sorted_block)).reshape([-1])
    return paddle.gather(order, keep)
