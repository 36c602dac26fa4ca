"""HTC's RoI head: the cascade of box stages, each followed by its mask stage (interleaved execution).

Test time (Chen et al. 2019, Eq. 4 without the training-only parts), for t = 0..T-1::

    x_t = RoIAlign(P, r_t) + pool(RoIAlign(S, r_t));  (c_t, d_t) = B_t(x_t);  r_{t+1} = clip(decode_t(d_t, r_t))

Scores are ``score_fusion(c_0..c_{T-1})`` (softmax of the mean logits), boxes the last stage's deltas
decoded on its input RoIs (by the post-processor). Everything convention-specific is injected: the box
coder of each stage (PaddleDetection's weights or mmdetection's stds), the RoI-to-level mapping inside
the RoI extractors, the score fusion, the sampler and the mask branch.
"""
from typing import List, Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, Normal

from ...core import register
from ...utils.timing import phase
from .. import box_utils
from ..box_coder import DeltaBBoxCoder
from ..losses import L1Loss, build_loss, softmax_cross_entropy
from ..sampling import GroundTruth
from ..shape_spec import ShapeSpec
from .roi_assigner import MaskTargetSource
from .roi_extractor import build_roi_feature_extractor
from .stage_fusion import MeanLogitsFusion, build_fusion
from ...errors import ConfigError

__all__ = ["HybridTaskCascadeHead"]

DEFAULT_STAGE_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


def _linear(in_dim, out_dim, std):
    return nn.Linear(in_dim, out_dim, weight_attr=ParamAttr(initializer=Normal(mean=0.0, std=std)),
                     bias_attr=ParamAttr(initializer=Constant(0.0)))


def _build_coders(box_coders, bbox_weight, num_stages):
    if box_coders is None:
        return [DeltaBBoxCoder(w) for w in bbox_weight]
    from ...core.config import build_component

    coders = [build_component(c, where="HybridTaskCascadeHead.box_coders[{}]".format(t))
              for t, c in enumerate(box_coders)]
    if len(coders) != num_stages:
        raise ConfigError("HybridTaskCascadeHead.box_coders: {} coders for {} stages".format(len(coders), num_stages))
    return coders


