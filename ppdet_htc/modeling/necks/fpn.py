"""Feature Pyramid Network: C2..C5 -> P2..P6 (P6 is P5 subsampled by 2)."""
from typing import List, Optional

import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr, in_dynamic_mode
from paddle.nn.initializer import Constant, XavierUniform


from ...core import register
from ...errors import ConfigError
from ..layers import Conv2D, add, inference, upsample_nearest_2x
from ..shape_spec import ShapeSpec

__all__ = ["FPN"]


@register
class FPN(nn.Layer):
    """Top-down FPN with PaddleDetection's layer names (``fpn_inner_res5_sum``, ``fpn_res2_sum`` ...).

    Laterals are 1x1 convs; each coarser (already summed) lateral is upsampled x2 (nearest) and
    added to the next finer one; a 3x3 conv produces each output. No activations. With
    ``extra_stage=1`` and no extra convs, P6 = ``max_pool2d(P5, 1, stride=2)``. ``norm_type`` is not
    shared with the backbone here (a global ``norm_type: sync_bn`` must not change the FPN).
    """

    def __init__(
        self,
        in_channels: List[int] = (256, 512, 1024, 2048),
        out_channel: int = 256,
        spatial_scales: List[float] = (0.25, 0.125, 0.0625, 0.03125),
        has_extra_convs: bool = False,
        extra_stage: int = 1,
        use_c5: bool = True,
        norm_type: Optional[str] = None,
        norm_decay: float = 0.0,
        freeze_norm: bool = False,
        relu_before_extra_convs: bool = True,
    ):
        super().__init__()
        if norm_type is not None:
            raise ConfigError("FPN.norm_type: normalised FPN convs are not supported (HTC's FPN has none); use null")
        if has_extra_convs:
            raise ConfigError("FPN.has_extra_convs=True is not supported by HTC (P6 comes from max-pooling)")
        self.in_channels = list(in_channels)
        self.out_channel = out_channel
        self.extra_stage = extra_stage
        self.spatial_scales = list(spatial_scales)
        for _ in range(extra_stage):
            self.spatial_scales.append(self.spatial_scales[-1] / 2.0)
        self.lateral_convs = []
        self.fpn_convs = []
        num = len(self.in_channels)
        st_stage = 4 - num  # stage index of the first input (0 = res2)
        for i in range(num):
            stage = st_stage + i
            lat_name = "fpn_inner_res5_sum" if stage == 3 else "fpn_inner_res{}_sum_lateral".format(stage + 2)
            lateral = self.add_sublayer(
                lat_name,
                Conv2D(
                    self.in_channels[i], out_channel, 1,
                    weight_attr=ParamAttr(initializer=XavierUniform(fan_out=self.in_channels[i])),
                    bias_attr=ParamAttr(initializer=Constant(0.0)),
                ),
            )
            self.lateral_convs.append(lateral)
            fpn_conv = self.add_sublayer(
                "fpn_res{}_sum".format(stage + 2),
                Conv2D(
                    out_channel, out_channel, 3, padding=1,
                    weight_attr=ParamAttr(initializer=XavierUniform(fan_out=out_channel * 9)),
                    bias_attr=ParamAttr(initializer=Constant(0.0)),
                ),
            )
            self.fpn_convs.append(fpn_conv)

    @classmethod
    def from_config(cls, cfg, input_shape=None, **kwargs):
        if input_shape is None:
            return {}
        return {
            "in_channels": [s.channels for s in input_shape],
            "spatial_scales": [1.0 / s.stride for s in input_shape],
        }

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.out_channel, stride=int(round(1.0 / s))) for s in self.spatial_scales]

    def forward(self, body_feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, body_feats)]
        fast = inference(self)
        for lvl in range(len(laterals) - 1, 0, -1):
            if in_dynamic_mode():
                up = F.interpolate(laterals[lvl], scale_factor=2.0, mode="nearest")
            else:  # exported program: same values without an interpolation operator (see layers.py)
                up = upsample_nearest_2x(laterals[lvl])
            laterals[lvl - 1] = add(laterals[lvl - 1], up, fast)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        for _ in range(self.extra_stage):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs
