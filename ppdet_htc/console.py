"""The ``ppdet-htc-*`` console commands (setup.py entry points).

A console script exits with whatever its function returns, and the ``cli`` mains return their results
(a metrics dict, a path) for Python callers; that made a successful ``ppdet-htc-eval`` exit 1. These
wrappers run a main and return 0; failures still exit non-zero (2 for user errors, see ``cli._run``).
"""
import sys

__all__ = ["train", "evaluate", "infer", "export", "benchmark", "analyze", "plot_log", "demo_data", "convert_mmdet"]


def _call(name):
    from . import cli

    getattr(cli, name)(sys.argv[1:])
    return 0


def train():
    return _call("train_main")


def evaluate():
    return _call("eval_main")


def infer():
    return _call("infer_main")


def export():
    return _call("export_main")


def benchmark():
    return _call("benchmark_main")


def analyze():
    return _call("analyze_main")


def plot_log():
    return _call("plot_log_main")


def convert_mmdet():
    """``ppdet-htc-convert-mmdet`` (the converter's main lives in ``cli`` as ``convert_mmdet_main``)."""
    return _call("convert_mmdet_main")


def demo_data():
    """``ppdet-htc-demo-data``: the generator's own main, with the commands' error handling (``cli._run``)."""
    from . import cli
    from .data.demo_shapes import main

    cli._run(main, sys.argv[1:])
    return 0
