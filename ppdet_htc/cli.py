"""Command-line entry points (``scripts/*.py`` and the ``ppdet-htc-*`` console scripts call these).

Flags follow PaddleDetection's ``tools/*.py``: ``-c CONFIG``, ``-o key=value ...`` on every command.
"""
import argparse
import logging
import sys

from .utils.logger import setup_logger

__all__ = ["infer_main", "eval_main", "base_parser", "load_cli_config"]

logger = logging.getLogger("ppdet_htc")


def base_parser(description):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-c", "--config", required=True, help="YAML config file")
    p.add_argument("-o", "--opt", nargs="*", default=[], action="extend",
                   help="override config keys, e.g. -o weights=w.pdparams EvalReader.batch_size=2")
    return p


def load_cli_config(args):
    from .core import load_config

    return load_config(args.config, args.opt)


def _run(main, argv):
    """Run a CLI body; turn expected user errors into one clear line and exit code 2."""
    from .core import ConfigError
    from .data.transforms import ImageDecodeError
    from .engine.checkpoint import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError

    setup_logger()
    user_errors = (ConfigError, FileNotFoundError, ImageDecodeError, CheckpointError, CheckpointMismatchError,
                   UnsafeCheckpointError, KeyError, ValueError)
    try:
        return main(argv)
    except user_errors as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        logger.error("%s: %s", type(e).__name__, msg)
        sys.exit(2)


def infer_main(argv=None):
    """``scripts/infer.py``: detect on images, draw them, write results.json."""
    def main(argv):
        p = base_parser("Run HTC on images: draws detections and writes COCO-format results.json")
        p.add_argument("--infer_img", default=None, help="an image file")
        p.add_argument("--infer_dir", default=None, help="a folder of images")
        p.add_argument("--output_dir", default="output", help="where pictures and results.json go")
        p.add_argument("--draw_threshold", type=float, default=0.5, help="score threshold for drawing")
        p.add_argument("--batch_size", type=int, default=None, help="images per forward (default: TestReader)")
        p.add_argument("--no_images", action="store_true", help="only write results.json")
        args = p.parse_args(argv)
        from .engine.infer import list_image_files, run_inference
        from .engine.predictor import Detector

        images = list_image_files(args.infer_img, args.infer_dir)
        cfg = load_cli_config(args)
        det = Detector(cfg)
        bs = args.batch_size or int((cfg.get("TestReader") or {}).get("batch_size", 1))
        path, _ = run_inference(det, images, args.output_dir, args.draw_threshold, bs, save_images=not args.no_images)
        print("results: {}".format(path))
        return path

    return _run(main, argv)


def eval_main(argv=None):
    """``scripts/eval.py``: COCO box and mask AP of ``weights`` on ``EvalDataset``."""
    def main(argv):
        p = base_parser("Evaluate HTC on the config's EvalDataset (COCO bbox + segm AP)")
        p.add_argument("--output_eval", default=None,
                       help="folder for bbox.json, mask.json and metrics.json (default: working directory)")
        p.add_argument("--classwise", action="store_true", help="also print per-class AP")
        p.add_argument("--json_eval", action="store_true",
                       help="score existing bbox.json/mask.json in --output_eval without running the model")
        args = p.parse_args(argv)
        cfg = load_cli_config(args)
        if args.json_eval:
            return _json_eval(cfg, args)
        from .engine.evaluator import evaluate

        return evaluate(cfg, output_eval=args.output_eval, classwise=args.classwise)

    return _run(main, argv)


def _json_eval(cfg, args):
    import os

    from .engine.evaluator import build_eval_dataset
    from .metrics.coco_eval import format_metrics, json_eval

    folder = args.output_eval or "."
    files = {k: os.path.join(folder, f) for k, f in (("bbox", "bbox.json"), ("segm", "mask.json"))}
    present = {k: v for k, v in files.items() if os.path.isfile(v)}
    if not present:
        raise FileNotFoundError("--json_eval: neither {} nor {} exists".format(files["bbox"], files["segm"]))
    dataset = build_eval_dataset(cfg)
    metrics = json_eval(dataset.get_anno(), present.get("bbox"), present.get("segm"), output_eval=args.output_eval,
                        classwise=args.classwise)
    print(format_metrics(metrics))
    return metrics
