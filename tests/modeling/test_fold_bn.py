"""BatchNorm folding: a folded ResNet gives the unfolded one's features (float rounding only)."""
import numpy as np
import paddle
import pytest

from ppdet_htc.modeling.backbones.resnet import ResNet
from ppdet_htc.modeling.fold_bn import fold_batch_norm, foldable_pairs


def _randomise_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for _, _, norm in foldable_pairs(model):
        c = norm._mean.shape[0]
        norm._mean.set_value(rng.normal(0, 0.5, c).astype("float32"))
        norm._variance.set_value(rng.uniform(0.5, 2.0, c).astype("float32"))
        norm.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
        norm.bias.set_value(rng.normal(0, 0.2, c).astype("float32"))


@pytest.mark.parametrize("freeze_norm", [True, False])
def test_folded_resnet_matches_unfolded(freeze_norm):
    paddle.seed(3)
    model = ResNet(depth=18, variant="b", freeze_norm=freeze_norm, freeze_at=-1, return_idx=[0, 1, 2, 3])
    _randomise_bn(model)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(1).normal(0, 1, (1, 3, 64, 96)).astype("float32"))
    with paddle.no_grad():
        ref = [t.numpy() for t in model({"image": x})]
        n = fold_batch_norm(model)
        out = [t.numpy() for t in model({"image": x})]
    assert n > 0 and len(foldable_pairs(model)) == 0  # nothing left to fold afterwards
    for r, o in zip(ref, out):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()))
    assert not any(isinstance(l, paddle.nn.BatchNorm2D) for l in model.sublayers())


def test_fold_counts_every_conv_norm_pair_and_refuses_training_mode():
    model = ResNet(depth=18, variant="b", return_idx=[0, 1, 2, 3])
    expected = len(foldable_pairs(model))
    from ppdet_htc.modeling.backbones.resnet import ConvNormLayer

    assert expected == sum(isinstance(l, ConvNormLayer) for l in model.sublayers()) > 16
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(model)
    model.eval()
    assert fold_batch_norm(model) == expected
