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
from ..layers import Conv2D, Conv2DTranspose, ConvAct, inference, relu
from ..box_utils import known_empty
from ..shape_spec import ShapeSpec, as_shape_list, in_channel_from
from .roi_extractor import build_roi_feature_extractor
from .stage_fusion import MaskStageFusion, build_fusion
from ...errors import ConfigError

__all__ = ["HybridTaskMaskFeat", "HybridTaskMaskHead", "MaskFeat"]


class HybridTaskMaskFeatSub(nn.Layer):
    """One mask stage: ``num_convs`` 3x3 convs, a 2x deconv, 1x1 logits, and (t > 0) ``conv_res``."""

    def __init__(self, in_channel, out_channel, num_convs, num_classes, with_res):
        super().__init__()
        self.convs = nn.LayerList(
            [ConvAct(in_channel if i == 0 else out_channel, out_channel, 3, fan_in=out_channel * 9)
             for i in range(num_convs)]
        )
        self.upsample = Conv2DTranspose(
            out_channel, out_channel, 2, stride=2,
            weight_attr=ParamAttr(initializer=KaimingNormal(fan_in=out_channel * 4)),
            bias_attr=ParamAttr(initializer=Constant(0.0)),
        )
        # The reference initialises the logits with fan_in = num_classes (kept for training parity).
        self.conv_logits = Conv2D(
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
            raise ConfigError("HybridTaskMaskFeat.norm_type: only null (no normalisation) is supported")
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
    def from_config(cls, cfg, input_shape=None, num_stages=None, **kwargs):
        out = in_channel_from(input_shape)
        if num_stages is not None:
            out["num_cascade_stages"] = num_stages
        return out

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.out_channel)]

    @property
    def upsample_factor(self):
        """Mask logits are this many times the RoI feature resolution (one stride-2 deconv)."""
        return 2

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
            raise ConfigError("MaskFeat.norm_type: only null (no normalisation) is supported")
        self.head = HybridTaskMaskFeatSub(in_channel, out_channel, num_convs, num_classes, with_res=False)

    def forward(self, x):
        return self.head.logits(self.head.features(x))


@register
class HybridTaskMaskHead(nn.Layer):
    """The mask branch: RoI features (+ semantic feature) -> chained mask stages -> per-class logits.

    Owns its RoI feature extractor (14x14 by default), the stage stack ``head`` (parameters
    ``mask_head.head.{t}``), the fusion of the stages at test time (``mask_fusion``, default: mean of
    the stages' sigmoids) and the training-target builder (``mask_assigner``). The logits' resolution is
    ``upsample_factor x`` the RoI resolution (28 for 14), and the targets are built at that size.
    """

    __shared__ = ["num_classes"]
    __inject__ = ["head", "mask_assigner", "mask_fusion"]
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
        semantic_stride: Optional[int] = None,
        mask_fusion: object = None,
    ):
        super().__init__()
        if share_bbox_feat:
            raise ConfigError("HybridTaskMaskHead.share_bbox_feat=True is not supported by HTC")
        if isinstance(head, str) or isinstance(mask_assigner, str):
            raise TypeError("HybridTaskMaskHead needs built modules; build it with ppdet_htc.core.create")
        self.roi_extractor = build_roi_feature_extractor(
            roi_extractor, semantic_roi_extractor, feat_strides or [4, 8, 16, 32], semantic_stride, in_channel)
        self.head = head
        self.mask_assigner = mask_assigner
        self.mask_fusion = build_fusion(mask_fusion, MaskStageFusion)
        self.num_classes = num_classes
        self.out_resolution = self.roi_extractor.resolution * head.upsample_factor
        target_res = getattr(mask_assigner, "mask_resolution", None)
        if target_res is None and mask_assigner is not None:
            mask_assigner.mask_resolution = self.out_resolution  # targets at the logits' resolution
        elif target_res is not None and int(target_res) != self.out_resolution:
            raise ConfigError(
                "MaskAssigner.mask_resolution is {} but the mask head predicts {}x{} (RoI resolution {} x {}); "
                "set mask_resolution: {}".format(target_res, self.out_resolution, self.out_resolution,
                                                 self.roi_extractor.resolution, head.upsample_factor,
                                                 self.out_resolution))

    @classmethod
    def from_config(cls, cfg, input_shape=None, num_stages=None, semantic_shape=None, **kwargs):
        if input_shape is None:
            return {}
        shapes = as_shape_list(input_shape)
        from ...core.config import create

        head = cfg.get("head", "HybridTaskMaskFeat")
        return {
            "head": create(head, input_shape=ShapeSpec(channels=shapes[0].channels), num_stages=num_stages),
            "in_channel": shapes[0].channels,
            "feat_strides": [s.stride for s in shapes[:4]],
            "semantic_stride": semantic_shape.stride if semantic_shape is not None else None,
        }

    @property
    def num_stages(self):
        return self.head.num_cascade_stages

    def predict(self, feats, rois, rois_num, labels, semantic_feat=None):
        """Mask probabilities ``[K,M,M]`` for detections ``rois [K,4]`` (input scale) of class ``labels [K]``."""
        m = self.out_resolution
        if known_empty(rois):
            return paddle.zeros([0, m, m], dtype="float32")
        with phase("mask_roi_features"):
            x = self.roi_extractor(feats, rois, rois_num, semantic_feat)
        logits = self.head(x, self.num_stages - 1, all_logits=self.mask_fusion.needs_all_stages)
        with phase("mask_fusion"):
            # Only the detection's own class channel is needed: select it before the sigmoid.
            idx = labels.astype("int64").reshape([-1, 1, 1, 1]).expand([-1, 1, m, m])
            return self.mask_fusion([paddle.take_along_axis(lg, idx, axis=1)[:, 0] for lg in logits])

    def loss(self, feats, rois, rois_num, targets, stage, weight, semantic_feat=None):
        """Mask loss of ``stage``: BCE on the target class channel, averaged over pixels and RoIs.

        ``targets``: ``(labels [N] int64, masks [N,M,M] float32)`` for the fg RoIs ``rois [N,4]``.
        """
        labels, masks = targets
        if rois.shape[0] == 0:
            zero = sum((p * 0).sum() for p in self.head.stages[stage].parameters())
            return zero
        x = self.roi_extractor(feats, rois, rois_num, semantic_feat)
        logits = self.head(x, stage)[0]
        idx = labels.astype("int64").reshape([-1, 1, 1, 1]).expand([-1, 1, logits.shape[2], logits.shape[3]])
        logit = paddle.take_along_axis(logits, idx, axis=1)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logit, masks, reduction="mean")
        return loss * weight
