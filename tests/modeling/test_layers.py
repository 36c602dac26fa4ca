"""layers.DeformableConvV1 (mmdetection's DCN): parameter layout, zero-initialised offsets, and that the offset
branch trains (gradients reach ``conv_offset`` and fitting a shifted target works); the exported programs'
bilinear resize equals ``F.interpolate`` (its oneDNN behaviour: tests/engine/test_runtimes.py)."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppdet_htc.modeling.layers import DeformableConvV1, resize_bilinear_align_corners


@pytest.mark.parametrize("in_hw, out_hw", [((6, 9), (11, 17)), ((13, 8), (5, 4)), ((1, 7), (3, 1)), ((5, 5), (5, 5))])
def test_resize_bilinear_align_corners_equals_interpolate(in_hw, out_hw):
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 3) + in_hw).astype(np.float32))
    want = F.interpolate(x, size=list(out_hw), mode="bilinear", align_corners=True)
    got = resize_bilinear_align_corners(x, paddle.full([], out_hw[0], "int32"), paddle.full([], out_hw[1], "int32"))
    assert list(got.shape) == [2, 3] + list(out_hw)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)

from . import numpy_ref_mmcv as ref


def test_parameters_and_zero_offsets():
    layer = DeformableConvV1(8, 16, 3, stride=2, padding=1, groups=4)
    shapes = {k: list(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"weight": [16, 2, 3, 3], "conv_offset.weight": [18, 8, 3, 3], "conv_offset.bias": [18]}
    assert not np.any(layer.conv_offset.weight.numpy()) and not np.any(layer.conv_offset.bias.numpy())
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 8, 9, 12)).astype(np.float32))
    plain = F.conv2d(x, layer.weight, stride=2, padding=1, groups=4)
    np.testing.assert_allclose(layer(x).numpy(), plain.numpy(), rtol=1e-5, atol=1e-5)


def test_loaded_offsets_give_mmcv_output():
    """With a non-zero offset conv the layer is mmcv's DeformConv2dPack: offsets = conv_offset(x), then DCN."""
    rng = np.random.default_rng(1)
    layer = DeformableConvV1(4, 6, 3, stride=2, padding=1, groups=2)
    layer.conv_offset.weight.set_value(rng.normal(0, 0.3, size=(18, 4, 3, 3)).astype(np.float32))
    layer.conv_offset.bias.set_value(rng.normal(0, 1.0, size=(18,)).astype(np.float32))
    x = rng.normal(size=(1, 4, 7, 8)).astype(np.float32)
    offset = F.conv2d(paddle.to_tensor(x), layer.conv_offset.weight, layer.conv_offset.bias, stride=2, padding=1)
    want = ref.deform_conv2d_mmcv(x, offset.numpy(), layer.weight.numpy(), stride=2, padding=1, groups=2)
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), want, rtol=1e-5, atol=2e-5)


def test_offset_branch_trains():
    """Gradients reach both offset parameters; a student with zero offsets learns (through the offset bias) to
    match a teacher whose offsets shift every tap by (0.6, 0.3) px. (The shift stays within one pixel cell:
    bilinear sampling is piecewise, so from offset 0 the gradient only sees the cell towards +y, +x.)"""
    paddle.seed(3)
    rng = np.random.default_rng(3)
    teacher = DeformableConvV1(3, 4, 3, padding=1)
    student = DeformableConvV1(3, 4, 3, padding=1)
    student.weight.set_value(teacher.weight.numpy())
    teacher.conv_offset.bias.set_value(np.tile(np.array([0.6, 0.3], np.float32), 9))
    x = paddle.to_tensor(rng.normal(size=(4, 3, 12, 12)).astype(np.float32))
    target = teacher(x).detach()
    opt = paddle.optimizer.Adam(learning_rate=0.03, parameters=[student.conv_offset.bias])
    losses = []
    for step in range(60):
        loss = F.mse_loss(student(x), target)
        loss.backward()
        if step == 0:
            assert np.abs(student.conv_offset.weight.grad.numpy()).sum() > 0
            assert np.abs(student.conv_offset.bias.grad.numpy()).sum() > 0
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0]
    bias = student.conv_offset.bias.numpy().reshape(9, 2).mean(0)
    np.testing.assert_allclose(bias, [0.6, 0.3], atol=0.1)
