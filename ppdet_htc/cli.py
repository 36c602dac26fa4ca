"""Command-line entry points (``scripts/*.py`` and the ``ppdet-htc-*`` console scripts call these).

Flags follow PaddleDetection's ``tools/*.py``: ``-c CONFIG``, ``-o key=value ...`` on every command.

Errors: a user error (``ppdet_htc.errors.UserError`` and the checkpoint/download errors listed in
``_user_error_types``, plus ``OSError``: missing files, permissions, network) and Ctrl-C end the command
with one line ``error: ...`` on stderr (also appended to the training log) and exit code 2. ``--debug``
or ``PPDET_HTC_DEBUG=1`` prints the traceback as well. Any other exception is a bug and keeps its
traceback.
"""
import argparse
import logging
import os
import sys
import traceback

from .utils.logger import debug_requested, quiet_third_party, setup_logger

__all__ = ["infer_main", "eval_main", "train_main", "benchmark_main", "export_main", "analyze_main",
           "plot_log_main", "convert_mmdet_main", "base_parser", "load_cli_config", "add_runtime_args",
           "apply_runtime_args"]

logger = logging.getLogger("ppdet_htc")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` states each option's default exactly once: appended, unless the help text already says it
    (options whose default depends on the config say so in words); flags (off by default) get none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings or action.required:
            return text
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"


def base_parser(description, config=True):
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    if config:
        p.add_argument("-c", "--config", required=True,
                       help="YAML config: a file path, or a packaged config such as htc/htc_r50_fpn_1x_coco.yml")
        p.add_argument("-o", "--opt", nargs="*", default=[], action="extend",
                       help="override config keys, e.g. -o weights=w.pdparams EvalReader.batch_size=2 "
                            "(default: none)")
    add_debug_flag(p)
    return p


def add_debug_flag(parser):
    """The one ``--debug`` option of every command (``_run`` reads it through ``utils.logger.debug_requested``)."""
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback too; also show Paddle's warnings and log noise "
                             "(same as PPDET_HTC_DEBUG=1)")


def add_runtime_args(p):
    """``--exact`` / ``--runtime`` (see ppdet_htc/engine/runtimes.py and ppdet_htc/runtime.py)."""
    p.add_argument("--exact", action="store_true",
                   help="exact path: dynamic graph with today's kernels and numerics (also PPDET_HTC_EXACT=1)")
    p.add_argument("--runtime", default=None, choices=["exact", "dynamic", "onednn", "openvino", "inference"],
                   help="how the model runs (default: $PPDET_HTC_RUNTIME or onednn on the CPU)")
    return p


def apply_runtime_args(args):
    """Decide process-level switches right after parsing, before Paddle's math library runs."""
    from .runtime import use_exact_process

    if args.exact or args.runtime == "exact":
        args.exact = True
        use_exact_process()


def load_cli_config(args):
    from .core import load_config

    return load_config(args.config, args.opt)


def _user_error_types():
    """Exception classes that mean bad input or environment (never broad ``ValueError``/``KeyError``)."""
    from .engine.checkpoint import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
    from .errors import UserError
    from .utils.download import DownloadError
    from .utils.model_zoo import UnknownModelError

    # OSError: missing files, permissions, full disks, network failures (DownloadError is one).
    return (UserError, CheckpointError, CheckpointMismatchError, UnsafeCheckpointError, DownloadError,
            UnknownModelError, OSError)


# ``--debug`` on the command line or ``PPDET_HTC_DEBUG`` set: one definition, in utils.logger (it also decides
# whether Paddle's noise is filtered); this name is kept for callers of the CLI module.
debug_enabled = debug_requested


def one_line(exc):
    """The message of ``exc`` on one line (multi-line reports are joined)."""
    if isinstance(exc, KeyError) and exc.args and type(exc).__str__ is KeyError.__str__:
        text = str(exc.args[0])  # plain KeyError would quote its message
    else:
        text = str(exc)
    if isinstance(exc, OSError) and exc.errno is not None and type(exc).__str__ is OSError.__str__:
        text = "{}: {}".format(type(exc).__name__, text)  # "[Errno 13] Permission denied: 'x'" needs its kind
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    out = ""
    for p in parts:
        out += p if not out else (" " if out.endswith(":") else "; ") + p
    return out or type(exc).__name__


def report_error(message):
    """``error: message`` on stderr, and in the log files of the ``ppdet_htc`` logger (e.g. train.log)."""
    line = "error: " + message
    print(line, file=sys.stderr, flush=True)
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)
    return line


def _run(main, argv):
    """Run a CLI body; user errors and Ctrl-C become one line on stderr and exit code 2 (see module doc)."""
    debug = debug_requested(argv)
    quiet_third_party(debug)  # before Paddle is imported: its import warns
    setup_logger()
    try:
        return main(argv)
    except KeyboardInterrupt as e:
        if debug:
            traceback.print_exc()
        report_error(one_line(e) if str(e) else "interrupted (Ctrl-C)")
        sys.exit(2)
    except _user_error_types() as e:
        if debug:
            traceback.print_exc()
        report_error(one_line(e))
        sys.exit(2)


def infer_main(argv=None):
    """``scripts/infer.py``: detect on images, draw them, write results.json."""
    def main(argv):
        p = base_parser("Run HTC on images: draws detections and writes COCO-format results.json")
        p.add_argument("--infer_img", default=None, help="an image file (default: none; give this or --infer_dir)")
        p.add_argument("--infer_dir", default=None, help="a folder of images (default: none)")
        p.add_argument("--output_dir", default="output", help="where pictures and results.json go")
        p.add_argument("--draw_threshold", type=float, default=0.5, help="score threshold for drawing")
        p.add_argument("--batch_size", type=int, default=None,
                       help="images per forward pass (default: TestReader.batch_size of the config)")
        p.add_argument("--no_images", action="store_true", help="only write results.json")
        p.add_argument("--strict", action="store_true",
                       help="stop at the first unreadable image; without it, unreadable images are skipped, named at "
                            "the end and the command exits with code 2")
        p.add_argument("--worker_num", type=int, default=None,
                       help="processes decoding the next images while the model runs (default: config, at most 2)")
        add_runtime_args(p)
        args = p.parse_args(argv)
        apply_runtime_args(args)
        from .engine.infer import dataset_image_ids, list_image_files, run_inference
        from .engine.predictor import Detector

        images = list_image_files(args.infer_img, args.infer_dir)
        cfg = load_cli_config(args)
        det = Detector(cfg, exact=args.exact, runtime=args.runtime)
        bs = args.batch_size or int((cfg.get("TestReader") or {}).get("batch_size", 1))
        path, _ = run_inference(det, images, args.output_dir, args.draw_threshold, bs, save_images=not args.no_images,
                                image_ids=dataset_image_ids(det.dataset), strict=args.strict,
                                worker_num=args.worker_num)
        print("results: {}".format(path))
        return path

    return _run(main, argv)


def eval_main(argv=None):
    """``scripts/eval.py``: COCO box and mask AP of ``weights`` on ``EvalDataset``."""
    def main(argv):
        p = base_parser("Evaluate HTC on the config's EvalDataset (COCO bbox + segm AP)")
        p.add_argument("--output_eval", default=None,
                       help="folder for bbox.json, mask.json and metrics.json (default: <save_dir>/<config name>, "
                            "i.e. output/<config name>)")
        p.add_argument("--classwise", action="store_true", help="also print per-class AP")
        p.add_argument("--json_eval", action="store_true",
                       help="score existing bbox.json/mask.json in --output_eval without running the model")
        p.add_argument("--plot", action="store_true",
                       help="also draw per-class precision-recall curves, the COCO error breakdown and a confusion "
                            "matrix as PNG files into <output_eval>/plots")
        add_runtime_args(p)
        args = p.parse_args(argv)
        apply_runtime_args(args)
        cfg = load_cli_config(args)
        from .engine.evaluator import default_output_dir

        args.output_eval = args.output_eval or default_output_dir(cfg)
        if args.json_eval:
            metrics = _json_eval(cfg, args)
        else:
            from .engine.evaluator import evaluate

            metrics = evaluate(cfg, output_eval=args.output_eval, classwise=args.classwise, exact=args.exact,
                               runtime=args.runtime)
        if args.plot:
            _plot_eval(cfg, args.output_eval)
        return metrics

    return _run(main, argv)


def _json_eval(cfg, args):
    import os

    from .engine.evaluator import build_eval_dataset
    from .metrics.coco_eval import format_metrics, json_eval

    folder = args.output_eval
    files = {k: os.path.join(folder, f) for k, f in (("bbox", "bbox.json"), ("segm", "mask.json"))}
    present = {k: v for k, v in files.items() if os.path.isfile(v)}
    if not present:
        raise FileNotFoundError("--json_eval: neither {} nor {} exists".format(files["bbox"], files["segm"]))
    dataset = build_eval_dataset(cfg)
    metrics = json_eval(dataset.get_anno(), present.get("bbox"), present.get("segm"), output_eval=args.output_eval,
                        classwise=args.classwise)
    print(format_metrics(metrics))
    return metrics


def _plot_eval(cfg, folder):
    from .engine.evaluator import build_eval_dataset
    from .metrics.analysis import analyze_results

    files = {k: os.path.join(folder, f) for k, f in (("bbox", "bbox.json"), ("segm", "mask.json"))}
    present = {k: (v if os.path.isfile(v) else None) for k, v in files.items()}
    dataset = build_eval_dataset(cfg)
    written = analyze_results(dataset.get_anno(), present["bbox"], present["segm"], os.path.join(folder, "plots"),
                              image_root=_image_root(dataset))
    print("plots: {}".format(os.path.join(folder, "plots")))
    return written


def _image_root(dataset):
    """The image folder of an evaluation dataset (missing image sizes in its annotations are read from there)."""
    return dataset.get_image_root() if dataset is not None and hasattr(dataset, "get_image_root") else None


def train_main(argv=None):
    """``scripts/train.py``: train or fine-tune; works under ``python -m paddle.distributed.launch``."""
    def main(argv):
        p = base_parser("Train HTC (one process, or several with python -m paddle.distributed.launch)")
        p.add_argument("--eval", action="store_true", help="evaluate after every snapshot, keep best_model")
        p.add_argument("-r", "--resume", default=None,
                       help="snapshot to resume from, e.g. output/x/last (default: start from scratch)")
        p.add_argument("--amp", action="store_true", help="mixed precision (GPU)")
        p.add_argument("--seed", type=int, default=0, help="seed for data order, augmentation and sampling")
        p.add_argument("--output_dir", default=None, help="snapshots and train.log (default: <save_dir>/<config name>)")
        p.add_argument("--max_iters", type=int, default=None,
                       help="stop after this many iterations, resumably (default: the whole schedule)")
        p.add_argument("--use_vdl", action="store_true", help="log scalars to VisualDL")
        p.add_argument("--vdl_log_dir", default="vdl_log", help="VisualDL log folder")
        p.add_argument("--no_plot", action="store_true",
                       help="do not draw the loss / learning-rate / AP curves (train_curves.png) at the end")
        args = p.parse_args(argv)
        cfg = load_cli_config(args)
        from .engine.trainer import Trainer

        out = args.output_dir or os.path.join(cfg.get("save_dir", "output"), cfg.get("filename", "model"))
        setup_logger(log_file=os.path.join(out, "train.log"))
        trainer = Trainer(cfg, eval_each_snapshot=args.eval, resume=args.resume, amp=args.amp, seed=args.seed,
                          max_iters=args.max_iters, use_vdl=args.use_vdl, vdl_log_dir=args.vdl_log_dir,
                          output_dir=out)
        try:
            trainer.train()
        finally:
            if not args.no_plot and trainer.rank == 0:
                _plot_train_log(os.path.join(out, "train.log"), os.path.join(out, "train_curves.png"))
        return trainer

    return _run(main, argv)


def _plot_train_log(log_path, png_path):
    """Training curves next to the log; a log without training lines (a crash at start) is only noted."""
    from .utils.plots import plot_training_log

    try:
        plot_training_log(log_path, png_path)
    except (OSError, ValueError) as e:
        logger.warning("no training curves drawn: %s", e)
        return None
    logger.info("training curves: %s", png_path)
    return png_path


def benchmark_main(argv=None):
    """``scripts/benchmark.py``: latency, phases, FLOPs, memory (inference) and training images/s."""
    def main(argv):
        p = base_parser("Benchmark HTC inference (and optionally training) on synthetic images")
        p.add_argument("--image_size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"),
                       help="network input size (keep-ratio resize target)")
        p.add_argument("--batch_size", type=int, default=1, help="images per forward pass")
        p.add_argument("--iters", type=int, default=10, help="timed iterations (after warm-up)")
        p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
        p.add_argument("--num_dets", type=int, default=100, help="detections per image with random weights")
        p.add_argument("--use_weights", action="store_true", help="load the config's weights instead of random")
        p.add_argument("--image", default=None, help="time this image file (default: synthetic images)")
        p.add_argument("--train", action="store_true", help="also measure training images/s")
        p.add_argument("--train_iters", type=int, default=5, help="timed training iterations (with --train)")
        p.add_argument("--train_batch_size", type=int, default=2, help="images per training step (with --train)")
        p.add_argument("--json", default=None, help="write the results to this JSON file (default: none)")
        p.add_argument("--no_peak", action="store_true", help="skip measuring the machine's attainable FP32 rate")
        p.add_argument("--no_inference", action="store_true", help="skip the inference benchmark")
        p.add_argument("--eval", action="store_true",
                       help="evaluation throughput on the config's EvalDataset (needs weights): model vs loading")
        add_runtime_args(p)
        args = p.parse_args(argv)
        apply_runtime_args(args)
        from .engine.benchmark import benchmark_inference, benchmark_training
        from .utils.io import write_json_atomic

        res = {}
        if not args.no_inference:
            cfg = load_cli_config(args)
            res = benchmark_inference(cfg, args.image_size, args.batch_size, args.iters, args.warmup, args.num_dets,
                                      args.use_weights, image_file=args.image, runtime=args.runtime,
                                      exact=args.exact, peak=not args.no_peak)
            print(format_benchmark(res))
        if args.train:
            cfg = load_cli_config(args)
            tr = benchmark_training(cfg, args.image_size, args.train_batch_size, args.train_iters, args.warmup)
            res["training"] = tr
            print(format_training(tr))
        if args.eval:
            from .engine.evaluator import evaluate

            import tempfile

            cfg = load_cli_config(args)
            with tempfile.TemporaryDirectory(prefix="ppdet_htc_bench_eval_") as out:
                metrics = evaluate(cfg, exact=args.exact, runtime=args.runtime, progress=False, output_eval=out)
            res["eval"] = {"images_per_s": metrics["images_per_s"], "timing": metrics["timing"]}
            t = metrics["timing"]
            print("evaluation: {:.2f} images/s with runtime {}; model {:.1f} s, waiting for the reader {:.1f} s "
                  "({:.1f}% of the run, {} workers): {}".format(
                      metrics["images_per_s"], t["runtime"], t["model_s"], t["reader_wait_s"],
                      100 * t["reader_wait_s"] / max(t["total_s"], 1e-9), t["reader_workers"],
                      "bound by the model" if t["reader_wait_s"] < 0.1 * t["total_s"] else "bound by loading"))
        if args.json:
            write_json_atomic(args.json, res, indent=2)
            print("wrote {}".format(args.json))
        return res

    return _run(main, argv)


def format_benchmark(res):
    """Human-readable benchmark report."""
    pct = lambda x: "n/a" if x is None else "{:.1f}%".format(100 * x)
    lines = [
        "{} | Paddle {} | {} ({}) | {} cores, {} threads | SIMD: {} | MKL_DEBUG_CPU_TYPE={}".format(
            res["device"], res["paddle_version"], res.get("cpu", ""), res.get("cpu_vendor", ""), res.get("cpu_cores"),
            res.get("threads"), " ".join(res.get("cpu_flags", [])),
            (res.get("process_switches") or {}).get("mkl_debug_cpu_type") or "unset"),
        "config {} | runtime {} ({}) | input {}x{} | batch {} | {} ({} detections/image)".format(
            res["config"], res.get("runtime"), res.get("kernels"), res["image_size"][0], res["image_size"][1],
            res["batch_size"], res["weights"], res["detections_per_image"]),
        "latency per image: median {:.1f} ms (min {:.1f}, max {:.1f}) over {} iterations after {} warm-up; "
        "CPU time {:.2f} s/image".format(
            res["latency_ms"]["median"], res["latency_ms"]["min"], res["latency_ms"]["max"], res["iters"],
            res["warmup"], res.get("cpu_seconds_per_image", 0.0)),
        "throughput {:.3f} images/s | peak RSS {:.0f} MB{}".format(
            res["images_per_s"], res["peak_rss_mb"],
            " | peak GPU memory {:.0f} MB".format(res["peak_gpu_memory_mb"]) if "peak_gpu_memory_mb" in res else ""),
        "model {:.1f} GFLOPs/image, achieved {:.1f} GFLOP/s end to end{}".format(
            res["gflops"], res["achieved_gflops_per_s"],
            "; conv+matmul {:.1f} ms; overhead (everything else) {}".format(
                res["conv_matmul_ms"], pct(res["overhead_fraction"])) if res.get("conv_matmul_ms") else ""),
    ]
    rates = res.get("peak_rates")
    if rates:
        att = rates["attainable"]
        lines.append("attainable FP32 rate (best of: {}): {:.1f} GFLOP/s ({}) -> model at {} of it, its "
                     "convolutions at {}".format(
                         ", ".join("{} {:.0f}".format(k, v["gflops_per_s"]) for k, v in rates.items()
                                   if k != "attainable" and isinstance(v, dict)),
                         att["gflops_per_s"], att["from"], pct(res.get("fraction_of_attainable")),
                         pct(res.get("conv_fraction_of_attainable"))))
    lines.append("phases (median ms per image | outside conv/matmul | GFLOPs | GFLOP/s whole phase | "
                 "GFLOP/s in conv/matmul | kernels):")
    for name, ms in res["phases_ms"].items():
        over = (res.get("phases_overhead_ms") or {}).get(name)
        lines.append("  {:<32s} {:9.1f} {:>9s} {:7.1f} {:>7s} {:>7s}  {}".format(
            name, ms, "-" if over is None else "{:.1f}".format(over), res.get("phase_gflops", {}).get(name, 0.0),
            _fmt_rate(res.get("phase_achieved_gflops_per_s", {}).get(name)),
            _fmt_rate(res.get("phase_conv_gflops_per_s", {}).get(name)), res.get("phase_kernels", {}).get(name, "")))
    return "\n".join(lines)


def _fmt_rate(x):
    return "-" if x is None else "{:.1f}".format(x)


def format_training(tr):
    """Training report: images/s and the median time of each step phase."""
    lines = ["training: {:.2f} images/s (batch {}, {}x{}, median of {} iterations, {:.2f} s/iter)".format(
        tr["train_images_per_s"], tr["batch_size"], *tr["image_size"], tr["iters"], tr["seconds_per_iter"]["median"])]
    if tr.get("phases_ms"):
        lines.append("training phases (median ms per iteration):")
        for name, ms in tr["phases_ms"].items():
            lines.append("  {:<24s} {:9.1f}".format(name, ms))
    if tr.get("missing_hooks"):
        lines.append("  (not separated: {})".format("; ".join(tr["missing_hooks"])))
    return "\n".join(lines)


def export_main(argv=None):
    """``scripts/export_model.py``: static Paddle Inference model + infer_cfg.yml."""
    def main(argv):
        p = base_parser("Export HTC to a Paddle Inference model (deploy/python/infer.py runs it)")
        p.add_argument("--output_dir", default="output_inference", help="the model goes to OUTPUT_DIR/<config name>")
        p.add_argument("--draw_threshold", type=float, default=0.5, help="stored in infer_cfg.yml")
        args = p.parse_args(argv)
        from .engine.export import export_model

        cfg = load_cli_config(args)
        out = os.path.join(args.output_dir, cfg.get("filename", "model"))
        export_model(cfg, out, draw_threshold=args.draw_threshold)
        print("exported to {}".format(out))
        return out

    return _run(main, argv)


def convert_mmdet_main(argv=None):
    """``scripts/convert_mmdet.py``: mmdetection HTC weights (.pth/.npz) -> .pdparams for a config's model."""
    def main(argv):
        p = argparse.ArgumentParser(
            description="Convert mmdetection HTC weights (.pth in either PyTorch format, or .npz/.pdparams with "
                        "mmdetection's key names) into a .pdparams for the model of a config. Every key must map: "
                        "unmatched keys and shape mismatches are listed by name and nothing is written.",
            formatter_class=HelpFormatter)
        p.add_argument("--src", nargs="+", required=True,
                       help="mmdetection weights; several files are merged (e.g. weights + semantic head)")
        p.add_argument("-c", "--config", required=True, help="YAML config of the model to convert for")
        p.add_argument("--out", default=None, help="output .pdparams (default: the first --src with .pdparams)")
        p.add_argument("-o", "--opt", nargs="*", default=[], action="extend",
                       help="override config keys, e.g. -o num_classes=4")
        add_debug_flag(p)
        args = p.parse_args(argv)
        from .engine.convert_mmdet import convert_mmdet_checkpoint

        out = args.out or os.path.splitext(args.src[0])[0] + ".pdparams"
        summary = convert_mmdet_checkpoint(args.src, args.config, out, overrides=args.opt)
        version = (summary["meta"] or {}).get("mmdet_version")
        print("converted {} tensors from {}{} for {} -> {}".format(
            summary["tensors"], " + ".join(summary["sources"]),
            " (mmdetection {})".format(version) if version else "", args.config, summary["out"]))
        return summary

    return _run(main, argv)


def analyze_main(argv=None):
    """``scripts/analyze.py``: analysis pictures of existing result files (what ``eval.py --plot`` draws)."""
    def main(argv):
        p = base_parser("Draw per-class precision-recall curves, the COCO error breakdown (C75, C50, Loc, Sim, Oth, "
                        "BG, FN) and a confusion matrix for bbox.json / mask.json results")
        p.add_argument("--output_eval", default=None,
                       help="folder holding bbox.json and/or mask.json (default: <save_dir>/<config name>)")
        p.add_argument("--anno", default=None,
                       help="COCO annotation file to score against (default: the config's EvalDataset)")
        p.add_argument("--output_dir", default=None, help="where the PNGs go (default: <output_eval>/plots)")
        p.add_argument("--score_thr", type=float, default=0.3, help="confusion matrix: minimum detection score")
        p.add_argument("--iou_thr", type=float, default=0.5, help="confusion matrix: minimum IoU of a match")
        args = p.parse_args(argv)
        from .engine.evaluator import build_eval_dataset, default_output_dir
        from .metrics.analysis import analyze_results

        cfg = load_cli_config(args)
        folder = args.output_eval or default_output_dir(cfg)
        files = {k: os.path.join(folder, f) for k, f in (("bbox", "bbox.json"), ("segm", "mask.json"))}
        present = {k: v for k, v in files.items() if os.path.isfile(v)}
        if not present:
            raise FileNotFoundError("neither {} nor {} exists: run eval.py first (or pass --output_eval)".format(
                files["bbox"], files["segm"]))
        dataset = None if args.anno else build_eval_dataset(cfg)
        anno = args.anno or dataset.get_anno()
        out = args.output_dir or os.path.join(folder, "plots")
        written = analyze_results(anno, present.get("bbox"), present.get("segm"), out, args.score_thr, args.iou_thr,
                                  image_root=_image_root(dataset))
        print("plots: {}".format(out))
        return written

    return _run(main, argv)


def plot_log_main(argv=None):
    """``scripts/plot_train_log.py``: loss / learning-rate / AP curves of a training log as a PNG."""
    def main(argv):
        p = base_parser("Plot the losses, learning rate and evaluation AP of a training log", config=False)
        p.add_argument("log", help="a train.log written by scripts/train.py")
        p.add_argument("--output", default=None, help="PNG file (default: <log without .log>_curves.png)")
        args = p.parse_args(argv)
        from .utils.plots import plot_training_log

        path = plot_training_log(args.log, args.output)
        print("curves: {}".format(path))
        return path

    return _run(main, argv)
