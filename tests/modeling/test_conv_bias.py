"""layers.Conv2D / Conv2DTranspose: the fast channel-bias addition gives Paddle's own layers' outputs bit for bit,
the same input and weight gradients and the bias gradient of a NumPy reference; same state-dict keys, empty
batches, and traced programs keep Paddle's own conv + bias."""
import numpy as np
import paddle
import pytest

from ppdet_htc.modeling.layers import Conv2D, Conv2DTranspose, add_channel_bias


def _pair(cls, ref_cls, *args, **kw):
    """Our layer and Paddle's with the same (random, non-zero) parameters."""
    ours, theirs = cls(*args, **kw), ref_cls(*args, **kw)
    rng = np.random.default_rng(1)
    state = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in theirs.state_dict().items()}
    ours.set_state_dict(state)
    theirs.set_state_dict(state)
    return ours, theirs


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (3, 4, 1, 1), (1, 6, 13, 2)])
def test_add_channel_bias_matches_numpy(shape):
    rng = np.random.default_rng(0)
    x, b = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape[1]).astype(np.float32)
    xt, bt = paddle.to_tensor(x, stop_gradient=False), paddle.to_tensor(b, stop_gradient=False)
    y = add_channel_bias(xt, bt)
    np.testing.assert_array_equal(y.numpy(), x + b.reshape(1, -1, 1, 1))
    g = rng.normal(size=shape).astype(np.float32)
    y.backward(paddle.to_tensor(g))
    np.testing.assert_array_equal(xt.grad.numpy(), g)
    np.testing.assert_allclose(bt.grad.numpy(), g.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, ref_cls, args, kw, in_shape", [
    (Conv2D, paddle.nn.Conv2D, (6, 8, 3), dict(padding=1), (2, 6, 11, 9)),
    (Conv2D, paddle.nn.Conv2D, (8, 4, 3), dict(stride=2, padding=1, groups=2), (3, 8, 10, 7)),
    (Conv2D, paddle.nn.Conv2D, (6, 5, 1), {}, (4, 6, 5, 5)),
    (Conv2DTranspose, paddle.nn.Conv2DTranspose, (6, 4, 2), dict(stride=2), (3, 6, 7, 7)),
])
def test_same_outputs_and_gradients_as_paddle_layers(cls, ref_cls, args, kw, in_shape):
    ours, theirs = _pair(cls, ref_cls, *args, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = np.random.default_rng(2).normal(size=in_shape).astype(np.float32)
    outs, grads = [], []
    for layer in (ours, theirs):
        xt = paddle.to_tensor(x, stop_gradient=False)
        y = layer(xt)
        (y * y).sum().backward()
        outs.append(y.numpy())
        grads.append((xt.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()))
        layer.clear_gradients()
    np.testing.assert_array_equal(outs[0], outs[1])
    for a, b in zip(grads[0], grads[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_empty_batch_and_no_bias():
    conv, ref = _pair(Conv2D, paddle.nn.Conv2D, 3, 4, 3, padding=1)
    try:
        want = ref(paddle.zeros([0, 3, 5, 5])).shape
    except ValueError:  # Paddle 2.6's conv refuses empty inputs: so does ours
        with pytest.raises(ValueError):
            conv(paddle.zeros([0, 3, 5, 5]))
    else:
        assert conv(paddle.zeros([0, 3, 5, 5])).shape == want == [0, 4, 5, 5]
    plain = Conv2D(3, 4, 3, padding=1, bias_attr=False)
    assert plain.bias is None and plain(paddle.ones([1, 3, 5, 5])).shape == [1, 4, 5, 5]


def test_traced_program_uses_paddle_conv_bias():
    ours, theirs = _pair(Conv2D, paddle.nn.Conv2D, 3, 4, 3, padding=1)
    static = paddle.jit.to_static(ours, input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32")],
                                  full_graph=True)
    x = paddle.to_tensor(np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32))
    np.testing.assert_allclose(static(x).numpy(), theirs(x).numpy(), rtol=1e-6, atol=1e-6)
    ops = [op.name() if callable(getattr(op, "name", None)) else op.type
           for op in static.forward.concrete_program.main_program.global_block().ops]
    assert any("conv2d" in str(o) for o in ops) and not any("tile" in str(o) for o in ops), ops
