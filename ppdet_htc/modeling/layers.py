"""Small building blocks shared by the model: convolutions with a fast bias addition, a conv wrapper whose
parameters live under ``.conv``, and mmdetection's deformable convolution (DCN v1) layer."""
import paddle
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Constant, KaimingNormal, KaimingUniform

from ..errors import ConfigError
from . import ops


def relu(x, inplace):
    """ReLU; in place at inference (``inplace``): on the CPU a fresh output tensor costs ~10x the math."""
    return nn.functional.relu_(x) if inplace else nn.functional.relu(x)


def add(x, y, inplace):
    """``x + y``, written into ``x`` at inference (``x`` must be a temporary nobody else uses)."""
    return x.add_(y) if inplace else x + y


def add_channel_bias(x, bias):
    """``x [N, C, ...] + bias [C]`` computed as ``x.reshape([N*C, -1]) + tile(bias, N)[:, None]``.

    The same sums, bit for bit, as ``x + bias.reshape([1, C, 1, 1])``, but Paddle's CPU kernels broadcast along
    the last axis about 3x faster than along the channel axis, forward and backward (the bias gradient is a
    row sum instead of a strided reduction): the bias additions of the FPN, RPN, semantic and mask heads were
    ~12 % of a training step of the demo recipe and a large part of the exact path's time outside convolutions.
    """
    n, c = x.shape[0], x.shape[1]
    if 0 in x.shape:
        return x + bias.reshape([1, c] + [1] * (len(x.shape) - 2))
    y = x.reshape([n * c, -1]) + paddle.tile(bias, [n]).reshape([n * c, 1])
    return y.reshape(x.shape)


def _fast_bias(layer, x):
    """Whether ``layer`` (a conv with a bias) adds it with :func:`add_channel_bias`: in dynamic mode with NCHW
    data and known sizes. Traced programs keep the fused ``conv + bias`` pattern that Paddle Inference's passes
    fold into one kernel."""
    return (layer.bias is not None and paddle.in_dynamic_mode() and layer._data_format == "NCHW"
            and getattr(layer, "_padding_mode", "zeros") == "zeros")


class Conv2D(nn.Conv2D):
    """``paddle.nn.Conv2D`` (same parameters and state-dict keys) whose bias is added by :func:`add_channel_bias`."""

    def forward(self, x):
        if not _fast_bias(self, x):
            return nn.Conv2D.forward(self, x)  # not super(): Paddle 2.6 cannot trace it
        y = nn.functional.conv2d(x, self.weight, None, stride=self._stride, padding=self._padding,
                                 dilation=self._dilation, groups=self._groups, data_format=self._data_format)
        return add_channel_bias(y, self.bias)


class Conv2DTranspose(nn.Conv2DTranspose):
    """``paddle.nn.Conv2DTranspose`` whose bias is added by :func:`add_channel_bias`."""

    def forward(self, x, output_size=None):
        if not _fast_bias(self, x):
            return nn.Conv2DTranspose.forward(self, x, output_size)
        y = nn.functional.conv2d_transpose(
            x, self.weight, None, padding=self._padding,
            output_padding=self.output_padding if output_size is None else 0, stride=self._stride,
            dilation=self._dilation, groups=self._groups, output_size=output_size, data_format=self._data_format)
        return add_channel_bias(y, self.bias)


def upsample_nearest_2x(x):
    """Nearest-neighbour x2 upsampling written as reshape/expand (used in exported programs, where
    Paddle Inference's oneDNN backend cannot run the interpolation operators)."""
    b, c = paddle.shape(x)[0], paddle.shape(x)[1]
    h, w = paddle.shape(x)[2], paddle.shape(x)[3]
    y = x.unsqueeze(3).unsqueeze(5).expand([b, c, h, 2, w, 2])
    return y.reshape([b, c, h * 2, w * 2])


def _dim(x, i):
    """Size ``i`` of ``x``: a Python int when it is known while tracing (the output then keeps it in its static
    shape, which Paddle 2.6's static graph needs for the convolution that follows), else a tensor."""
    n = x.shape[i]
    return n if isinstance(n, int) and n >= 0 else paddle.shape(x)[i]


