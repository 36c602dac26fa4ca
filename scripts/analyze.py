#!/usr/bin/env python
"""Analysis pictures of eval results: `python scripts/analyze.py -c CONFIG [--output_eval DIR]` (see --help).

Draws per-class precision-recall curves, the COCO error breakdown (C75, C50, Loc, Sim, Oth, BG, FN) and a
confusion matrix from the bbox.json / mask.json that scripts/eval.py wrote (`eval.py --plot` does the same).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import analyze_main  # noqa: E402

if __name__ == "__main__":
    analyze_main()
