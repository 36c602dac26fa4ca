"""COCO evaluation of a model on the config's ``EvalDataset`` (``scripts/eval.py`` and ``train.py --eval``)."""
import logging
import time

import paddle
from tqdm import tqdm

from ..core import create
from ..data.loader import build_reader
from ..metrics.coco_eval import COCOMetric
from .model_builder import build_model, load_model_weights, select_device
from .outputs import split_outputs

__all__ = ["evaluate", "build_eval_dataset"]

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("image", "im_shape", "scale_factor")


def build_eval_dataset(cfg):
    if "EvalDataset" not in cfg:
        raise KeyError("{}: the config has no EvalDataset".format(cfg.source_of("EvalDataset")))
    dataset = create(cfg["EvalDataset"], cfg, where="EvalDataset in {}".format(cfg.source_of("EvalDataset")))
    dataset.check_files() if hasattr(dataset, "check_files") else None
    return dataset


def evaluate(cfg, model=None, weights=None, output_eval=None, classwise=False, progress=True, device=None):
    """Run the model over ``EvalDataset`` and score it with pycocotools.

    ``model``: an already built (and loaded) model, e.g. during training; otherwise it is built from the
    config and ``weights`` (default ``cfg.weights``) are loaded strictly. Writes ``bbox.json``,
    ``mask.json`` and ``metrics.json`` into ``output_eval`` (default: the working directory).
    Returns the metrics dict ``{'bbox': {...}, 'segm': {...}}`` plus ``images_per_s``.
    """
    if model is None:
        select_device(cfg, device)
        model = build_model(cfg)
        weights = weights or cfg.get("weights")
        if not weights:
            raise ValueError("no weights to evaluate: pass -o weights=PATH|URL|model-zoo name")
        load_model_weights(model, weights)
    dataset = build_eval_dataset(cfg)
    reader = build_reader(cfg, "eval", dataset=dataset, rank=0, world_size=1)
    metric = COCOMetric(dataset.get_anno(), clsid2catid=dataset.clsid2catid, output_eval=output_eval,
                        classwise=classwise)
    was_training = model.training
    model.eval()
    n_images = 0
    start = time.time()
    bar = tqdm(total=len(dataset), desc="eval", unit="img", disable=None if progress else True)
    seen = set()
    with paddle.no_grad():
        for batch in reader:
            outputs = model({k: batch[k] for k in MODEL_INPUTS})
            dets = split_outputs(outputs, batch["im_id"])
            dets = [d for d in dets if d["im_id"] not in seen]  # the last batch is never padded, but be safe
            seen.update(d["im_id"] for d in dets)
            metric.update(dets)
            n_images += len(dets)
            bar.update(len(dets))
    bar.close()
    elapsed = max(time.time() - start, 1e-9)
    if was_training:
        model.train()
    metrics = metric.accumulate()
    print(metric.format_table())
    metrics["images_per_s"] = n_images / elapsed
    logger.info("evaluated %d images in %.1f s (%.2f images/s)", n_images, elapsed, metrics["images_per_s"])
    return metrics
