#!/usr/bin/env python
"""Train or fine-tune HTC: `python scripts/train.py -c CONFIG [--eval] [-r SNAPSHOT]` (see --help).

Several processes: `python -m paddle.distributed.launch --gpus 0,1,2,3 scripts/train.py -c CONFIG`
(or `--nproc_per_node 2` on CPU).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import train_main  # noqa: E402

if __name__ == "__main__":
    train_main()
