#!/usr/bin/env python
"""Evaluate HTC (COCO bbox + segm AP): `python scripts/eval.py -c CONFIG -o weights=W` (see --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import eval_main  # noqa: E402

if __name__ == "__main__":
    eval_main()
