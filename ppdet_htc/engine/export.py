"""Export a model to a static Paddle Inference program plus ``infer_cfg.yml`` (PaddleDetection style).

The exported program takes one image per run: ``image [1,3,H,W]`` (preprocessed and padded, any
size), ``im_shape [1,2]`` and ``scale_factor [1,2]``, and returns ``bbox [K+1,6]`` (label, score,
x1, y1, x2, y2 in original pixels), ``bbox_num [1]`` and ``mask [K+1,h,w]`` uint8 (original size).
The last row is always a placeholder with score -1 (Paddle 2.x kernels and Paddle Inference's oneDNN
backend reject empty tensors, so the program never produces one); ``deploy/python/infer.py`` drops it.
Everything after the backbone (proposals, cascade, NMS, mask pasting) is inside the program.
"""
import inspect
import logging
import os

import paddle
import yaml

from ..core import create
from ..errors import ConfigError, UserError
from .model_builder import build_model, label_info, load_model_weights, select_device

__all__ = ["export_model", "infer_cfg_dict", "save_inference_program", "paddle2_export_blockers"]

logger = logging.getLogger(__name__)


class _ExportWrapper(paddle.nn.Layer):
    """Positional tensors in, tuple of tensors out (what ``paddle.jit.save`` needs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, im_shape, scale_factor):
        out = self.model({"image": image, "im_shape": im_shape, "scale_factor": scale_factor})
        return out["bbox"], out["bbox_num"], out["mask"]


def infer_cfg_dict(cfg, class_names, category_ids, draw_threshold=0.5):
    """Preprocessing steps, labels and threshold for ``deploy/python/infer.py``."""
    steps = []
    reader = cfg.get("TestReader") or {}
    for spec in reader.get("sample_transforms") or []:
        (name, kw), = spec.items()
        kw = dict(kw or {})
        if name == "Decode":
            continue
        if name == "Resize":
            target = kw.get("target_size")
            steps.append({"type": "Resize", "target_size": list(target) if isinstance(target, (list, tuple))
                          else [target, target], "keep_ratio": bool(kw.get("keep_ratio", True)),
                          "interp": int(kw.get("interp", 1))})
            if kw.get("scale_from_size"):  # mmdetection rounding (only written when set: older readers)
                steps[-1]["scale_from_size"] = True
        elif name == "NormalizeImage":
            steps.append({"type": "NormalizeImage", "mean": list(kw.get("mean", (0.485, 0.456, 0.406))),
                          "std": list(kw.get("std", (0.229, 0.224, 0.225))), "is_scale": bool(kw.get("is_scale", True))})
            if kw.get("float32_arithmetic"):
                steps[-1]["float32_arithmetic"] = True
        elif name == "Permute":
            steps.append({"type": "Permute"})
        else:
            raise ConfigError("export: TestReader transform {!r} has no deploy equivalent".format(name))
    stride = 0
    for spec in reader.get("batch_transforms") or []:
        (name, kw), = spec.items()
        if name == "PadBatch":
            stride = int((kw or {}).get("pad_to_stride", 0))
    steps.append({"type": "PadStride", "stride": stride})
    return {
        "mode": "paddle",
        "arch": cfg.get("architecture"),
        "min_subgraph_size": 40,
        "draw_threshold": float(draw_threshold),
        "Preprocess": steps,
        "label_list": list(class_names),
        "category_ids": [int(c) for c in category_ids],
    }


def paddle2_export_blockers(model, paddle_version=None):
    """Names of the model's pieces whose exported program cannot run on this Paddle (``exports_on_paddle2 =
    False`` on Paddle 2.x, e.g. mmdetection's ``FinestScaleLevelMapper``); empty on Paddle >= 3."""
    version = paddle_version or paddle.__version__
    if not version[:1].isdigit() or int(version.split(".")[0]) >= 3 or version.startswith("0."):  # 0.0.0: develop
        return []
    found = []
    for layer in model.sublayers(include_self=True):
        extractor = getattr(layer, "roi_extractor", None)
        mapper = getattr(getattr(extractor, "fpn", None), "level_mapper", None)
        if mapper is not None and not getattr(mapper, "exports_on_paddle2", True):
            name = "{} ({})".format(type(mapper).__name__, type(layer).__name__)
            if name not in found:
                found.append(name)
    return found


def save_inference_program(model, output_dir):
    """Trace an eval-mode ``model`` into ``output_dir/model.{json|pdmodel,pdiparams}`` (the model is unchanged)."""
    blockers = paddle2_export_blockers(model)
    if blockers:
        raise UserError("the exported program of this model needs Paddle >= 3 ({} give empty tensors that Paddle "
                        "{}'s static executor cannot run); use the dynamic graph (--runtime dynamic or --exact) or "
                        "Paddle 3".format(", ".join(blockers), paddle.__version__))
    os.makedirs(output_dir, exist_ok=True)
    # One image per run (as PaddleDetection deploys two-stage models); any size.
    spec = [
        paddle.static.InputSpec([1, 3, None, None], "float32", "image"),
        paddle.static.InputSpec([1, 2], "float32", "im_shape"),
        paddle.static.InputSpec([1, 2], "float32", "scale_factor"),
    ]
    kwargs = {"input_spec": spec}
    if "full_graph" in inspect.signature(paddle.jit.to_static).parameters:
        kwargs["full_graph"] = True  # AST translation: one complete program, no graph breaks
    static = paddle.jit.to_static(_ExportWrapper(model), **kwargs)
    paddle.jit.save(static, os.path.join(output_dir, "model"))
    return output_dir


def export_model(cfg, output_dir, weights=None, draw_threshold=0.5):
    """Trace the model with ``paddle.jit.to_static`` and save it; returns the output folder."""
    select_device(cfg, "cpu")
    model = build_model(cfg)
    weights = weights or cfg.get("weights")
    if not weights:
        raise ConfigError("export needs trained weights: pass -o weights=PATH|URL|model-zoo name")
    load_model_weights(model, weights)
    model.eval()
    dataset = create(cfg["TestDataset"]) if "TestDataset" in cfg else None
    names, clsid2catid, _ = label_info(cfg, dataset, weights)
    save_inference_program(model, output_dir)
    info = infer_cfg_dict(cfg, names, [clsid2catid[i] for i in range(len(names))], draw_threshold)
    with open(os.path.join(output_dir, "infer_cfg.yml"), "w") as f:
        yaml.safe_dump(info, f, sort_keys=False)
    logger.info("exported %s to %s (%s)", cfg.get("filename"), output_dir, ", ".join(sorted(os.listdir(output_dir))))
    return output_dir
