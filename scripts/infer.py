#!/usr/bin/env python
"""Run HTC on images: `python scripts/infer.py -c CONFIG -o weights=W --infer_img a.jpg` (see --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import infer_main  # noqa: E402

if __name__ == "__main__":
    infer_main()
