"""Stop a diverged training step before NaN/inf boxes reach a fused detection kernel.

After a step with a far too high learning rate the losses can still be finite while the new weights
make the next forward pass produce NaN/inf box deltas. Paddle's CPU ``roi_align`` kernel then aborts
the whole process (``std::length_error`` from ``vector::reserve`` when it sizes its sampling grid from a
NaN box), so the loss check after the forward pass never runs. The guard checks the tensors that
become boxes, right where they are produced:

* the RPN's score and delta maps (all levels), before the proposal kernel runs (checked when the
  anchor generator is called, which happens after the score/delta convolutions);
* each cascade stage's box deltas, before they are decoded into the next stage's RoIs.

It uses forward hooks on the model's layers (names as in the checkpoint layout), so the model code
needs no change; a layer that does not exist is simply not guarded. Only training-mode forward passes
are checked. With several processes the verdict is all-reduced so every rank stops at the same point
(otherwise the others would wait forever in the gradient all-reduce).
"""
import logging

import paddle

__all__ = ["NonFiniteValues", "FiniteGuard", "any_rank"]

logger = logging.getLogger(__name__)

_COLLECT = ("rpn_head.rpn_rois_score", "rpn_head.rpn_rois_delta")
_CHECK_BEFORE = ("rpn_head.anchor_generator",)
_CHECK_AFTER_PREFIX = "bbox_head.bbox_delta_stage"


class NonFiniteValues(Exception):
    """Internal signal: ``where`` produced NaN/inf in a training forward pass (the trainer reports it)."""

    def __init__(self, where):
        super().__init__("non-finite values in the output of {}".format(where))
        self.where = where


def any_rank(flag, world_size):
    """``flag`` (a Python bool) OR-ed over all processes."""
    if world_size <= 1:
        return bool(flag)
    import paddle.distributed as dist

    t = paddle.to_tensor([1 if flag else 0], dtype="int32")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(int(t.numpy()[0]))


def _all_finite(tensors):
    flags = [paddle.isfinite(t).all() for t in tensors if t is not None and t.size > 0]
    if not flags:
        return True
    return bool(paddle.stack(flags).all().numpy())


class FiniteGuard(object):
    """Install the checks on ``model``; ``remove()`` takes them out again."""

    def __init__(self, model, world_size=1):
        self.world_size = int(world_size)
        self._pending = []
        self._handles = []
        layers = dict(model.named_sublayers())
        for name in _COLLECT:
            if name in layers:
                self._handles.append(layers[name].register_forward_post_hook(self._collector(name)))
        for name in _CHECK_BEFORE:
            if name in layers:
                self._handles.append(layers[name].register_forward_pre_hook(self._pending_checker()))
        for name, layer in layers.items():
            if name.startswith(_CHECK_AFTER_PREFIX):
                self._handles.append(layer.register_forward_post_hook(self._output_checker(name)))
        self.guarded = sorted(set(n for n in layers if n in _COLLECT or n.startswith(_CHECK_AFTER_PREFIX)))
        if not self.guarded:
            logger.warning("FiniteGuard: none of the guarded layers exists in this model; only the losses are checked")

    def _collector(self, name):
        def hook(layer, inputs, output):
            if layer.training:
                self._pending.append((name, output))
        return hook

    def _pending_checker(self):
        def hook(layer, inputs):
            if not layer.training:
                return None
            pending, self._pending = self._pending, []
            ok = _all_finite([t for _, t in pending])
            if any_rank(not ok, self.world_size):
                bad = [n for n, t in pending if not _all_finite([t])]
                raise NonFiniteValues(bad[0] if bad else "another process")
            return None
        return hook

    def _output_checker(self, name):
        def hook(layer, inputs, output):
            if layer.training and any_rank(not _all_finite([output]), self.world_size):
                raise NonFiniteValues(name if not _all_finite([output]) else "another process")
            return None
        return hook

    def reset(self):
        """Forget collected tensors (after a step that stopped half-way)."""
        self._pending = []

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._pending = []
