"""The bundled demo checkpoint still reaches its recorded AP on the demo val split (README quick start)."""
import json
import os

import pytest

from ppdet_htc.core import load_config
from ppdet_htc.engine.evaluator import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "demo", "htc_r18_demo_shapes.yml")
RECORD = os.path.join(REPO, "weights", "htc_r18_demo_shapes.metrics.json")


def test_shipped_demo_checkpoint_keeps_its_ap(tmp_path):
    recorded = json.load(open(RECORD))
    cfg = load_config(CONFIG, ["worker_num=0"])
    metrics = evaluate(cfg, output_eval=str(tmp_path), progress=False)
    box, mask = 100 * metrics["bbox"]["AP"], 100 * metrics["segm"]["AP"]
    assert box >= recorded["bbox_ap"] - 1.0, (box, recorded)
    assert mask >= recorded["mask_ap"] - 1.0, (mask, recorded)
    # The recorded run met the demo's bar (box AP 50 / mask AP 45).
    assert recorded["bbox_ap"] >= 50.0 and recorded["mask_ap"] >= 45.0
    assert json.load(open(tmp_path / "metrics.json"))["bbox"]["AP"] == pytest.approx(metrics["bbox"]["AP"])


def test_model_zoo_and_weights_readme_state_the_recorded_demo_numbers():
    from ppdet_htc.utils.model_zoo import load_manifest

    recorded = json.load(open(RECORD))
    entry = {e["name"]: e for e in load_manifest()}["htc_r18_demo_shapes"]
    assert entry["metrics"]["bbox_ap"] == recorded["bbox_ap"] and entry["metrics"]["mask_ap"] == recorded["mask_ap"]
    readme = open(os.path.join(REPO, "weights", "README.md")).read()
    row = next(line for line in readme.splitlines() if line.startswith("| `htc_r18_demo_shapes` |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[4:6] == [str(recorded["bbox_ap"]), str(recorded["mask_ap"])]
