"""Read a training log (``train.log`` written by ``scripts/train.py``) back into numbers for plotting.

The trainer logs one line per ``log_iter`` iterations::

    ... epoch 3/10 iter 20/150 (global 470) lr 0.020000 loss_rpn_cls: 0.02 ... loss: 2.47 | 2.69 images/s ...

and one line per evaluation (``eval after epoch 4 (global iteration 750): bbox AP 45.40, mask AP 44.10``;
logs written before that line existed have ``best bbox AP so far: 45.40 (epoch 4)``, which is used then).
A log appended to by a resumed run is read as one run: a later line for the same iteration wins.
"""
import re

from ..errors import TrainingLogError

__all__ = ["parse_train_log", "TrainLog"]

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
_ITER = re.compile(r"epoch (\d+)/(\d+) iter (\d+)/(\d+) \(global (\d+)\) lr (" + _NUM + r") (.*)$")
_LOSS = re.compile(r"(loss[A-Za-z0-9_]*): (" + _NUM + r")")
_EVAL = re.compile(r"eval after epoch (\d+) \(global iteration (\d+)\): bbox AP (" + _NUM + r"), mask AP (" + _NUM
                   + r")")
_BEST = re.compile(r"best bbox AP so far: (" + _NUM + r") \(epoch (\d+)\)")


class TrainLog(object):
    """Parsed log: ``iters`` (global iteration of each logged line), ``lr``, ``losses`` {name: [values]},
    ``epochs`` (epoch of each line), ``steps_per_epoch``, ``num_epochs`` and ``evals``: a list of dicts
    ``{epoch, iter, bbox_ap, mask_ap}`` (AP in percent; ``mask_ap`` None when the log does not say)."""

    def __init__(self, iters, epochs, lr, losses, evals, steps_per_epoch, num_epochs):
        self.iters = iters
        self.epochs = epochs
        self.lr = lr
        self.losses = losses
        self.evals = evals
        self.steps_per_epoch = steps_per_epoch
        self.num_epochs = num_epochs

    def __len__(self):
        return len(self.iters)


def parse_train_log(path):
    """Parse ``path``; raises ``ValueError`` naming the file when it has no training line at all."""
    rows = {}
    evals = {}
    steps_per_epoch = num_epochs = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _ITER.search(line)
            if m:
                epoch, num_epochs, _, steps_per_epoch, global_iter = (int(m.group(i)) for i in range(1, 6))
                losses = {k: float(v) for k, v in _LOSS.findall(m.group(7).split(" | ")[0])}
                rows[global_iter] = (epoch, float(m.group(6)), losses)
                continue
            m = _EVAL.search(line)
            if m:
                evals[int(m.group(1))] = {"epoch": int(m.group(1)), "iter": int(m.group(2)),
                                          "bbox_ap": float(m.group(3)), "mask_ap": float(m.group(4))}
                continue
            m = _BEST.search(line)
            if m and int(m.group(2)) not in evals:
                evals[int(m.group(2))] = {"epoch": int(m.group(2)), "iter": None, "bbox_ap": float(m.group(1)),
                                          "mask_ap": None}
    if not rows:
        raise TrainingLogError("{}: no training lines found (expected lines like 'epoch 0/12 iter 20/7329 (global 20) "
                         "lr ... loss: ...')".format(path))
    iters = sorted(rows)
    names = []
    for it in iters:
        for k in rows[it][2]:
            if k not in names:
                names.append(k)
    losses = {k: [rows[it][2].get(k, float("nan")) for it in iters] for k in names}
    for e in evals.values():
        if e["iter"] is None:
            e["iter"] = (e["epoch"] + 1) * steps_per_epoch
    return TrainLog(iters, [rows[it][0] for it in iters], [rows[it][1] for it in iters], losses,
                    [evals[k] for k in sorted(evals)], steps_per_epoch, num_epochs)
