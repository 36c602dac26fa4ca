"""HTC's cascade: three box stages, each followed by its mask stage (interleaved execution).

Test time (Chen et al. 2019, Eq. 4 without the training-only parts):
``x_t = RoIAlign(P, r_{t-1}) + pool(RoIAlign(S, r_{t-1}))``, ``(c_t, d_t) = B_t(x_t)``,
``r_t = clip(decode(d_t, r_{t-1}, w_t))``. Scores are ``softmax(mean_t c_t)`` (the *logits* are
averaged), boxes are decoded from the last stage's deltas on its input RoIs ``r_1``.
"""
from typing import List, Optional

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, Normal, XavierUniform

from ...core import register
from .. import box_utils
from ...utils.timing import phase
from ..layers import inference, relu
from ..shape_spec import ShapeSpec, in_channel_from
from .roi_extractor import RoIAlign

__all__ = ["HybridTaskCascadeTwoFCHead", "HybridTaskCascadeHead"]


class TwoFCHead(nn.Layer):
    """fc6 + ReLU, fc7 + ReLU on the flattened ``[R, C*P*P]`` RoI feature."""

    def __init__(self, in_dim, out_channel):
        super().__init__()
        self.fc6 = nn.Linear(
            in_dim, out_channel,
            weight_attr=ParamAttr(initializer=XavierUniform(fan_out=in_dim)),
            bias_attr=ParamAttr(initializer=Constant(0.0)),
        )
        self.fc7 = nn.Linear(
            out_channel, out_channel,
            weight_attr=ParamAttr(initializer=XavierUniform()),
            bias_attr=ParamAttr(initializer=Constant(0.0)),
        )

    def forward(self, x):
        x = paddle.flatten(x, start_axis=1)
        fast = inference(self)
        return relu(self.fc7(relu(self.fc6(x), fast)), fast)


def _average_pool_to(x, size):
    """``adaptive_avg_pool2d(x, size)``; for an exact integer factor (14 -> 7) the same bins through the
    faster fixed-window ``avg_pool2d``."""
    h, w = x.shape[2], x.shape[3]
    if h % size[0] == 0 and w % size[1] == 0:
        k = [h // size[0], w // size[1]]
        return F.avg_pool2d(x, kernel_size=k, stride=k)
    return F.adaptive_avg_pool2d(x, size)


@register
class HybridTaskCascadeTwoFCHead(nn.Layer):
    """One two-FC box head per cascade stage (``head.{t}.fc6`` / ``head.{t}.fc7``)."""

    __shared__ = ["num_cascade_stage"]

    def __init__(self, in_channel: int = 256, out_channel: int = 1024, resolution: int = 7,
                 num_cascade_stage: int = 3):
        super().__init__()
        self.out_channel = out_channel
        self.stages = [
            self.add_sublayer(str(t), TwoFCHead(in_channel * resolution * resolution, out_channel))
            for t in range(num_cascade_stage)
        ]

    @classmethod
    def from_config(cls, cfg, input_shape=None, **kwargs):
        return in_channel_from(input_shape)

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.out_channel)]

    def forward(self, rois_feat, stage=0):
        return self.stages[stage](rois_feat)


