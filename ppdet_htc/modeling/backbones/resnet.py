"""ResNet backbone (depths 18-152, variants a-d) with PaddleDetection's parameter names.

Parameter keys follow the official checkpoints: ``conv1.conv1.conv.weight``, ``res2.res2a.branch2a.norm._mean``,
``res4.res4b22.short...`` (depth 101 names res4 blocks ``res4a, res4b1, ..``). Every stage's first block has a
projection shortcut (even where shapes match), which is what the checkpoints contain.
"""
from typing import List, Optional

import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import KaimingNormal
from paddle.regularizer import L2Decay

from ...core import register
from ..layers import add, inference, relu
from ..shape_spec import ShapeSpec

__all__ = ["ResNet", "ConvNormLayer"]

BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class ConvNormLayer(nn.Layer):
    """Conv (no bias) + BatchNorm (+ ReLU). Frozen BN uses running statistics in train and eval."""

    def __init__(self, ch_in, ch_out, filter_size, stride, groups=1, act=None, norm_type="bn",
                 norm_decay=0.0, freeze_norm=True, lr=1.0):
        super().__init__()
        if norm_type not in ("bn", "sync_bn"):
            raise ValueError("ResNet.norm_type must be 'bn' or 'sync_bn', got {!r}".format(norm_type))
        self.act = act
        self.conv = nn.Conv2D(
            ch_in, ch_out, filter_size, stride=stride, padding=(filter_size - 1) // 2, groups=groups,
            weight_attr=ParamAttr(learning_rate=lr, initializer=KaimingNormal()), bias_attr=False,
        )
        norm_lr = 0.0 if freeze_norm else lr
        w_attr = ParamAttr(learning_rate=norm_lr, regularizer=L2Decay(norm_decay), trainable=not freeze_norm)
        b_attr = ParamAttr(learning_rate=norm_lr, regularizer=L2Decay(norm_decay), trainable=not freeze_norm)
        global_stats = True if freeze_norm else None
        bn_cls = nn.SyncBatchNorm if norm_type == "sync_bn" else nn.BatchNorm2D
        self.norm = bn_cls(ch_out, weight_attr=w_attr, bias_attr=b_attr, use_global_stats=global_stats)
        if freeze_norm:
            for p in self.norm.parameters():
                p.stop_gradient = True

    def forward(self, x):
        x = self.norm(self.conv(x))
        return relu(x, inference(self)) if self.act == "relu" else x


def _shortcut(ch_in, ch_out, stride, variant, **norm):
    if variant == "d" and stride == 2:
        short = nn.Sequential()
        short.add_sublayer("pool", nn.AvgPool2D(kernel_size=2, stride=2, padding=0, ceil_mode=True))
        short.add_sublayer("conv", ConvNormLayer(ch_in, ch_out, 1, 1, **norm))
        return short
    return ConvNormLayer(ch_in, ch_out, 1, stride, **norm)


class BottleNeck(nn.Layer):
    expansion = 4

    def __init__(self, ch_in, ch_out, stride, shortcut, variant="b", groups=1, base_width=64, **norm):
        super().__init__()
        stride1, stride2 = (stride, 1) if variant == "a" else (1, stride)
        width = int(ch_out * (base_width / 64.0)) * groups
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out * self.expansion, stride, variant, **norm)
        self.branch2a = ConvNormLayer(ch_in, width, 1, stride1, act="relu", **norm)
        self.branch2b = ConvNormLayer(width, width, 3, stride2, groups=groups, act="relu", **norm)
        self.branch2c = ConvNormLayer(width, ch_out * self.expansion, 1, 1, **norm)

    def forward(self, x):
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        short = x if self.shortcut else self.short(x)
        fast = inference(self)
        return relu(add(out, short, fast), fast)


class BasicBlock(nn.Layer):
    expansion = 1

    def __init__(self, ch_in, ch_out, stride, shortcut, variant="b", groups=1, base_width=64, **norm):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("ResNet depth 18/34 supports only groups=1 and base_width=64")
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out, stride, variant, **norm)
        self.branch2a = ConvNormLayer(ch_in, ch_out, 3, stride, act="relu", **norm)
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, 1, **norm)

    def forward(self, x):
        out = self.branch2b(self.branch2a(x))
        short = x if self.shortcut else self.short(x)
        fast = inference(self)
        return relu(add(out, short, fast), fast)


def _block_name(stage_num, count, i):
    name = "res" + str(stage_num)
    if count > 10 and stage_num == 4:
        return name + ("a" if i == 0 else "b" + str(i))
    return name + chr(ord("a") + i)


