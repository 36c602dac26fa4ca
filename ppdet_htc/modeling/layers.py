"""Small building blocks shared by heads: a conv wrapper whose parameters live under ``.conv``."""
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Constant, KaimingNormal, KaimingUniform


class ConvAct(nn.Layer):
    """``Conv2D`` (with bias, 'same' padding) stored as ``self.conv``, then an optional ReLU.

    PaddleDetection wraps head convolutions this way, so checkpoint keys end in ``.conv.weight``.
    ``fan_in`` overrides the Kaiming fan-in used to initialise the weight (normal or uniform).
    """

    def __init__(self, ch_in, ch_out, kernel_size, relu=True, fan_in=None, uniform=False):
        super().__init__()
        self.conv = nn.Conv2D(
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
        return nn.functional.relu(x) if self.relu else x