@register
class HybridTaskCascadeHead(nn.Layer):
    """HTC RoI head with per-stage class logits (``num_classes+1``, last = background), class-agnostic
    deltas, and the interleaved mask branch (``mask_head``).

    Parameter layout (PaddleDetection's official checkpoint): ``head.{t}`` (the stage's FC layers),
    ``bbox_score_stage{t}``, ``bbox_delta_stage{t}``, ``mask_head.head.{t}``.

    The number of stages is the length of the sampler's ``cascade_iou`` (when built from a config), and
    must agree with ``bbox_weight``/``box_coders`` and ``stage_loss_weights``. ``box_coders`` (a list of
    coders, one per stage) replaces ``bbox_weight`` (PaddleDetection's per-stage divisors).
    ``bbox_loss``: the regression loss (default ``L1Loss``, PaddleDetection; mmdetection trains with
    ``SmoothL1Loss`` with beta 1).
    """

    __shared__ = ["num_classes", "num_cascade_stages"]
    __inject__ = ["head", "bbox_assigner", "bbox_loss", "mask_head", "score_fusion"]
    __nested__ = {"roi_extractor": "RoIAlign", "semantic_roi_extractor": "RoIAlign"}

    def __init__(
        self,
        head: object = "HybridTaskCascadeTwoFCHead",
        in_channel: int = 1024,
        roi_extractor: Optional[dict] = None,
        semantic_roi_extractor: Optional[dict] = None,
        bbox_assigner: object = "BBoxAssigner",
        num_classes: int = 80,
        bbox_weight: List[List[float]] = DEFAULT_STAGE_WEIGHTS,
        num_cascade_stages: int = 3,
        bbox_loss: object = None,
        stage_loss_weights: List[float] = (1.0, 0.5, 0.25),
        mask_head: object = "HybridTaskMaskHead",
        feat_strides: Optional[list] = None,
        box_coders: Optional[list] = None,
        score_fusion: object = None,
        roi_channels: int = 256,
        semantic_stride: Optional[int] = None,
    ):
        super().__init__()
        if isinstance(head, str) or isinstance(mask_head, str):
            raise TypeError("HybridTaskCascadeHead needs built modules; build it with ppdet_htc.core.create")
        num_stages = int(num_cascade_stages)
        if box_coders is None and len(bbox_weight) != num_stages:
            raise ConfigError("HybridTaskCascadeHead.bbox_weight has {} entries for {} stages".format(
                len(bbox_weight), num_stages))
        if len(stage_loss_weights) != num_stages:
            raise ConfigError("HybridTaskCascadeHead.stage_loss_weights has {} entries for {} stages".format(
                len(stage_loss_weights), num_stages))
        iou = getattr(bbox_assigner, "cascade_iou", None)
        if iou is not None and len(iou) != num_stages:
            raise ConfigError("BBoxAssigner.cascade_iou has {} thresholds but the cascade has {} stages".format(
                len(iou), num_stages))
        self.roi_extractor = build_roi_feature_extractor(
            roi_extractor, None if semantic_stride is None else semantic_roi_extractor,
            feat_strides or [4, 8, 16, 32], semantic_stride, roi_channels)
        self.head = head
        self.mask_head = mask_head
        self.bbox_assigner = bbox_assigner
        self.num_classes = num_classes
        self.num_cascade_stages = num_stages
        self.box_coders = _build_coders(box_coders, bbox_weight, num_stages)
        self.score_fusion = build_fusion(score_fusion, MeanLogitsFusion)
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]
        self.reg_loss = build_loss(bbox_loss, L1Loss)
        fc_out = head.out_shape[0].channels if hasattr(head, "out_shape") else in_channel
        self.bbox_score_list = []
        self.bbox_delta_list = []
        for t in range(num_stages):
            self.bbox_score_list.append(
                self.add_sublayer("bbox_score_stage{}".format(t), _linear(fc_out, num_classes + 1, 0.01)))
            self.bbox_delta_list.append(
                self.add_sublayer("bbox_delta_stage{}".format(t), _linear(fc_out, 4, 0.001)))

    @classmethod
    def from_config(cls, cfg, input_shape=None, semantic_shape=None, **kwargs):
        if input_shape is None:
            return {}
        from ...core.config import create

        assigner = create(cfg.get("bbox_assigner", "BBoxAssigner"), where="HybridTaskCascadeHead.bbox_assigner")
        iou = getattr(assigner, "cascade_iou", None)
        num_stages = len(iou) if iou else int(cfg.get("num_cascade_stages", 3))
        channels = input_shape[0].channels
        res = int((cfg.get("roi_extractor") or {}).get("resolution", 7))
        roi_shape = ShapeSpec(channels=channels, height=res, width=res)
        head = create(cfg.get("head", "HybridTaskCascadeTwoFCHead"), input_shape=roi_shape, num_stages=num_stages)
        mask_head = create(cfg.get("mask_head", "HybridTaskMaskHead"), input_shape=input_shape,
                           num_stages=num_stages, semantic_shape=semantic_shape)
        return {
            "head": head,
            "mask_head": mask_head,
            "bbox_assigner": assigner,
            "num_cascade_stages": num_stages,
            "in_channel": head.out_shape[0].channels,
            "roi_channels": channels,
            "feat_strides": [s.stride for s in input_shape],
            "semantic_stride": semantic_shape.stride if semantic_shape is not None else None,
        }

    # ---------------------------------------------------------------- shared pieces

    @property
    def bbox_weight(self):
        """Per-stage PaddleDetection weights (only for ``DeltaBBoxCoder`` stages)."""
        return [getattr(c, "weights", None) for c in self.box_coders]

    def stage_forward(self, t, feats, rois, rois_num, semantic_feat=None):
        """Class logits ``[R,C+1]`` and deltas ``[R,4]`` of stage ``t`` for ``rois [R,4]``."""
        x = self.head(self.roi_extractor(feats, rois, rois_num, semantic_feat), t)
        return self.bbox_score_list[t](x), self.bbox_delta_list[t](x)

    def refine(self, t, deltas, rois, rois_num, im_shape):
        """Decode stage-t deltas on its RoIs with stage t's coder; clip each box to its own image."""
        return self.box_coders[t].decode_and_clip(deltas, rois, rois_num, im_shape)

    # ---------------------------------------------------------------- inference

    def predict(self, feats, rois, rois_num, im_shape, semantic_feat=None):
        """Run the cascade on proposals. Returns ``(probs [R,C+1], deltas [R,4], last_rois [R,4])``:
        fused class probabilities, the last stage's deltas and the RoIs they apply to."""
        logits = []
        deltas = None
        for t in range(self.num_cascade_stages):
            with phase("box_stage{}".format(t)):
                if t > 0:
                    rois = self.refine(t - 1, deltas, rois, rois_num, im_shape)
                logit, deltas = self.stage_forward(t, feats, rois, rois_num, semantic_feat)
                logits.append(logit)
        with phase("box_postprocess"):
            probs = self.score_fusion(logits)
        return probs, deltas, rois

    # ---------------------------------------------------------------- training

    def loss(self, feats, rois, rois_num, inputs, semantic_feat=None):
        """Interleaved HTC training (mmdetection's ``interleaved=True`` design), batched, on the device.

        For each stage t: sample RoIs from ``[gt; rois]`` at IoU ``cascade_iou[t]``, box loss; refine the
        sampled RoIs with the stage's deltas and drop the rows that were ground-truth boxes and boxes
        with no area (an image left with nothing keeps its first row); re-sample the refined boxes at the
        same IoU and train mask stage t (through the information flow of stages < t) on their foreground;
        the refined boxes are the next stage's proposals. (PaddleDetection's reference never removes the
        ground-truth rows, its Q2; we follow the HTC design, as SEMANTICS.md's product decision says.)
        """
        gt = GroundTruth.from_inputs(inputs)
        masks = MaskTargetSource.from_inputs(inputs, gt)
        im_shape = inputs["im_shape"]
        losses = {}
        mask_losses = {}
        for t in range(self.num_cascade_stages):
            w = self.stage_loss_weights[t]
            with phase("target_assign"):
                sampled = self.bbox_assigner(rois, rois_num, gt, stage=t)
            logit, deltas = self.stage_forward(t, feats, sampled.rois, sampled.rois_num, semantic_feat)
            cls_loss, reg_loss = self._box_loss(t, logit, deltas, sampled)
            losses["loss_bbox_cls_stage{}".format(t)] = cls_loss * w
            losses["loss_bbox_reg_stage{}".format(t)] = reg_loss * w
            with paddle.no_grad(), phase("target_assign"):
                refined = self.refine(t, deltas.detach(), sampled.rois, sampled.rois_num, im_shape)
                rois, rois_num = drop_gt_and_empty(refined, sampled)
                msampled = self.bbox_assigner(rois, rois_num, gt, stage=t)
            with phase("mask_targets"):
                mrois, mnum, mlabels, mtargets = self.mask_head.mask_assigner(msampled, masks)
            mask_losses["loss_mask_stage{}".format(t)] = self.mask_head.loss(
                feats, mrois, mnum, (mlabels, mtargets), t, w, semantic_feat
            )
        losses.update(mask_losses)
        return losses

    def _box_loss(self, t, logit, deltas, sampled):
        """Softmax CE over the sampled RoIs; regression of the foreground rows divided by all sampled rows."""
        labels = sampled.labels
        if labels.shape[0] == 0:
            zero = (logit * 0).sum() + (deltas * 0).sum()
            return zero, zero
        cls_loss = softmax_cross_entropy(logit, labels).mean()
        is_fg = paddle.logical_and(labels >= 0, labels < self.num_classes).unsqueeze(1)
        fg = is_fg.astype(deltas.dtype)
        # Background rows are encoded onto themselves (their matched box may be zero padding).
        tgt = self.box_coders[t].encode(sampled.rois, paddle.where(is_fg, sampled.gt_boxes, sampled.rois))
        tgt.stop_gradient = True
        reg_loss = (self.reg_loss(deltas - tgt) * fg).sum() / float(labels.shape[0])
        return cls_loss, reg_loss


def drop_gt_and_empty(boxes, sampled):
    """Refined boxes of the sampled RoIs without the ground-truth rows and the boxes with no area.

    An image whose rows are all dropped keeps its first row (so every image still has proposals).
    Returns ``(boxes [R',4], rois_num [B] int32)``, image-major.
    """
    batch = sampled.rois_num.shape[0]
    keep = paddle.logical_and(box_utils.nonempty_mask(boxes), paddle.logical_not(sampled.is_gt))
    image = sampled.image
    kept_per_image = box_utils.count_per_image(paddle.gather(image, paddle.nonzero(keep).reshape([-1])), batch)
    counts = sampled.rois_num.astype("int64")
    first_row = paddle.cumsum(counts) - counts
    position = paddle.arange(boxes.shape[0], dtype="int64")
    rescue = paddle.logical_and(position == paddle.gather(first_row, image),
                                paddle.gather(kept_per_image, image) == 0)
    idx = paddle.nonzero(paddle.logical_or(keep, rescue)).reshape([-1])
    return paddle.gather(boxes, idx), box_utils.count_per_image(paddle.gather(image, idx), batch)
