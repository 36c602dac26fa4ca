"""HTC mask branch: three mask stages chained by the *mask information flow*.

Stage t sees the RoI feature ``x`` plus ``ReLU(conv_res_t(f_{t-1}))``, where ``f_{t-1}`` is the
previous stage's 4-conv output (Chen et al. 2019, Eq. 5):
``f_t = convs_t(x + ReLU(conv_res_t(f_{t-1})))``, ``m_t = conv_logits_t(ReLU(deconv_t(f_t)))``.
"""
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, KaimingNormal

from ...core import register
from ...utils.timing import phase
from ..layers import ConvAct, inference, relu
from ..box_utils import known_empty
from ..shape_spec import ShapeSpec, as_shape_list, in_channel_from
from .roi_extractor import RoIAlign

__all__ = ["HybridTaskMaskFeat", "HybridTaskMaskHead", "MaskFeat"]


class HybridTaskMaskFeatSub(nn.Layer):
    """One mask stage: ``num_convs`` 3x3 convs, a 2x deconv, 1x1 logits, and (t > 0) ``conv_res``."""

    def __init__(self, in_channel, out_channel, num_convs, num_classes, with_res):
        super().__init__()
        self.convs = nn.LayerList(
            [ConvAct(in_channel if i == 0 else out_channel, out_channel, 3, fan_in=out_channel * 9)
             for i in range(num_convs)]
        )
        self.upsample = nn.Conv2DTranspose(
            out_channel, out_channel, 2, stride=2,
            weight_attr=ParamAttr(initializer=KaimingNormal(fan_in=out_channel * 4)),
            bias_attr=ParamAttr(initializer=Constant(0.0)),
        )
        # The reference initialises the logits with fan_in = num_classes (kept for training parity).
        self.conv_logits = nn.Conv2D(
            out_channel, num_classes, 1,
            weight_attr=ParamAttr(initializer=KaimingNormal(fan_in=num_classes)),
            bias_attr=ParamAttr(initializer=Constant(0.0)),
        )
        self.with_res = with_res
        if with_res:
            # Maps the previous stage's features back to the RoI-feature width they are added to.
            self.conv_res = ConvAct(out_channel, in_channel, 1, relu=True, fan_in=out_channel * 9)

    def features(self, x, prev=None):
        if prev is not None:
            x = x + self.conv_res(prev)  # x is the shared RoI feature: never in place
        for conv in self.convs:
            x = conv(x)
        return x

    def logits(self, feat):
        return self.conv_logits(relu(self.upsample(feat), inference(self)))


@register
class HybridTaskMaskFeat(nn.Layer):
    """The stack of mask stages (``head.{t}``). ``num_classes`` sets the logits' channel count."""

    __shared__ = ["num_cascade_stages", "num_classes"]

    def __init__(
        self,
        in_channel: int = 256,
        out_channel: int = 256,
        num_convs: int = 4,
        norm_type: Optional[str] = None,
        num_cascade_stages: int = 3,
        num_classes: int = 80,
    ):
        super().__init__()
        if norm_type is not None:
            raise ValueError("HybridTaskMaskFeat.norm_type: only null (no normalisation) is supported")
        self.num_cascade_stages = num_cascade_stages
        self.out_channel = out_channel
        self.stages = []
        for t in range(num_cascade_stages):
            self.stages.append(
                self.add_sublayer(
                    str(t), HybridTaskMaskFeatSub(in_channel, out_channel, num_convs, num_classes, with_res=t > 0)
                )
            )

    @classmethod
    def from_config(cls, cfg, input_shape=None, **kwargs):
        return in_channel_from(input_shape)

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.out_channel)]

    def forward(self, x, stage, all_logits=False):
        """Run stages ``0..stage`` with the information flow on RoI features ``x [K,C,14,14]``.

        Returns the list of logits ``[K,num_classes,28,28]``: of every stage if ``all_logits``, else
        only of ``stage`` (earlier stages then only produce features, as in training).
        """
        prev = None
        outs = []
        for t in range(stage + 1):
            with phase("mask_stage{}".format(t)):
                sub = self.stages[t]
                feat = sub.features(x, prev)
                if all_logits or t == stage:
                    outs.append(sub.logits(feat))
                prev = feat
        return outs


@register
class MaskFeat(nn.Layer):
    """Mask R-CNN's mask head (4 convs + deconv + logits). Present so PaddleDetection configs that
    carry a ``MaskFeat`` section load; HTC itself uses ``HybridTaskMaskFeat``."""

    __shared__ = ["num_classes"]

    def __init__(self, in_channel: int = 256, out_channel: int = 256, num_convs: int = 4,
                 norm_type: Optional[str] = None, num_classes: int = 80):
        super().__init__()
        if norm_type is not None:
            raise ValueError("MaskFeat.norm_type: only null (no normalisation) is supported")
        self.head = HybridTaskMaskFeatSub(in_channel, out_channel, num_convs, num_classes, with_res=False)

    def forward(self, x):
        return self.head.logits(self.head.features(x))


