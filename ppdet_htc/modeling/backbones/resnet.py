"""ResNet / ResNeXt backbone (depths 18-152, variants a-d) with PaddleDetection's parameter names.

Parameter keys follow the official checkpoints: ``conv1.conv1.conv.weight``, ``res2.res2a.branch2a.norm._mean``,
``res4.res4b22.short...`` (depth 101 names res4 blocks ``res4a, res4b1, ..``). Every stage's first block has a
projection shortcut (even where shapes match), which is what the checkpoints contain.

mmdetection's ResNet/ResNeXt with ``style='pytorch'`` is variant "b" (stride on the 3x3 conv) with the same
layout (bottleneck width ``floor(planes*base_width/64)*groups``); two options add what its HTC models need:
``dcn_v1_stages`` (its ``DCN``: deformable 3x3 convs, :class:`~ppdet_htc.modeling.layers.DeformableConvV1`,
stored as ``branch2b.conv.weight`` + ``branch2b.conv.conv_offset.{weight,bias}``) and ``norm_eval`` (its BN
training semantics, SEMANTICS_MMDET 3.1 / Quirk M11).
"""
from typing import List, Optional

import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import KaimingNormal
from paddle.regularizer import L2Decay

from ...core import register
from ...errors import ConfigError
from ..layers import Conv2D, DeformableConvV1, add, inference, relu
from ..shape_spec import ShapeSpec

__all__ = ["ResNet", "ConvNormLayer"]

BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class ConvNormLayer(nn.Layer):
    """Conv (no bias) + BatchNorm (+ ReLU).

    ``freeze_norm``: BN is a fixed affine transform (running statistics, frozen weight/bias).
    ``norm_eval`` (with ``freeze_norm=False``): running statistics are used and never updated, in train
    and eval mode alike, while weight/bias keep training (mmdetection's ``norm_eval=True``); no batch
    statistics are ever computed, so plain BN serves for ``sync_bn`` too.
    ``dcn_v1``: the conv is a deformable conv v1 with its own zero-initialised offset conv.
    """

    def __init__(self, ch_in, ch_out, filter_size, stride, groups=1, act=None, norm_type="bn",
                 norm_decay=0.0, freeze_norm=True, lr=1.0, norm_eval=False, dcn_v1=False):
        super().__init__()
        if norm_type not in ("bn", "sync_bn"):
            raise ConfigError("ResNet.norm_type must be 'bn' or 'sync_bn', got {!r}".format(norm_type))
        self.act = act
        weight_attr = ParamAttr(learning_rate=lr, initializer=KaimingNormal())
        padding = (filter_size - 1) // 2
        if dcn_v1:
            self.conv = DeformableConvV1(ch_in, ch_out, filter_size, stride=stride, padding=padding, groups=groups,
                                         weight_attr=weight_attr, lr=lr)
        else:
            self.conv = Conv2D(ch_in, ch_out, filter_size, stride=stride, padding=padding, groups=groups,
                                  weight_attr=weight_attr, bias_attr=False)
        norm_lr = 0.0 if freeze_norm else lr
        w_attr = ParamAttr(learning_rate=norm_lr, regularizer=L2Decay(norm_decay), trainable=not freeze_norm)
        b_attr = ParamAttr(learning_rate=norm_lr, regularizer=L2Decay(norm_decay), trainable=not freeze_norm)
        global_stats = True if (freeze_norm or norm_eval) else None
        bn_cls = nn.SyncBatchNorm if norm_type == "sync_bn" and not norm_eval else nn.BatchNorm2D
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

    def __init__(self, ch_in, ch_out, stride, shortcut, variant="b", groups=1, base_width=64, dcn_v1=False,
                 **norm):
        super().__init__()
        stride1, stride2 = (stride, 1) if variant == "a" else (1, stride)
        width = int(ch_out * (base_width / 64.0)) * groups
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out * self.expansion, stride, variant, **norm)
        self.branch2a = ConvNormLayer(ch_in, width, 1, stride1, act="relu", **norm)
        self.branch2b = ConvNormLayer(width, width, 3, stride2, groups=groups, act="relu", dcn_v1=dcn_v1, **norm)
        self.branch2c = ConvNormLayer(width, ch_out * self.expansion, 1, 1, **norm)

    def forward(self, x):
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        short = x if self.shortcut else self.short(x)
        fast = inference(self)
        return relu(add(out, short, fast), fast)


