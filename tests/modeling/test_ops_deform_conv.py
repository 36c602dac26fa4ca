"""ops.deform_conv2d (Paddle's fused DCN v1 kernel) vs a NumPy transcription of mmcv's deformable convolution
(SEMANTICS_MMDET.md 3.3): offset channel layout (y then x per tap), bilinear sampling with the outside rules,
stride 1 and 2, groups and deformable groups, and the offset gradient against finite differences.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppdet_htc.modeling import ops

from . import numpy_ref_mmcv as ref


def _out_hw(h, w, k, stride, pad, dil=1):
    return (h + 2 * pad - dil * (k - 1) - 1) // stride + 1, (w + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _run(x, offset, weight, **kw):
    return ops.deform_conv2d(paddle.to_tensor(x), paddle.to_tensor(offset), paddle.to_tensor(weight), **kw).numpy()


@pytest.mark.parametrize("stride, groups, deformable_groups, dilation", [
    (1, 1, 1, 1), (2, 1, 1, 1), (1, 4, 1, 1), (2, 2, 1, 1), (1, 2, 2, 1), (2, 1, 1, 2)])
def test_random_offsets_match_numpy(stride, groups, deformable_groups, dilation):
    """Offsets of a few pixels: many taps sample fully or partly outside the 7x9 input."""
    rng = np.random.default_rng(stride * 100 + groups * 10 + deformable_groups + dilation)
    B, C, H, W, O, k, pad = 2, 8, 7, 9, 8, 3, dilation
    x = rng.normal(size=(B, C, H, W)).astype(np.float32)
    weight = rng.normal(size=(O, C // groups, k, k)).astype(np.float32)
    Ho, Wo = _out_hw(H, W, k, stride, pad, dilation)
    offset = rng.normal(0, 3, size=(B, 2 * deformable_groups * k * k, Ho, Wo)).astype(np.float32)
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=groups, deformable_groups=deformable_groups)
    got = _run(x, offset, weight, **kw)
    want = ref.deform_conv2d_mmcv(x, offset, weight, **kw)
    assert got.shape == want.shape == (B, O, Ho, Wo)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_sampling_at_and_beyond_the_border(stride):
    """Offsets placing samples exactly on -1, between -1 and 0, on H-1, between H-1 and H, exactly on H, and
    far outside (every case of the rule: zero outside (-1, H), corner taps outside the image count 0)."""
    rng = np.random.default_rng(11 + stride)
    B, C, H, W, O = 1, 4, 6, 8, 4
    x = rng.normal(size=(B, C, H, W)).astype(np.float32)
    weight = rng.normal(size=(O, C // 2, 3, 3)).astype(np.float32)
    Ho, Wo = _out_hw(H, W, 3, stride, 1)
    values = np.array([-1, -0.75, -0.5, -0.25, 0, 0.5, 1, -3, -4, 4, 5, 5.5, 6, 6.25, 7, 7.5, 8, 8.5, 9, 10,
                       -1.0000001, -0.9999999, 20, -20], np.float32)
    offset = rng.choice(values, size=(B, 18, Ho, Wo)).astype(np.float32)
    got = _run(x, offset, weight, stride=stride, padding=1, groups=2)
    want = ref.deform_conv2d_mmcv(x, offset, weight, stride=stride, padding=1, groups=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_channel_layout_is_y_then_x_per_tap():
    """Moving only tap 0's channel 0 by +1 must shift that tap's sample one row down (mmcv: y first);
    the swapped reading (x first) gives a different result, so the test tells the two apart."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 3, 5, 5)).astype(np.float32)
    weight = np.zeros((1, 3, 3, 3), np.float32)
    weight[0, :, 0, 0] = 1.0  # only tap (0, 0)
    offset = np.zeros((1, 18, 5, 5), np.float32)
    offset[0, 0] = 1.0  # dy of tap 0
    got = _run(x, offset, weight, padding=1)
    # tap (0,0) of output (ho, wo) reads input (ho - 1 + 1, wo - 1) = (ho, wo - 1)
    want = np.zeros((5, 5), np.float32)
    want[:, 1:] = x[0, :, :, :-1].sum(0)
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-6, atol=1e-6)
    swapped = offset.reshape(1, 9, 2, 5, 5)[:, :, ::-1].reshape(1, 18, 5, 5)
    assert np.abs(_run(x, np.ascontiguousarray(swapped), weight, padding=1)[0, 0] - want).max() > 0.1


@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 4)])
def test_zero_offsets_equal_plain_convolution(stride, groups):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 8, 11, 10)).astype(np.float32)
    weight = rng.normal(size=(16, 8 // groups, 3, 3)).astype(np.float32)
    Ho, Wo = _out_hw(11, 10, 3, stride, 1)
    got = _run(x, np.zeros((2, 18, Ho, Wo), np.float32), weight, stride=stride, padding=1, groups=groups)
    plain = F.conv2d(paddle.to_tensor(x), paddle.to_tensor(weight), stride=stride, padding=1, groups=groups).numpy()
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5)


def test_offset_gradient_matches_finite_differences():
    """Gradient w.r.t. offsets and input (float64 kernel) vs central differences of the NumPy reference,
    at offsets away from integer positions (where the bilinear interpolation is differentiable)."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(1, 2, 5, 5))
    weight = rng.normal(size=(3, 2, 3, 3))
    offset = rng.uniform(-1.5, 1.5, size=(1, 18, 3, 3))
    offset = np.where(np.abs(offset - np.round(offset)) < 0.05, offset + 0.1, offset)
    cot = rng.normal(size=(1, 3, 3, 3))  # random cotangent: loss = sum(out * cot)
    xt = paddle.to_tensor(x, stop_gradient=False)
    ot = paddle.to_tensor(offset, stop_gradient=False)
    out = ops.deform_conv2d(xt, ot, paddle.to_tensor(weight), stride=2, padding=1)
    (out * paddle.to_tensor(cot)).sum().backward()

    def loss(off):
        return float((ref.deform_conv2d_mmcv(x, off, weight, stride=2, padding=1) * cot).sum())

    eps = 1e-6
    num = np.zeros_like(offset)
    for idx in np.ndindex(*offset.shape):
        plus, minus = offset.copy(), offset.copy()
        plus[idx] += eps
        minus[idx] -= eps
        num[idx] = (loss(plus) - loss(minus)) / (2 * eps)
    np.testing.assert_allclose(ot.grad.numpy(), num, rtol=1e-5, atol=1e-6)
    assert np.abs(xt.grad.numpy()).sum() > 0