def resize_bilinear_align_corners(x, out_h, out_w):
    """Bilinear resize with ``align_corners=True`` as two plain 2-D matrix products with tent-weight matrices
    (exported programs; same math as ``F.interpolate(..., mode='bilinear', align_corners=True)``).

    2-D products, not the broadcast batched form ``matmul(W [n,m], X [B,C,m,k])``: Paddle Inference 3.3.1's
    oneDNN backend computes that one wrongly when ``X`` comes from a oneDNN convolution (the semantic head's
    output was off by up to 100 %).
    """

    def weights(n_in, n_out):
        dst = paddle.arange(n_out, dtype="float32")
        ratio = (n_in.astype("float32") - 1) / paddle.maximum(n_out.astype("float32") - 1, paddle.full([], 1.0))
        src = dst * ratio
        taps = paddle.arange(n_in, dtype="float32")
        return nn.functional.relu(1.0 - paddle.abs(src.unsqueeze(1) - taps.unsqueeze(0)))  # [n_out, n_in]

    shape = paddle.shape(x)
    b, c, h, w = _dim(x, 0), _dim(x, 1), shape[2], shape[3]
    y = paddle.matmul(x.reshape([-1, w]), weights(w, out_w), transpose_y=True)  # [B*C*H, out_w]
    y = y.reshape([b, c, h, out_w]).transpose([0, 1, 3, 2]).reshape([-1, h])  # [B*C*out_w, H]
    y = paddle.matmul(y, weights(h, out_h), transpose_y=True)  # [B*C*out_w, out_h]
    return y.reshape([b, c, out_w, out_h]).transpose([0, 1, 3, 2])


def inference(layer):
    """In-place ops are safe: dygraph, eval mode and no gradient being recorded (exported programs get
    their memory reuse from the executor)."""
    return paddle.in_dynamic_mode() and not layer.training and not paddle.is_grad_enabled()


class ConvAct(nn.Layer):
    """``Conv2D`` (with bias, 'same' padding) stored as ``self.conv``, then an optional ReLU.

    PaddleDetection wraps head convolutions this way, so checkpoint keys end in ``.conv.weight``.
    ``fan_in`` overrides the Kaiming fan-in used to initialise the weight (normal or uniform).
    """

    def __init__(self, ch_in, ch_out, kernel_size, relu=True, fan_in=None, uniform=False):
        super().__init__()
        self.conv = Conv2D(
            ch_in,
            ch_out,
            kernel_size,
            padding=(kernel_size - 1) // 2,
            weight_attr=ParamAttr(initializer=(KaimingUniform if uniform else KaimingNormal)(fan_in=fan_in)),
            bias_attr=ParamAttr(initializer=Constant(0.0)),
        )
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        return relu(x, inference(self)) if self.relu else x


class DeformableConvV1(nn.Layer):
    """Deformable convolution v1 that predicts its own offsets (mmcv's ``DeformConv2dPack``, mmdetection's ``DCN``).

    ``offset = conv_offset(x)``: a plain ``Conv2D(ch_in -> 2*deformable_groups*k*k, k)`` with bias and the
    stride/padding/dilation of the main convolution, initialised to zero, so a fresh layer is exactly the
    ordinary convolution and learns to deform from there. The main weight ``weight [ch_out, ch_in/groups,
    k, k]`` has no bias. Offsets use mmcv's channel layout (see :func:`ops.deform_conv2d`), so mmdetection
    checkpoints load unchanged: ``conv2.weight`` -> ``weight``, ``conv2.conv_offset.*`` -> ``conv_offset.*``.
    ``weight_attr`` is the main weight's ``ParamAttr``; ``lr`` the learning-rate multiplier of the offsets.
    """

    def __init__(self, ch_in, ch_out, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 deformable_groups=1, weight_attr=None, lr=1.0):
        super().__init__()
        if ch_in % groups or ch_out % groups:
            raise ConfigError("DeformableConvV1: channels {} -> {} are not divisible by groups={}".format(
                ch_in, ch_out, groups))
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.deformable_groups = groups, deformable_groups
        self.weight = self.create_parameter(
            [ch_out, ch_in // groups, kernel_size, kernel_size],
            attr=weight_attr if weight_attr is not None else ParamAttr(initializer=KaimingNormal()))
        zero = dict(learning_rate=lr, initializer=Constant(0.0))
        self.conv_offset = Conv2D(
            ch_in, 2 * deformable_groups * kernel_size * kernel_size, kernel_size, stride=stride,
            padding=padding, dilation=dilation, weight_attr=ParamAttr(**zero), bias_attr=ParamAttr(**zero))

    def forward(self, x):
        return ops.deform_conv2d(x, self.conv_offset(x), self.weight, stride=self.stride, padding=self.padding,
                                 dilation=self.dilation, groups=self.groups,
                                 deformable_groups=self.deformable_groups)
