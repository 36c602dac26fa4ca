"""ResNet / ResNeXt / DCN backbones in mmdetection's layouts (SEMANTICS_MMDET.md 3.1-3.3) and mmdetection's BN
training semantics (``norm_eval``, Quirk M11).

Layouts: every backbone parameter of mmdetection's HTC checkpoints (``keys_*.json``) maps, through the agreed
name mapping (notes/TEAM.md), to exactly one parameter of the same shape here, and nothing is left over.
"""
import json
import os
import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppdet_htc.core import ConfigError, create, load_config
from ppdet_htc.modeling.backbones.resnet import BLOCKS_PER_DEPTH, ResNet, _block_name
from ppdet_htc.modeling.layers import DeformableConvV1

MMDET_BACKBONES = {
    "htc_r50_fpn_1x_coco": dict(depth=50),
    "htc_r101_fpn_20e_coco": dict(depth=101),
    "htc_x101_32x4d_fpn_16x1_20e_coco": dict(depth=101, groups=32, base_width=4),
    "htc_x101_64x4d_fpn_16x1_20e_coco": dict(depth=101, groups=64, base_width=4),
    "htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco": dict(depth=101, groups=64, base_width=4,
                                                                         dcn_v1_stages=[1, 2, 3]),
}
_BN = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
_CONV = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "bn1": "branch2a", "bn2": "branch2b",
         "bn3": "branch2c"}


def mmdet_backbone_key(name, depth):
    """mmdetection ``backbone.*`` key -> ResNet parameter name (TEAM.md mapping); None for num_batches_tracked."""
    if name.endswith("num_batches_tracked"):
        return None
    name = name[len("backbone."):]
    if name == "conv1.weight":
        return "conv1.conv1.conv.weight"
    m = re.fullmatch(r"bn1\.(\w+)", name)
    if m:
        return "conv1.conv1.norm." + _BN[m.group(1)]
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", name)
    stage, block, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    prefix = "res{}.{}.".format(stage + 1, _block_name(stage + 1, BLOCKS_PER_DEPTH[depth][stage - 1], block))
    m = re.fullmatch(r"(conv[123])\.weight", rest)
    if m:
        return prefix + _CONV[m.group(1)] + ".conv.weight"
    m = re.fullmatch(r"conv2(?:\.conv_offset|_offset)\.(weight|bias)", rest)
    if m:
        return prefix + "branch2b.conv.conv_offset." + m.group(1)
    m = re.fullmatch(r"(bn[123])\.(\w+)", rest)
    if m:
        return prefix + _CONV[m.group(1)] + ".norm." + _BN[m.group(2)]
    m = re.fullmatch(r"downsample\.0\.weight", rest)
    if m:
        return prefix + "short.conv.weight"
    m = re.fullmatch(r"downsample\.1\.(\w+)", rest)
    return prefix + "short.norm." + _BN[m.group(1)]


@pytest.mark.parametrize("name", sorted(MMDET_BACKBONES))
def test_parameter_layout_matches_mmdetection(name, shared_reference):
    keys = json.load(open(os.path.join(shared_reference, "mmdet", "keys_{}.json".format(name))))
    kwargs = MMDET_BACKBONES[name]
    expected = {}
    for key, shape, _dtype in keys:
        if key.startswith("backbone."):
            mapped = mmdet_backbone_key(key, kwargs["depth"])
            if mapped is not None:
                assert mapped not in expected, key
                expected[mapped] = list(shape)
    model = ResNet(freeze_norm=False, freeze_at=0, norm_eval=True, **kwargs)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}
    assert any("conv_offset" in k for k in ours) == ("dcn_v1_stages" in kwargs)


def _dcn_layers(model):
    return {name: layer for name, layer in model.named_sublayers() if isinstance(layer, DeformableConvV1)}


def test_dcn_in_every_block_of_c3_to_c5_with_the_block_stride():
    model = ResNet(depth=50, dcn_v1_stages=[1, 2, 3], freeze_norm=False, ch_out_list=[8, 8, 16, 16])
    dcn = _dcn_layers(model)
    expected = ["res{}.{}.branch2b.conv".format(s, _block_name(s, n, b))
                for s, n in zip((3, 4, 5), BLOCKS_PER_DEPTH[50][1:]) for b in range(n)]
    assert sorted(dcn) == sorted(expected)
    for name, layer in dcn.items():
        first = name.split(".")[1].endswith("a")
        assert layer.stride == (2 if first else 1) and layer.padding == 1 and layer.deformable_groups == 1
        assert list(layer.conv_offset.weight.shape)[:2] == [18, layer.weight.shape[0]]
    # variant b ("pytorch" style): the stride sits on the 3x3 conv, the 1x1 convs have stride 1
    assert list(model.res2.res2a.branch2b.conv._stride) == [1, 1]
    assert list(model.res3.res3a.branch2a.conv._stride) == [1, 1]


