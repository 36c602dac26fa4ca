"""Fold inference-mode BatchNorm into the convolution before it (a pass over a built model, for inference).

In eval mode (or with frozen statistics) ``BN(conv(x)) = conv'(x)`` with
``w' = w * g / sqrt(var + eps)`` per output channel and ``b' = beta + (b - mean) * g / sqrt(var + eps)``.
Folding removes one full pass over every backbone feature map per layer. Results change only by float
rounding. The folded model has different parameters (each folded conv gains a ``bias``, each BN becomes an
identity), so fold a model after loading its weights and do not save or train it afterwards.
"""
import paddle
import paddle.nn as nn

__all__ = ["fold_batch_norm", "foldable_pairs"]

_BN_TYPES = (nn.BatchNorm2D, nn.SyncBatchNorm, nn.BatchNorm)


def foldable_pairs(model):
    """``[(layer, conv, norm)]`` for every ResNet ``ConvNormLayer`` (forward is ``norm(conv(x))``) whose conv is
    a plain ``Conv2D`` (deformable convolutions are left alone) and whose norm is a BatchNorm."""
    from .backbones.resnet import ConvNormLayer

    pairs = []
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, ConvNormLayer):
            conv, norm = getattr(layer, "conv", None), getattr(layer, "norm", None)
            if isinstance(conv, nn.Conv2D) and isinstance(norm, _BN_TYPES):
                pairs.append((layer, conv, norm))
    return pairs


@paddle.no_grad()
def fold_batch_norm(model):
    """Fold every foldable BatchNorm of ``model`` (which must be in eval mode) into its conv; returns the count."""
    if model.training:
        raise ValueError("fold_batch_norm: the model must be in eval mode (model.eval()); "
                         "training updates BatchNorm statistics")
    count = 0
    for layer, conv, norm in foldable_pairs(model):
        eps = float(getattr(norm, "_epsilon", 1e-5))
        mean = norm._mean.astype("float32")
        var = norm._variance.astype("float32")
        gamma = norm.weight.astype("float32") if norm.weight is not None else paddle.ones_like(mean)
        beta = norm.bias.astype("float32") if norm.bias is not None else paddle.zeros_like(mean)
        scale = gamma / paddle.sqrt(var + eps)
        w = conv.weight
        bias = conv.bias if conv.bias is not None else paddle.zeros_like(mean)
        new_w = (w.astype("float32") * scale.reshape([-1, 1, 1, 1])).astype(w.dtype)
        new_b = (beta + (bias.astype("float32") - mean) * scale).astype(w.dtype)
        w.set_value(new_w)
        if conv.bias is None:
            conv.bias = conv.create_parameter(shape=new_b.shape, dtype=w.dtype, is_bias=True)
        conv.bias.set_value(new_b)
        conv.bias.stop_gradient = True
        layer.norm = nn.Identity()
        count += 1
    return count
