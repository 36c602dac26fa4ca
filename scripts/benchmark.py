#!/usr/bin/env python
"""Benchmark HTC: `python scripts/benchmark.py -c CONFIG [--image_size 800 1333] [--json out.json]` (see --help).

Reports the machine, median/min/max latency after warm-up, images/s, peak memory, a per-phase breakdown,
FLOPs and the share of time outside convolutions and matrix products; `--train` adds training images/s.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import benchmark_main  # noqa: E402

if __name__ == "__main__":
    benchmark_main()
