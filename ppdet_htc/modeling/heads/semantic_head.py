"""HTC's fused semantic segmentation head: a whole-image feature fused into every RoI feature."""
import math
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, KaimingUniform

from ...core import register
from ..layers import Conv2D, ConvAct, resize_bilinear_align_corners
from ..losses import softmax_cross_entropy
from ..shape_spec import ShapeSpec
from ...errors import ConfigError

__all__ = ["FusedSemanticHead"]


def _plain_conv(ch_in, ch_out):
    return Conv2D(
        ch_in, ch_out, 1, weight_attr=ParamAttr(initializer=KaimingUniform()),
        bias_attr=ParamAttr(initializer=Constant(0.0)),
    )


@register
class FusedSemanticHead(nn.Layer):
    """Semantic branch of HTC (Chen et al. 2019, Sec. 3.3), as in mmdetection.

    All FPN levels are resized (bilinear, ``align_corners=True``) to the fusion level (P3, stride 8),
    passed through their own 1x1 conv + ReLU and summed; four 3x3 convs + ReLU follow. Outputs:
    ``seg_logits = conv_logits(x)`` (``semantic_num_class`` channels) and the fused feature
    ``relu(conv_embedding(x))`` that the box and mask heads add to their RoI features.
    Loss: cross-entropy with ``ignore_index`` (255), averaged over the labelled pixels
    (``avg_non_ignore``, PaddleDetection) or over all pixels (mmdetection), times ``loss_weight``.
    """

    def __init__(
        self,
        in_channel: int = 256,
        out_channel: Optional[int] = None,
        num_ins: int = 5,
        fusion_level: int = 1,
        num_convs: int = 4,
        semantic_num_class: int = 183,
        ignore_index: int = 255,
        loss_weight: float = 0.2,
        fusion_stride: int = 8,
        avg_non_ignore: bool = True,
    ):
        super().__init__()
        out_channel = in_channel if out_channel is None else out_channel  # 256 for the R50 model
        if not 0 <= fusion_level < num_ins:
            raise ConfigError("FusedSemanticHead.fusion_level {} must be < num_ins {}".format(fusion_level, num_ins))
        self.num_ins = num_ins
        self.fusion_level = fusion_level
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.avg_non_ignore = bool(avg_non_ignore)
        self.stride = fusion_stride
        self.lateral_convs = nn.LayerList(
            [ConvAct(in_channel, in_channel, 1, relu=True, uniform=True) for _ in range(num_ins)]
        )
        self.convs = nn.LayerList(
            [ConvAct(in_channel if i == 0 else out_channel, out_channel, 3) for i in range(num_convs)]
        )
        # The fused feature is added to FPN RoI features, so it has the FPN's channel count.
        self.conv_embedding = _plain_conv(out_channel, in_channel)
        self.conv_logits = _plain_conv(out_channel, semantic_num_class)

    @classmethod
    def from_config(cls, cfg, input_shape=None, **kwargs):
        if input_shape is None:
            return {}
        level = cfg.get("fusion_level", 1)
        return {
            "in_channel": input_shape[0].channels,
            "num_ins": len(input_shape),
            "fusion_stride": input_shape[level].stride,
        }

    @property
    def spatial_scale(self):
        """Scale of the semantic feature map relative to the input image (1/8)."""
        return 1.0 / self.stride

    @property
    def out_shape(self):
        """The fused feature the RoI heads read: FPN channels at the fusion level's stride."""
        return ShapeSpec(channels=self.conv_embedding.weight.shape[0], stride=self.stride)

    def forward(self, feats):
        """feats: FPN outputs. Returns ``(semantic_feat [B,C,H/8,W/8], seg_logits [B,K,H/8,W/8])``."""
        feats = feats[: self.num_ins]
        target = feats[self.fusion_level]
        x = self.lateral_convs[self.fusion_level](target)
        for i, feat in enumerate(feats):
            if i == self.fusion_level:
                continue
            if paddle.in_dynamic_mode():
                feat = F.interpolate(feat, size=target.shape[2:], mode="bilinear", align_corners=True)
            else:  # exported program: the same bilinear resize without an interpolation operator
                feat = resize_bilinear_align_corners(feat, paddle.shape(target)[2], paddle.shape(target)[3])
            x = x + self.lateral_convs[i](feat)
        for conv in self.convs:
            x = conv(x)
        seg_logits = self.conv_logits(x)
        semantic_feat = F.relu(self.conv_embedding(x))
        return semantic_feat, seg_logits

    def loss(self, seg_logits, labels):
        """``labels [B,H',W']`` int (255 = ignore), resized by nearest neighbour to the logits if needed."""
        labels = labels.astype("int64")
        if labels.ndim == 4:
            labels = labels[:, 0]
        h, w = seg_logits.shape[2], seg_logits.shape[3]
        if labels.shape[1] != h or labels.shape[2] != w:
            labels = F.interpolate(labels[:, None].astype("float32"), size=[h, w], mode="nearest")[:, 0]
            labels = labels.astype("int64")
        valid = (labels != self.ignore_index).astype("float32")
        per_pixel = softmax_cross_entropy(seg_logits, labels, axis=1, ignore_index=self.ignore_index)
        # Mean over the labelled pixels (0, with a gradient path, when every pixel is ignored), or with
        # ``avg_non_ignore=False`` over all pixels, ignored ones included (mmdetection, Quirk M7).
        count = paddle.clip(valid.sum(), min=1.0) if self.avg_non_ignore else float(math.prod(valid.shape))
        loss = per_pixel.sum() / count
        return {"loss_semantic": loss * self.loss_weight}
