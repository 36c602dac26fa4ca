"""Training logs read back for plotting, and the curves drawn from the bundled demo's log."""
import os

import cv2
import pytest

from ppdet_htc.errors import TrainingLogError
from ppdet_htc.utils.plots import plot_training_log
from ppdet_htc.utils.train_log import parse_train_log

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_LOG = os.path.join(REPO, "weights", "htc_r18_demo_shapes.train.log")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_demo_training_log_parses():
    log = parse_train_log(DEMO_LOG)
    assert log.steps_per_epoch == 150 and log.num_epochs == 10
    assert len(log) == 75 and log.iters[0] == 20 and log.iters[-1] == 1500  # a line every 20 iterations
    assert log.lr[0] == pytest.approx(0.001352) and max(log.lr) == pytest.approx(0.02)
    assert "loss" in log.losses and "loss_semantic" in log.losses and len(log.losses["loss"]) == 75
    assert log.losses["loss"][0] == pytest.approx(4.7045)
    # This older log only has the "best bbox AP so far" lines: epoch 4 (45.40) and epoch 9 (77.50).
    assert [(e["epoch"], e["iter"], e["bbox_ap"]) for e in log.evals] == [(4, 750, 45.4), (9, 1500, 77.5)]


def test_current_format_eval_lines_and_resumed_logs(tmp_path):
    path = tmp_path / "train.log"
    line = ("[01/01 00:00:{s:02d}] ppdet_htc.engine.trainer INFO: epoch {e}/2 iter {i}/4 (global {g}) lr {lr} "
            "loss_rpn_cls: 0.5000 loss: {loss} | 3.00 images/s data 0.010s eta 0:00:10\n")
    text = [line.format(s=1, e=0, i=2, g=2, lr="0.010000", loss="2.0000"),
            line.format(s=2, e=0, i=4, g=4, lr="0.020000", loss="1.5000"),
            "[01/01 00:00:03] ppdet_htc.engine.trainer INFO: eval after epoch 0 (global iteration 4): "
            "bbox AP 12.50, mask AP 11.25\n",
            "[01/01 00:00:04] ppdet_htc.engine.trainer INFO: best bbox AP so far: 12.50 (epoch 0) -> x\n",
            # resumed from iteration 2: the later line for iteration 4 wins
            line.format(s=5, e=0, i=4, g=4, lr="0.020000", loss="1.4000"),
            line.format(s=6, e=1, i=2, g=6, lr="0.002000", loss="nan")]
    path.write_text("".join(text))
    log = parse_train_log(str(path))
    assert log.iters == [2, 4, 6] and log.losses["loss"][1] == 1.4
    assert log.losses["loss"][2] != log.losses["loss"][2]  # nan kept as nan
    assert log.evals == [{"epoch": 0, "iter": 4, "bbox_ap": 12.5, "mask_ap": 11.25}]
    png = plot_training_log(str(path))
    assert png == str(tmp_path / "train_curves.png") and open(png, "rb").read(8) == PNG_SIGNATURE


def test_demo_log_curves_are_written(tmp_path):
    out = plot_training_log(DEMO_LOG, str(tmp_path / "curves.png"))
    data = open(out, "rb").read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20000
    im = cv2.imread(out)
    assert im.shape[0] > 500 and im.shape[1] > 500 and im.std() > 10


def test_a_log_without_training_lines_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.log"
    path.write_text("[01/01 00:00:00] ppdet_htc INFO: nothing yet\n")
    with pytest.raises(TrainingLogError, match="no training lines"):  # a user error: one line from the CLI
        parse_train_log(str(path))
