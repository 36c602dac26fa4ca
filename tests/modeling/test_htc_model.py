"""Model-level tests: official checkpoint layouts, output contract, determinism, round trips."""
import json
import os

import numpy as np
import paddle
import pytest

from ppdet_htc.core import load_config
from ppdet_htc.engine.checkpoint import CheckpointMismatchError, load_weights, save_state_file
from ppdet_htc.engine.model_builder import build_model
from ppdet_htc.engine.outputs import split_outputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")


def random_state_from_keys(path, seed=0):
    """Random weights with the names/shapes of a ``ref_keys_*.json`` (BN variances positive)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape, _dtype in json.load(open(path)):
        if name.endswith("_variance"):
            arr = rng.uniform(0.5, 1.5, size=shape)
        elif name.endswith("_mean") or name.endswith(".bias"):
            arr = rng.normal(0, 0.01, size=shape)
        elif name.endswith("norm.weight"):
            arr = rng.uniform(0.5, 1.0, size=shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            if len(shape) == 2:  # Linear weights are [in, out]
                fan_in = shape[0]
            arr = rng.normal(0, np.sqrt(1.0 / max(fan_in, 1)), size=shape)
        state[name] = arr.astype(np.float32)
    return state


def make_inputs(h, w, batch=1, seed=0, im_shape=None, scale=1.0):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, size=(batch, 3, h, w)).astype(np.float32)
    ims = np.array([im_shape or (h, w)] * batch, dtype=np.float32)
    return {
        "image": paddle.to_tensor(image),
        "im_shape": paddle.to_tensor(ims),
        "scale_factor": paddle.to_tensor(np.full((batch, 2), scale, np.float32)),
    }


def pasted_masks(out):
    """The per-image pasted masks of a dynamic-mode output (result conversion)."""
    return [d["masks"] for d in split_outputs(out)]


def check_output_contract(out, batch, num_classes, mask_resolution=28):
    bbox, num, probs, shapes = out["bbox"], out["bbox_num"], out["mask_prob"], out["origin_shape"]
    assert bbox.shape[1] == 6 and bbox.dtype == paddle.float32
    assert num.shape == [batch] and int(num.sum()) == bbox.shape[0]
    assert probs.shape == [bbox.shape[0], mask_resolution, mask_resolution] and probs.dtype == paddle.float32
    np.testing.assert_array_equal(out["mask_box"].numpy(), bbox.numpy()[:, 2:])
    assert shapes.shape == [batch, 2]
    masks = pasted_masks(out)
    for m, n, hw in zip(masks, num.numpy(), shapes.numpy()):
        assert m.shape == (n, hw[0], hw[1]) and m.dtype == np.uint8
    b = bbox.numpy()
    if len(b):
        assert ((b[:, 0] >= 0) & (b[:, 0] < num_classes)).all()
        assert ((b[:, 1] > 0) & (b[:, 1] <= 1)).all()
        assert (b[:, 4] > b[:, 2]).all() and (b[:, 5] > b[:, 3]).all()  # no degenerate box survives
        h, w = shapes.numpy().max(axis=0)
        assert (b[:, 2:] >= 0).all() and (b[:, [4]] <= w).all() and (b[:, [5]] <= h).all()


@pytest.mark.parametrize(
    "config, keys",
    [
        ("configs/htc/htc_without_semantic_r50_fpn_1x_coco.yml", "ref_keys_htc_r50_fpn_1x_coco.json"),
        ("configs/htc/htc_r50_fpn_1x_coco.yml", "ref_keys_htc_r50_fpn_1x_coco_semantic.json"),
    ],
)
def test_official_layout_loads_strictly_and_runs_800x1333(config, keys, shared_reference, tmp_path):
    state = random_state_from_keys(os.path.join(shared_reference, keys))
    path = str(tmp_path / "official.pdparams")
    save_state_file(path, state)
    cfg = load_config(os.path.join(REPO, config), ["use_gpu=false"])
    model = build_model(cfg)
    report = load_weights(model, path)
    assert report == {"missing": [], "unexpected": [], "shape": []}
    model.eval()
    # A 640x480 image resized to 800x1067 and padded to 800x1088, as in SEMANTICS.md 1.3 (scale 5/3).
    inputs = make_inputs(800, 1344, im_shape=(800.0, 1333.0), scale=800.0 / 600)
    with paddle.no_grad():
        out = model(inputs)
    check_output_contract(out, 1, 80)
    assert out["origin_shape"].numpy().tolist() == [[600, 1000]]
    assert pasted_masks(out)[0].shape[1:] == (600, 1000)


def test_semantic_config_refuses_checkpoint_without_semantic_head(shared_reference, tmp_path):
    state = random_state_from_keys(os.path.join(shared_reference, "ref_keys_htc_r50_fpn_1x_coco.json"))
    path = str(tmp_path / "official.pdparams")
    save_state_file(path, state)
    model = build_model(load_config(os.path.join(REPO, "configs/htc/htc_r50_fpn_1x_coco.yml")))
    with pytest.raises(CheckpointMismatchError) as e:
        load_weights(model, path)
    msg = str(e.value)
    assert "fused_semantic_head.conv_logits.weight" in msg
    assert "htc_without_semantic_r50_fpn_1x_coco.yml" in msg


def tiny_model(overrides=None, seed=0):
    paddle.seed(seed)
    cfg = load_config(TINY, overrides)
    model = build_model(cfg)
    model.eval()
    return model


def test_tiny_model_is_deterministic_and_round_trips(tmp_path):
    model = tiny_model()
    inputs = make_inputs(128, 192)
    with paddle.no_grad():
        a = model(inputs)
        b = model(inputs)
    check_output_contract(a, 1, 5)
    assert a["bbox"].shape[0] > 0, "random tiny model should still produce low-score detections"
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    path = str(tmp_path / "tiny.pdparams")
    save_state_file(path, model.state_dict())
    other = tiny_model(seed=123)
    load_weights(other, path)
    with paddle.no_grad():
        c = other(inputs)
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), c[k].numpy())


def test_batch_of_two_equals_single_runs():
    model = tiny_model()
    x0 = make_inputs(128, 192, seed=1)
    x1 = make_inputs(128, 192, seed=2)
    both = {k: paddle.concat([x0[k], x1[k]]) for k in x0}
    with paddle.no_grad():
        o0, o1, ob = model(x0), model(x1), model(both)
    n0 = int(o0["bbox_num"][0])
    assert ob["bbox_num"].numpy().tolist() == [n0, int(o1["bbox_num"][0])]
    np.testing.assert_allclose(ob["bbox"].numpy()[:n0], o0["bbox"].numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ob["bbox"].numpy()[n0:], o1["bbox"].numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ob["mask_prob"].numpy(), np.concatenate([o0["mask_prob"].numpy(),
                                                                         o1["mask_prob"].numpy()]), atol=1e-4)
    m0, m1 = pasted_masks(ob)
    diff = (np.concatenate([m0, m1]) != np.concatenate(pasted_masks(o0) + pasted_masks(o1))).mean()
    assert diff < 1e-4


def test_no_detection_gives_empty_outputs():
    model = tiny_model(["BBoxPostProcess.nms.score_threshold=1.5"])
    with paddle.no_grad():
        out = model(make_inputs(128, 192, batch=2))
    assert out["bbox"].shape == [0, 6]
    assert out["bbox_num"].numpy().tolist() == [0, 0]
    assert out["mask_prob"].shape == [0, 28, 28]
    assert [m.shape for m in pasted_masks(out)] == [(0, 128, 192), (0, 128, 192)]


def test_mask_logits_follow_num_classes_and_semantic_head_runs():
    model = tiny_model(["HybridTaskCascade.fused_semantic_head=FusedSemanticHead",
                        "FusedSemanticHead.semantic_num_class=6"])
    assert model.bbox_head.mask_head.head.stages[0].conv_logits.weight.shape[0] == 5
    assert model.bbox_head.bbox_score_list[0].weight.shape[1] == 6
    keys = model.state_dict().keys()
    assert "fused_semantic_head.conv_logits.weight" in keys
    with paddle.no_grad():
        out = model(make_inputs(128, 192))
    check_output_contract(out, 1, 5)


@pytest.mark.parametrize("shape,size", [((3, 4, 14, 14), [7, 7]), ((2, 3, 14, 10), [7, 5]), ((2, 3, 13, 14), [7, 7])])
def test_semantic_box_pooling_equals_adaptive_average_pooling(shape, size):
    import paddle.nn.functional as F

    from ppdet_htc.modeling.heads.roi_extractor import _average_pool_to

    x = paddle.to_tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"))
    np.testing.assert_allclose(_average_pool_to(x, size).numpy(), F.adaptive_avg_pool2d(x, size).numpy(),
                               rtol=0, atol=1e-6)
