"""COCO evaluation of a model on the config's ``EvalDataset`` (``scripts/eval.py`` and ``train.py --eval``)."""
import logging
import os
import time

import paddle
from ..core import create
from ..data.loader import build_reader
from ..errors import ConfigError
from ..metrics.coco_eval import COCOMetric
from ..utils.progress import progress as progress_reporter
from .model_builder import build_model, load_model_weights, select_device, weights_file
from .runtimes import DynamicRunner, build_runner, resolve_runtime

__all__ = ["evaluate", "build_eval_dataset", "default_output_dir"]

logger = logging.getLogger(__name__)


def default_output_dir(cfg):
    """``<save_dir>/<config name>`` (``output/<config name>``): where eval results go unless told otherwise."""
    return os.path.join(cfg.get("save_dir") or "output", cfg.get("filename") or "model")


def build_eval_dataset(cfg):
    if "EvalDataset" not in cfg:
        raise ConfigError("{}: the config has no EvalDataset".format(cfg.source_of("EvalDataset")))
    dataset = create(cfg["EvalDataset"], cfg, where="EvalDataset in {}".format(cfg.source_of("EvalDataset")))
    dataset.check_files() if hasattr(dataset, "check_files") else None
    return dataset


def evaluate(cfg, model=None, weights=None, output_eval=None, classwise=False, progress=True, device=None,
             rank=0, world_size=1, exact=False, runtime=None):
    """Run the model over ``EvalDataset`` and score it with pycocotools.

    ``model``: an already built (and loaded) model, e.g. during training; otherwise it is built from the
    config and ``weights`` (default ``cfg.weights``) are loaded strictly. Writes ``bbox.json``,
    ``mask.json`` and ``metrics.json`` into ``output_eval`` (default: :func:`default_output_dir`).
    Returns the metrics dict ``{'bbox': {...}, 'segm': {...}}`` plus ``images_per_s`` and ``timing``
    (seconds waiting for the reader vs. running the model: evaluation is loading-bound when the wait is large).

    ``runtime`` / ``exact``: how a model built here runs (``engine/runtimes.py``; default: the fast runtime).
    A ``model`` passed in (training) always runs as it is, in the dynamic graph.

    With ``world_size > 1`` (during distributed training) every process runs its share of the images at
    the same time and rank 0 gathers the results and scores them; other ranks return None.
    """
    # Everything is checked before the model runs: first the weights (found, downloaded or converted: an
    # offline machine says at once where to put the file), then the data: the annotations (as the loader
    # and as COCOeval will read them), the image files, the reader config. A bad file stops here, in seconds.
    if output_eval is None:
        output_eval = default_output_dir(cfg)
    weights_path = None
    if model is None:
        weights = weights or cfg.get("weights")
        if not weights:
            raise ConfigError("no weights to evaluate: pass -o weights=PATH|URL|model-zoo name")
        weights_path = weights_file(weights, progress=progress)
    dataset = build_eval_dataset(cfg)
    reader = build_reader(cfg, "eval", dataset=dataset, rank=rank, world_size=world_size)
    image_root = dataset.get_image_root() if hasattr(dataset, "get_image_root") else None
    metric = COCOMetric(dataset.get_anno(), clsid2catid=dataset.clsid2catid, output_eval=output_eval,
                        classwise=classwise, image_root=image_root)
    if model is None:
        device = select_device(cfg, device)
        model = build_model(cfg)
        load_model_weights(model, weights_path)
        runner = build_runner(model, resolve_runtime(runtime, exact, device))
    else:
        runner = DynamicRunner(model)
    logger.info("evaluation runtime: %s (%s)", runner.runtime, runner.kernels)
    was_training = model.training
    model.eval()
    n_images = 0
    start = time.time()
    bar = progress_reporter(total=sum(len(b) for b in reader.batch_indices()), desc="eval", unit="img",
                            enabled=progress and rank == 0)
    seen = set()
    wait_s = model_s = 0.0
    batches = iter(reader)
    with paddle.no_grad():
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            t1 = time.perf_counter()
            wait_s += t1 - t0
            if batch is None:
                break
            dets = runner.detect(batch)
            model_s += time.perf_counter() - t1
            dets = [d for d in dets if d["im_id"] not in seen]  # the last batch is never padded, but be safe
            seen.update(d["im_id"] for d in dets)
            metric.update(dets)
            n_images += len(dets)
            bar.update(len(dets))
    bar.close()
    if was_training:
        model.train()
    if world_size > 1:
        from .distributed import all_gather_object

        shards = all_gather_object((sorted(seen), metric.results), world_size)
        n_images = len(set().union(*[set(ids) for ids, _ in shards]))
        if rank != 0:
            return None
        metric.results = _merge_shards(shards, metric.iou_types)
    elapsed = max(time.time() - start, 1e-9)
    metrics = metric.accumulate()
    print(metric.format_table())
    metrics["images_per_s"] = n_images / elapsed
    metrics["timing"] = {"reader_wait_s": wait_s, "model_s": model_s, "total_s": elapsed,
                         "reader_workers": reader.worker_num, "runtime": runner.runtime}
    logger.info("evaluated %d images in %.1f s (%.2f images/s; model %.1f s, waiting for data %.1f s with %d "
                "reader workers)", n_images, elapsed, metrics["images_per_s"], model_s, wait_s, reader.worker_num)
    return metrics


def _merge_shards(shards, iou_types):
    """Results of all ranks; an image evaluated twice (the sampler pads shards cyclically) counts once."""
    owner = {}
    for rank, (ids, _) in enumerate(shards):
        for i in ids:
            owner.setdefault(i, rank)
    merged = {t: [] for t in iou_types}
    for rank, (_, results) in enumerate(shards):
        for t in iou_types:
            merged[t].extend(r for r in results[t] if owner.get(r["image_id"]) == rank)
    return merged
