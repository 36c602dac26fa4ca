#!/usr/bin/env python
"""Convert mmdetection HTC weights: `python scripts/convert_mmdet.py --src X.pth --config CFG --out X.pdparams`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import convert_mmdet_main  # noqa: E402

if __name__ == "__main__":
    convert_mmdet_main()