@register
class HybridTaskCascadeHead(nn.Layer):
    """Box cascade with per-stage class logits (``num_classes+1``, last = background) and
    class-agnostic deltas; owns the mask branch (``mask_head``), which runs interleaved in training.
    """

    __shared__ = ["num_classes", "num_cascade_stages"]
    __inject__ = ["head", "bbox_assigner", "bbox_loss", "mask_head"]
    __nested__ = {"roi_extractor": "RoIAlign", "semantic_roi_extractor": "RoIAlign"}

    def __init__(
        self,
        head: object = "HybridTaskCascadeTwoFCHead",
        in_channel: int = 1024,
        roi_extractor: Optional[dict] = None,
        semantic_roi_extractor: Optional[dict] = None,
        bbox_assigner: object = "BBoxAssigner",
        num_classes: int = 80,
        bbox_weight: List[List[float]] = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)),
        num_cascade_stages: int = 3,
        bbox_loss: object = None,
        stage_loss_weights: List[float] = (1.0, 0.5, 0.25),
        mask_head: object = "HybridTaskMaskHead",
        feat_strides: Optional[list] = None,
    ):
        super().__init__()
        if isinstance(head, str) or isinstance(mask_head, str):
            raise TypeError("HybridTaskCascadeHead needs built modules; build it with ppdet_htc.core.create")
        if len(bbox_weight) != num_cascade_stages or len(stage_loss_weights) != num_cascade_stages:
            raise ValueError(
                "HybridTaskCascadeHead: bbox_weight ({}) and stage_loss_weights ({}) need one entry per stage "
                "(num_cascade_stages={})".format(len(bbox_weight), len(stage_loss_weights), num_cascade_stages)
            )
        if bbox_loss is not None:
            raise ValueError("HybridTaskCascadeHead.bbox_loss: only the default L1 loss (null) is supported")
        strides = feat_strides or [4, 8, 16, 32, 64]
        roi = dict(roi_extractor or {})
        roi["spatial_scale"] = [1.0 / s for s in strides]
        self.roi_extractor = RoIAlign(**roi)
        sem = dict(semantic_roi_extractor or {})
        sem["spatial_scale"] = [0.125]  # the semantic head passes its own scale (1/8) at run time
        sem["start_level"] = 0
        self.semantic_roi_extractor = RoIAlign(**sem)
        self.head = head
        self.mask_head = mask_head
        self.bbox_assigner = bbox_assigner
        self.num_classes = num_classes
        self.num_cascade_stages = num_cascade_stages
        self.bbox_weight = [list(w) for w in bbox_weight]
        self.stage_loss_weights = list(stage_loss_weights)
        fc_out = head.out_shape[0].channels if hasattr(head, "out_shape") else in_channel
        self.bbox_score_list = []
        self.bbox_delta_list = []
        for t in range(num_cascade_stages):
            self.bbox_score_list.append(
                self.add_sublayer(
                    "bbox_score_stage{}".format(t),
                    nn.Linear(fc_out, num_classes + 1,
                              weight_attr=ParamAttr(initializer=Normal(mean=0.0, std=0.01)),
                              bias_attr=ParamAttr(initializer=Constant(0.0))),
                )
            )
            self.bbox_delta_list.append(
                self.add_sublayer(
                    "bbox_delta_stage{}".format(t),
                    nn.Linear(fc_out, 4,
                              weight_attr=ParamAttr(initializer=Normal(mean=0.0, std=0.001)),
                              bias_attr=ParamAttr(initializer=Constant(0.0))),
                )
            )

    @classmethod
    def from_config(cls, cfg, input_shape=None, **kwargs):
        if input_shape is None:
            return {}
        from ...core.config import create

        shape = ShapeSpec(channels=input_shape[0].channels)
        head = create(cfg.get("head", "HybridTaskCascadeTwoFCHead"), input_shape=shape)
        mask_head = create(cfg.get("mask_head", "HybridTaskMaskHead"), input_shape=input_shape)
        return {
            "head": head,
            "mask_head": mask_head,
            "in_channel": head.out_shape[0].channels,
            "feat_strides": [s.stride for s in input_shape],
        }

    # ---------------------------------------------------------------- shared pieces

    def box_features(self, feats, rois, rois_num, semantic=None):
        """7x7 RoIAlign on P2..P5 plus, with the semantic head, its 14x14 RoIAlign average-pooled to 7x7."""
        x = self.roi_extractor(feats[:4], rois, rois_num)
        if semantic is not None:
            sem_feat, sem_scale = semantic
            s = self.semantic_roi_extractor([sem_feat], rois, rois_num, spatial_scale=sem_scale)
            if s.shape[2:] != x.shape[2:]:
                s = _average_pool_to(s, x.shape[2:])
            x = x + s
        return x

    def stage_forward(self, t, feats, rois, rois_num, semantic=None):
        x = self.head(self.box_features(feats, rois, rois_num, semantic), t)
        return self.bbox_score_list[t](x), self.bbox_delta_list[t](x)

    def refine(self, t, deltas, rois, rois_num, im_shape):
        """Decode stage-t deltas on its RoIs and clip each box to its own image (float im_shape)."""
        boxes = box_utils.delta2bbox(deltas, rois, self.bbox_weight[t])
        hw = paddle.gather(im_shape, box_utils.roi_image_index(rois_num))
        return box_utils.clip_boxes(boxes, hw)

    # ---------------------------------------------------------------- inference

    def predict(self, feats, rois, rois_num, im_shape, semantic=None):
        """Run the cascade on proposals. Returns ``(probs [R,C+1], deltas [R,4], last_rois [R,4])``."""
        logits = []
        deltas = None
        for t in range(self.num_cascade_stages):
            with phase("box_stage{}".format(t)):
                if t > 0:
                    rois = self.refine(t - 1, deltas, rois, rois_num, im_shape)
                logit, deltas = self.stage_forward(t, feats, rois, rois_num, semantic)
                logits.append(logit)
        with phase("box_postprocess"):
            probs = F.softmax(paddle.add_n(logits) / float(len(logits)), axis=-1)
        return probs, deltas, rois

    # ---------------------------------------------------------------- training

    def loss(self, feats, rois, rois_num, inputs, semantic=None):
        """Interleaved HTC training (mmdetection's ``interleaved=True`` design).

        For each stage t: sample RoIs from ``[gt; rois]`` at IoU ``cascade_iou[t]``, box loss; refine the
        sampled RoIs with the stage's deltas, drop the rows that were ground-truth boxes and boxes with
        no area (if nothing remains, row 0 is kept); re-sample the refined boxes at the same IoU and
        train mask stage t (through the information flow of stages < t) on their foreground; the
        refined boxes are the next stage's proposals.
        """
        gt_boxes = inputs["gt_bbox"]
        gt_classes = inputs["gt_class"]
        gt_segms = inputs["gt_poly"]
        im_shape = inputs["im_shape"]
        losses = {}
        mask_losses = {}
        for t in range(self.num_cascade_stages):
            w = self.stage_loss_weights[t]
            sampled = self.bbox_assigner(rois, rois_num, gt_boxes, gt_classes, stage=t)
            logit, deltas = self.stage_forward(t, feats, sampled.rois, sampled.rois_num, semantic)
            cls_loss, reg_loss = self._box_loss(t, logit, deltas, sampled)
            losses["loss_bbox_cls_stage{}".format(t)] = cls_loss * w
            losses["loss_bbox_reg_stage{}".format(t)] = reg_loss * w
            with paddle.no_grad():
                refined = self.refine(t, deltas.detach(), sampled.rois, sampled.rois_num, im_shape)
                rois, rois_num = self._drop_gt_and_empty(refined, sampled)
            msampled = self.bbox_assigner(rois, rois_num, gt_boxes, gt_classes, stage=t)
            mrois, mnum, mlabels, mtargets = self.mask_head.mask_assigner(msampled, gt_segms)
            mask_losses["loss_mask_stage{}".format(t)] = self.mask_head.loss(
                feats, mrois, mnum, (mlabels, mtargets), t, w, semantic
            )
        losses.update(mask_losses)
        return losses

    def _box_loss(self, t, logit, deltas, sampled):
        labels = sampled.labels
        cls_loss = F.cross_entropy(logit, labels.reshape([-1, 1]), reduction="mean")
        fg = paddle.nonzero(paddle.logical_and(labels >= 0, labels < self.num_classes)).reshape([-1])
        num = float(labels.shape[0])
        if fg.shape[0] == 0:
            return cls_loss, (deltas * 0).sum()
        tgt = box_utils.bbox2delta(paddle.gather(sampled.rois, fg), paddle.gather(sampled.gt_boxes, fg),
                                   self.bbox_weight[t])
        tgt.stop_gradient = True
        reg_loss = paddle.abs(paddle.gather(deltas, fg) - tgt).sum() / num
        return cls_loss, reg_loss

    @staticmethod
    def _drop_gt_and_empty(boxes, sampled):
        keep = paddle.logical_and(box_utils.nonempty_mask(boxes), paddle.logical_not(sampled.is_gt))
        img = box_utils.roi_image_index(sampled.rois_num)
        batch = sampled.rois_num.shape[0]
        keep_np = keep.numpy()
        img_np = img.numpy()
        idx = []
        nums = []
        for b in range(batch):
            rows = np.nonzero(img_np == b)[0]
            k = rows[keep_np[rows]]
            if k.size == 0 and rows.size:
                k = rows[:1]
            idx.append(k)
            nums.append(k.size)
        idx = paddle.to_tensor(np.concatenate(idx).astype("int64"))
        return paddle.gather(boxes, idx), paddle.to_tensor(np.asarray(nums, dtype="int32"))
