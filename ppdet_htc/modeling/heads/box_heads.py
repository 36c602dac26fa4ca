"""Per-stage box heads of the cascade: the shared fully connected layers before the predictors."""
import paddle
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Constant, XavierUniform

from ...core import register
from ..layers import inference, relu
from ..shape_spec import ShapeSpec, as_shape_list

__all__ = ["TwoFCHead", "HybridTaskCascadeTwoFCHead"]


class TwoFCHead(nn.Layer):
    """fc6 + ReLU, fc7 + ReLU on the flattened ``[R, C*P*P]`` RoI feature (C, H, W order)."""

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


@register
class HybridTaskCascadeTwoFCHead(nn.Layer):
    """One two-FC head per cascade stage (parameters ``head.{t}.fc6`` / ``head.{t}.fc7``).

    The input size comes from the RoI features' ``ShapeSpec`` (channels x resolution x resolution);
    ``in_channel``/``resolution`` are the fallbacks when it is built without one.
    """

    __shared__ = ["num_cascade_stage"]

    def __init__(self, in_channel: int = 256, out_channel: int = 1024, resolution: int = 7,
                 num_cascade_stage: int = 3):
        super().__init__()
        self.out_channel = out_channel
        self.num_stages = num_cascade_stage
        self.stages = [
            self.add_sublayer(str(t), TwoFCHead(in_channel * resolution * resolution, out_channel))
            for t in range(num_cascade_stage)
        ]

    @classmethod
    def from_config(cls, cfg, input_shape=None, num_stages=None, **kwargs):
        out = {}
        if input_shape is not None:
            shape = as_shape_list(input_shape)[0]
            out["in_channel"] = shape.channels
            if shape.height is not None:
                out["resolution"] = shape.height
        if num_stages is not None:
            out["num_cascade_stage"] = num_stages
        return out

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.out_channel)]

    def forward(self, rois_feat, stage=0):
        return self.stages[stage](rois_feat)