@register
class HybridTaskMaskHead(nn.Layer):
    """Mask branch wrapper: RoI features (+ semantic feature) -> mask stages -> per-class logits.

    At test time the sigmoid probabilities of all stages are averaged and the channel of each
    detection's label is returned. Training losses are computed in ``loss``.
    """

    __shared__ = ["num_classes"]
    __inject__ = ["head", "mask_assigner"]
    __nested__ = {"roi_extractor": "RoIAlign", "semantic_roi_extractor": "RoIAlign"}

    def __init__(
        self,
        head: object = "HybridTaskMaskFeat",
        roi_extractor: Optional[dict] = None,
        semantic_roi_extractor: Optional[dict] = None,
        mask_assigner: object = "MaskAssigner",
        num_classes: int = 80,
        share_bbox_feat: bool = False,
        in_channel: int = 256,
        feat_strides: Optional[list] = None,
    ):
        super().__init__()
        if share_bbox_feat:
            raise ValueError("HybridTaskMaskHead.share_bbox_feat=True is not supported by HTC")
        if isinstance(head, str) or isinstance(mask_assigner, str):
            raise TypeError("HybridTaskMaskHead needs built modules; build it with ppdet_htc.core.create")
        strides = feat_strides or [4, 8, 16, 32]
        roi = dict(roi_extractor or {})
        roi["spatial_scale"] = [1.0 / s for s in strides]
        self.roi_extractor = RoIAlign(**roi)
        sem = dict(semantic_roi_extractor or {})
        sem["spatial_scale"] = [0.125]  # the semantic head passes its own scale (1/8) at run time
        sem["start_level"] = 0
        self.semantic_roi_extractor = RoIAlign(**sem)
        self.head = head
        self.mask_assigner = mask_assigner
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape=None, **kwargs):
        if input_shape is None:
            return {}
        shapes = as_shape_list(input_shape)
        from ...core.config import create

        head = cfg.get("head", "HybridTaskMaskFeat")
        return {
            "head": create(head, input_shape=ShapeSpec(channels=shapes[0].channels)),
            "in_channel": shapes[0].channels,
            "feat_strides": [s.stride for s in shapes[:4]],
        }

    def roi_features(self, feats, rois, rois_num, semantic=None):
        """RoIAlign 14x14 on P2..P5, plus the semantic feature's RoIAlign when HTC fuses it."""
        x = self.roi_extractor(feats[:4], rois, rois_num)
        if semantic is not None:
            sem_feat, sem_scale = semantic
            s = self.semantic_roi_extractor([sem_feat], rois, rois_num, spatial_scale=sem_scale)
            if s.shape[2:] != x.shape[2:]:
                s = F.adaptive_avg_pool2d(s, x.shape[2:])
            x = x + s
        return x

    def predict(self, feats, rois, rois_num, labels, semantic=None):
        """Mask probabilities ``[K,28,28]`` for detections ``rois [K,4]`` (input scale) of class ``labels [K]``."""
        if known_empty(rois):
            return paddle.zeros([0, 28, 28], dtype="float32")
        with phase("mask_roi_features"):
            x = self.roi_features(feats, rois, rois_num, semantic)
        logits = self.head(x, self.head.num_cascade_stages - 1, all_logits=True)
        with phase("mask_paste"):
            # Only the detection's own class channel is needed: select it before the sigmoid.
            idx = labels.astype("int64").reshape([-1, 1, 1, 1]).expand(
                [-1, 1, logits[0].shape[2], logits[0].shape[3]])
            probs = [F.sigmoid(paddle.take_along_axis(lg, idx, axis=1)[:, 0]) for lg in logits]
            return paddle.add_n(probs) / float(len(probs))

    def loss(self, feats, rois, rois_num, targets, stage, weight, semantic=None):
        """Mask loss of ``stage``: BCE on the target class channel, averaged over pixels and RoIs.

        ``targets``: ``(labels [N] int64, masks [N,M,M] float32)`` for the fg RoIs ``rois [N,4]``.
        """
        labels, masks = targets
        if rois.shape[0] == 0:
            zero = sum((p * 0).sum() for p in self.head.stages[stage].parameters())
            return zero
        x = self.roi_features(feats, rois, rois_num, semantic)
        logits = self.head(x, stage)[0]
        idx = labels.astype("int64").reshape([-1, 1, 1, 1]).expand([-1, 1, logits.shape[2], logits.shape[3]])
        logit = paddle.take_along_axis(logits, idx, axis=1)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logit, masks, reduction="mean")
        return loss * weight
