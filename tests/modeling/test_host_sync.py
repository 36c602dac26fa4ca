"""The forward pass never reads a tensor on the host (no GPU stall), in training and at test time.

Data loading (the reader) and result conversion (``split_outputs``: mask pasting, numpy) are outside the
guarded block; the model's forward (and, in training, the backward pass) are inside.
"""
import os

import numpy as np
import paddle
import pytest

from ppdet_htc.core import load_config
from ppdet_htc.data.demo_shapes import generate_demo_dataset
from ppdet_htc.data.loader import build_reader
from ppdet_htc.engine.model_builder import build_model
from ppdet_htc.engine.outputs import split_outputs
from ppdet_htc.utils.host_sync import HostSyncError, forbid_host_sync
from tests.engine.test_train import make_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")
MMDET = os.path.join(REPO, "tests", "fixtures", "mmdet_golden_visible.yml")
SEMANTIC = ["HybridTaskCascade.fused_semantic_head=FusedSemanticHead", "FusedSemanticHead.semantic_num_class=6"]
# The mmdetection convention on the tiny model's sizes (other proposal generator, level mapping, coders, NMS).
MMDET_TINY = ["ResNet.ch_in=16", "ResNet.ch_out_list=[16,16,32,32]", "FPN.out_channel=16",
              "HybridTaskCascadeTwoFCHead.out_channel=32", "HybridTaskMaskFeat.out_channel=16",
              "HybridTaskMaskFeat.num_convs=2", "num_classes=5"]


def test_guard_catches_every_kind_of_host_read():
    t = paddle.to_tensor([1.5])
    for read in (lambda: t.numpy(), lambda: t.item(), lambda: float(t), lambda: int(t), lambda: bool(t > 0),
                 lambda: t.tolist(), lambda: np.asarray(t)):
        with forbid_host_sync():
            with pytest.raises(HostSyncError):
                read()
    assert t.item() == 1.5 and float(t.sum()) == 1.5  # restored afterwards


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "demo"
    generate_demo_dataset(str(root), num_train=4, num_val=2, seed=7, progress=False)
    return str(root)


def _training_batch(root, tmp_path, semantic, convention="paddle"):
    cfg = make_cfg(root, tmp_path, semantic=semantic)
    if convention == "mmdet":
        from ppdet_htc.core import merge_config
        from tests.engine.test_train import train_overrides

        cfg = load_config(MMDET, MMDET_TINY)
        merge_config(cfg, train_overrides(root))
        merge_config(cfg, {"save_dir": str(tmp_path)})
    reader = build_reader(cfg, "train", worker_num=0)
    return cfg, next(iter(reader))


@pytest.mark.parametrize("convention,semantic", [("paddle", False), ("paddle", True), ("mmdet", False)])
def test_training_step_has_no_host_sync(shapes_root, tmp_path, convention, semantic):
    cfg, batch = _training_batch(shapes_root, tmp_path, semantic, convention)
    paddle.seed(0)
    model = build_model(cfg)
    model.train()
    with forbid_host_sync():
        losses = model(batch)
        losses["loss"].backward()
    assert np.isfinite(float(losses["loss"]))
    assert any(p.grad is not None for p in model.parameters() if not p.stop_gradient)


@pytest.mark.parametrize("convention,semantic", [("paddle", False), ("paddle", True), ("mmdet", False)])
def test_inference_has_no_host_sync(convention, semantic):
    paddle.seed(0)
    if convention == "mmdet":
        model = build_model(load_config(MMDET, MMDET_TINY))
    else:
        model = build_model(load_config(TINY, SEMANTIC if semantic else None))
    model.eval()
    rng = np.random.default_rng(0)
    inputs = {"image": paddle.to_tensor(rng.normal(size=(2, 3, 128, 192)).astype("float32")),
              "im_shape": paddle.to_tensor([[128.0, 192.0], [120.0, 180.0]]),
              "scale_factor": paddle.to_tensor([[1.0, 1.0], [0.5, 0.5]])}
    with paddle.no_grad(), forbid_host_sync():
        out = model(inputs)
    dets = split_outputs(out, mask_post_process=model.mask_post_process)  # result conversion: outside
    assert sum(len(d["scores"]) for d in dets) > 0
