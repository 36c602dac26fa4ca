"""Run by test_train.py under `paddle.distributed.launch --nproc_per_node 2`: train a few iterations and
save this rank's weights (snapshots are written by rank 0 only; this file lets the test compare ranks)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet_htc.core import load_config, merge_config  # noqa: E402
from ppdet_htc.engine.checkpoint import save_state_file  # noqa: E402
from ppdet_htc.engine.trainer import Trainer  # noqa: E402
from tests.engine.test_train import TINY, train_overrides  # noqa: E402


def main():
    out = os.environ["PPDET_TEST_OUT"]
    cfg = load_config(TINY)
    merge_config(cfg, train_overrides(os.environ["PPDET_TEST_SHAPES"]))
    merge_config(cfg, {"TrainReader": {"batch_size": 1}})
    trainer = Trainer(cfg, max_iters=4, seed=5, output_dir=out, progress=False)
    if trainer.rank == 0:
        save_state_file(os.path.join(out, "init.pdparams"), trainer.model.state_dict())
    trainer.train()
    save_state_file(os.path.join(out, "rank{}.pdparams".format(trainer.rank)), trainer.model.state_dict())


if __name__ == "__main__":
    main()