@register
class ResNet(nn.Layer):
    """ResNet producing C2..C5 (strides 4, 8, 16, 32) for the stages listed in ``return_idx``.

    ``freeze_at=k`` stops gradients of the stem and stages res2..res(2+k) (``-1``: train all);
    ``freeze_norm`` turns BatchNorm into a fixed affine transform (running statistics).
    ``ch_out_list`` (an extension of PaddleDetection's options) narrows the stages, e.g. for a
    small demo network; the default ``[64, 128, 256, 512]`` is the standard ResNet.
    """

    __shared__ = ["norm_type"]

    def __init__(
        self,
        depth: int = 50,
        ch_in: int = 64,
        variant: str = "b",
        lr_mult_list: List[float] = (1.0, 1.0, 1.0, 1.0),
        groups: int = 1,
        base_width: int = 64,
        norm_type: str = "bn",
        norm_decay: float = 0.0,
        freeze_norm: bool = True,
        freeze_at: int = 0,
        return_idx: List[int] = (0, 1, 2, 3),
        dcn_v2_stages: List[int] = (-1,),
        num_stages: int = 4,
        std_senet: bool = False,
        freeze_stem_only: bool = False,
        ch_out_list: Optional[List[int]] = None,
    ):
        super().__init__()
        if depth not in BLOCKS_PER_DEPTH:
            raise ValueError("ResNet.depth must be one of {}, got {}".format(sorted(BLOCKS_PER_DEPTH), depth))
        if variant not in ("a", "b", "c", "d"):
            raise ValueError("ResNet.variant must be one of a, b, c, d; got {!r}".format(variant))
        if not 1 <= num_stages <= 4:
            raise ValueError("ResNet.num_stages must be in 1..4, got {}".format(num_stages))
        if list(dcn_v2_stages) not in ([-1], []):
            raise ValueError("ResNet.dcn_v2_stages: deformable convolutions are not supported (use [-1])")
        if std_senet:
            raise ValueError("ResNet.std_senet is not supported")
        return_idx = [int(i) for i in return_idx]
        if any(i < 0 or i >= num_stages for i in return_idx):
            raise ValueError("ResNet.return_idx {} must index stages 0..{}".format(return_idx, num_stages - 1))
        if len(lr_mult_list) != 4:
            raise ValueError("ResNet.lr_mult_list needs 4 values, got {}".format(list(lr_mult_list)))
        ch_out_list = list(ch_out_list) if ch_out_list is not None else [64, 128, 256, 512]
        if len(ch_out_list) != 4:
            raise ValueError("ResNet.ch_out_list needs 4 values, got {}".format(ch_out_list))
        self.depth = depth
        self.variant = variant
        self.return_idx = return_idx
        self.num_stages = num_stages
        self.freeze_at = freeze_at
        norm = dict(norm_type=norm_type, norm_decay=norm_decay, freeze_norm=freeze_norm)

        if variant in ("c", "d"):
            stem = [(3, ch_in // 2, 3, 2, "conv1_1"), (ch_in // 2, ch_in // 2, 3, 1, "conv1_2"),
                    (ch_in // 2, ch_in, 3, 1, "conv1_3")]
        else:
            stem = [(3, ch_in, 7, 2, "conv1")]
        self.conv1 = nn.Sequential()
        for c_in, c_out, k, s, name in stem:
            self.conv1.add_sublayer(name, ConvNormLayer(c_in, c_out, k, s, act="relu", lr=1.0, **norm))

        block = BottleNeck if depth >= 50 else BasicBlock
        counts = BLOCKS_PER_DEPTH[depth]
        self._out_channels = [c * block.expansion for c in ch_out_list]
        self._out_strides = [4, 8, 16, 32]
        self.res_layers = []
        c_in = ch_in
        for i in range(num_stages):
            stage_num = i + 2
            stage = nn.Sequential()
            for j in range(counts[i]):
                stage.add_sublayer(
                    _block_name(stage_num, counts[i], j),
                    block(c_in, ch_out_list[i], stride=2 if (j == 0 and i != 0) else 1, shortcut=(j != 0),
                          variant=variant, groups=groups, base_width=base_width,
                          lr=float(lr_mult_list[i]), **norm),
                )
                c_in = ch_out_list[i] * block.expansion
            self.res_layers.append(self.add_sublayer("res{}".format(stage_num), stage))

        if freeze_at >= 0:
            self._freeze(self.conv1)
            if not freeze_stem_only:
                for i in range(min(freeze_at + 1, num_stages)):
                    self._freeze(self.res_layers[i])

    @staticmethod
    def _freeze(layer):
        for p in layer.parameters():
            p.stop_gradient = True

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self._out_channels[i], stride=self._out_strides[i]) for i in self.return_idx]

    def forward(self, inputs):
        x = inputs["image"] if isinstance(inputs, dict) else inputs
        x = self.conv1(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        outs = []
        for idx, stage in enumerate(self.res_layers):
            x = stage(x)
            if idx in self.return_idx:
                outs.append(x)
        return outs
