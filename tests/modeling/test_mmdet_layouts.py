"""mmdetection's seven HTC layouts: random weights with the names and shapes of every
../shared/reference/mmdet/keys_*.json convert with zero unmatched keys into the model of
configs/htc_mmdet/<name>.yml, load strictly and run inference at 800x1333."""
import collections
import json
import os

import numpy as np
import paddle
import pytest

from ppdet_htc.core import load_config
from ppdet_htc.engine.checkpoint import load_weights, save_state_file
from ppdet_htc.engine.convert_mmdet import convert_state_dict, model_param_specs
from ppdet_htc.engine.model_builder import build_model
from ppdet_htc.engine.outputs import split_outputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = [
    "htc_without_semantic_r50_fpn_1x_coco",
    "htc_r50_fpn_1x_coco",
    "htc_r50_fpn_20e_coco",
    "htc_r101_fpn_20e_coco",
    "htc_x101_32x4d_fpn_16x1_20e_coco",
    "htc_x101_64x4d_fpn_16x1_20e_coco",
    "htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco",
]


def mmdet_random_state(key_list, seed=0):
    """Weights in mmdetection's layout that give sane activations: N(0, 1/fan_in) weights, BN statistics
    near identity, small biases, small offset convs (deformable sampling stays near the grid)."""
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for key, shape, dtype in key_list:
        if dtype == "int64":
            state[key] = np.zeros(shape, np.int64)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif key.endswith(("running_mean", ".bias")):
            state[key] = rng.normal(0, 0.01, shape).astype(np.float32)
        elif len(shape) == 1:  # BN weight
            state[key] = rng.uniform(0.5, 1.0, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            std = 0.01 if "conv_offset" in key else np.sqrt(1.0 / fan_in)
            state[key] = rng.normal(0, std, shape).astype(np.float32)
    return state


@pytest.mark.parametrize("name", NAMES)
def test_layout_converts_loads_strictly_and_runs_800x1333(name, shared_reference, tmp_path):
    keys = json.load(open(os.path.join(shared_reference, "mmdet", "keys_{}.json".format(name))))
    config = os.path.join(REPO, "configs", "htc_mmdet", name + ".yml")
    converted = convert_state_dict(mmdet_random_state(keys), model_param_specs(config), source=name)
    path = str(tmp_path / "converted.pdparams")
    save_state_file(path, converted)
    paddle.seed(0)
    model = build_model(load_config(config, ["use_gpu=false"]))
    assert load_weights(model, path) == {"missing": [], "unexpected": [], "shape": []}
    model.eval()
    # a 640x480 photo as mmdetection resizes it: 800x1067 (scale factors 1067/640, 800/480), padded to 800x1088
    rng = np.random.default_rng(1)
    inputs = {"image": paddle.to_tensor(rng.normal(0, 1, (1, 3, 800, 1088)).astype("float32")),
              "im_shape": paddle.to_tensor([[800.0, 1067.0]]),
              "scale_factor": paddle.to_tensor([[800.0 / 480, 1067.0 / 640]], dtype="float32")}
    with paddle.no_grad():
        out = model(inputs)
    det = split_outputs(out, mask_post_process=model.mask_post_process)[0]
    assert det["image_size"] == (480, 640)
    assert det["masks"].shape == (len(det["scores"]), 480, 640)
    assert np.isfinite(det["boxes"]).all() and (det["scores"] > 0.001).all()
    assert ((det["labels"] >= 0) & (det["labels"] < 80)).all()
