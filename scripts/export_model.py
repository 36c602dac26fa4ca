#!/usr/bin/env python
"""Export HTC for Paddle Inference: `python scripts/export_model.py -c CONFIG -o weights=W --output_dir DIR`.

Writes DIR/<config name>/model.{json|pdmodel} + model.pdiparams and infer_cfg.yml; run it with
`python deploy/python/infer.py --model_dir DIR/<config name> --image_file a.jpg`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet_htc.cli import export_main  # noqa: E402

if __name__ == "__main__":
    export_main()