class BasicBlock(nn.Layer):
    expansion = 1

    def __init__(self, ch_in, ch_out, stride, shortcut, variant="b", groups=1, base_width=64, dcn_v1=False,
                 **norm):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ConfigError("ResNet depth 18/34 supports only groups=1 and base_width=64")
        if dcn_v1:
            raise ConfigError("ResNet.dcn_v1_stages needs depth >= 50 (bottleneck blocks), as in mmdetection")
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
    ``groups``/``base_width``: ResNeXt (e.g. 32/4 or 64/4 for X-101 32x4d / 64x4d).
    Extensions of PaddleDetection's options:
    ``ch_out_list`` narrows the stages, e.g. for a small demo network (default ``[64, 128, 256, 512]``).
    ``dcn_v1_stages`` (stage indices like ``dcn_v2_stages``, 0 = res2; ``[1, 2, 3]`` = mmdetection's
    "dconv_c3-c5"): every block of those stages gets a deformable v1 3x3 conv (its own offset conv,
    zero-initialised, one deformable group), including the stride-2 first blocks.
    ``norm_eval`` (requires ``freeze_norm: false``): mmdetection's BN training semantics (Quirk M11):
    every BN uses and keeps its running statistics, while the BN weight/bias of the stages not frozen
    by ``freeze_at`` train. mmdetection's ``frozen_stages=1, norm_eval=True`` is
    ``freeze_norm: false, freeze_at: 0, norm_eval: true``.
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
        dcn_v1_stages: List[int] = (-1,),
        norm_eval: bool = False,
    ):
        super().__init__()
        if depth not in BLOCKS_PER_DEPTH:
            raise ConfigError("ResNet.depth must be one of {}, got {}".format(sorted(BLOCKS_PER_DEPTH), depth))
        if variant not in ("a", "b", "c", "d"):
            raise ConfigError("ResNet.variant must be one of a, b, c, d; got {!r}".format(variant))
        if not 1 <= num_stages <= 4:
            raise ConfigError("ResNet.num_stages must be in 1..4, got {}".format(num_stages))
        if list(dcn_v2_stages) not in ([-1], []):
            raise ConfigError("ResNet.dcn_v2_stages {}: modulated deformable convolution (DCNv2) is not supported, "
                             "use [-1] (mmdetection's DCN is v1: ResNet.dcn_v1_stages)".format(list(dcn_v2_stages)))
        dcn_v1_stages = [] if list(dcn_v1_stages) in ([-1], []) else list(dcn_v1_stages)
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < num_stages for i in dcn_v1_stages):
            raise ConfigError("ResNet.dcn_v1_stages {} must list stage indices 0..{} (0 = res2) or be [-1]".format(
                dcn_v1_stages, num_stages - 1))
        if norm_eval and freeze_norm:
            raise ConfigError("ResNet.norm_eval: true needs freeze_norm: false (freeze_norm already fixes the "
                             "statistics and also freezes the BN weights)")
        if std_senet:
            raise ConfigError("ResNet.std_senet is not supported")
        return_idx = [int(i) for i in return_idx]
        if any(i < 0 or i >= num_stages for i in return_idx):
            raise ConfigError("ResNet.return_idx {} must index stages 0..{}".format(return_idx, num_stages - 1))
        if len(lr_mult_list) != 4:
            raise ConfigError("ResNet.lr_mult_list needs 4 values, got {}".format(list(lr_mult_list)))
        ch_out_list = list(ch_out_list) if ch_out_list is not None else [64, 128, 256, 512]
        if len(ch_out_list) != 4:
            raise ConfigError("ResNet.ch_out_list needs 4 values, got {}".format(ch_out_list))
        self.depth = depth
        self.variant = variant
        self.return_idx = return_idx
        self.num_stages = num_stages
        self.freeze_at = freeze_at
        self.dcn_v1_stages = dcn_v1_stages
        norm = dict(norm_type=norm_type, norm_decay=norm_decay, freeze_norm=freeze_norm, norm_eval=norm_eval)

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
                          variant=variant, groups=groups, base_width=base_width, dcn_v1=i in dcn_v1_stages,
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