def test_zero_initialised_dcn_backbone_equals_the_plain_one():
    """A fresh DCN backbone (offsets 0) computes exactly what the plain ResNeXt with the same weights computes."""
    paddle.seed(0)
    kw = dict(depth=50, groups=2, base_width=32, ch_out_list=[16, 32, 32, 64], freeze_norm=True)
    dcn = ResNet(dcn_v1_stages=[1, 2, 3], **kw)
    plain = ResNet(**kw)
    state = {k: v for k, v in dcn.state_dict().items() if "conv_offset" not in k}
    missing, unexpected = plain.set_state_dict(state)
    assert not missing and not unexpected
    dcn.eval()
    plain.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(1, 3, 96, 64)).astype(np.float32))
    outs_dcn, outs_plain = dcn(x), plain(x)
    assert [o.shape for o in outs_dcn] == [[1, 64, 24, 16], [1, 128, 12, 8], [1, 128, 6, 4], [1, 256, 3, 2]]
    for a, b in zip(outs_dcn, outs_plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def _small_mmdet_style(**extra):
    return ResNet(depth=50, ch_out_list=[8, 8, 16, 16], freeze_norm=False, freeze_at=0, norm_eval=True, **extra)


def test_norm_eval_trainable_parameters():
    """mmdetection frozen_stages=1 + norm_eval: stem and res2 frozen; res3-res5 conv weights, offset convs
    and BN weight/bias train; BN statistics are never parameters that train."""
    model = _small_mmdet_style(dcn_v1_stages=[1, 2, 3])
    for name, p in model.named_parameters():
        frozen = name.startswith(("conv1.", "res2.")) or name.endswith(("_mean", "_variance"))
        assert p.stop_gradient == frozen, name
    names = {n for n, p in model.named_parameters() if not p.stop_gradient}
    assert "res3.res3a.branch2b.norm.weight" in names and "res5.res5c.short.norm.bias" not in names
    assert "res3.res3a.branch2b.conv.conv_offset.bias" in names and "res5.res5a.short.norm.bias" in names


def test_norm_eval_keeps_statistics_and_trains_affine():
    paddle.seed(1)
    model = _small_mmdet_style()
    rng = np.random.default_rng(1)
    for name, value in model.state_dict().items():  # non-trivial statistics
        if name.endswith("_mean"):
            value.set_value(rng.normal(0, 0.1, value.shape).astype(np.float32))
        elif name.endswith("_variance"):
            value.set_value(rng.uniform(0.5, 2.0, value.shape).astype(np.float32))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    x = paddle.to_tensor(rng.normal(size=(2, 3, 64, 64)).astype(np.float32))
    model.eval()
    eval_out = [o.numpy() for o in model(x)]
    model.train()
    train_out = model(x)
    for a, b in zip(train_out, eval_out):  # running statistics in train mode too: same outputs
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-5)
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=[p for p in model.parameters() if not p.stop_gradient])
    sum(o.mean() for o in train_out).backward()
    opt.step()
    after = model.state_dict()
    stats = [k for k in before if k.endswith(("_mean", "_variance"))]
    assert all(np.array_equal(before[k], after[k].numpy()) for k in stats)
    moved = lambda k: not np.array_equal(before[k], after[k].numpy())  # noqa: E731
    assert moved("res3.res3a.branch2b.norm.weight") and moved("res5.res5c.branch2c.norm.bias")
    assert moved("res4.res4a.branch2b.conv.weight")
    assert not moved("res2.res2a.branch2b.norm.weight") and not moved("conv1.conv1.norm.bias")
    assert not moved("conv1.conv1.conv.weight")


def test_norm_eval_with_sync_bn_uses_plain_bn():
    model = _small_mmdet_style(norm_type="sync_bn")
    assert not any(isinstance(layer, paddle.nn.SyncBatchNorm) for layer in model.sublayers())


@pytest.mark.parametrize("kwargs, message", [
    (dict(dcn_v2_stages=[1, 2, 3]), r"dcn_v2_stages \[1, 2, 3\].*DCNv2.*not supported.*dcn_v1_stages"),
    (dict(dcn_v1_stages=[1, 4]), r"dcn_v1_stages \[1, 4\] must list stage indices 0..3"),
    (dict(dcn_v1_stages=[1], depth=18), r"dcn_v1_stages needs depth >= 50"),
    (dict(norm_eval=True, freeze_norm=True), r"norm_eval: true needs freeze_norm: false"),
])
def test_bad_options_say_what_is_wrong(kwargs, message):
    with pytest.raises(ConfigError, match=message):  # a user error: one line from the CLI
        ResNet(**kwargs)


def test_config_keys(tmp_path):
    path = tmp_path / "x101_dcn.yml"
    path.write_text("ResNet: {depth: 50, groups: 2, base_width: 32, ch_out_list: [8, 8, 16, 16], freeze_norm: false,\n"
                    "         freeze_at: 0, norm_eval: true, dcn_v1_stages: [1, 2, 3]}\n")
    model = create("ResNet", load_config(str(path)))
    assert len(_dcn_layers(model)) == 13 and model.res3.res3a.branch2b.conv.groups == 2
    path.write_text("ResNet: {norm_eval: 1}\n")
    with pytest.raises(ConfigError, match="expected bool"):
        create("ResNet", load_config(str(path)))
