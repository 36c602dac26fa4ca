#!/usr/bin/env python
"""Training curves: `python scripts/plot_train_log.py output/CONFIG/train.log` writes output/CONFIG/train_curves.png.

Losses, learning rate and evaluation AP over the iterations (scripts/train.py draws them at the end of training).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import plot_log_main  # noqa: E402

if __name__ == "__main__":
    plot_log_main()
