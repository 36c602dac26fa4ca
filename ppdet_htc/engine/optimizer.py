"""Learning-rate schedule and optimizer from YAML (PaddleDetection's ``LearningRate`` / ``OptimizerBuilder``).

The 1x schedule is linear warm-up (``lr = base * (start + (1-start) * i/steps)`` at iteration i) followed
by piecewise decay at epoch milestones (``gamma`` -> factors ``[0.1, 0.01]``). The schedule is a pure
function of the global iteration, so resuming only needs the iteration count.
"""
import logging
from typing import List, Optional, Union

import paddle
from paddle.optimizer.lr import LRScheduler

from ..core import register, serializable
from ..errors import ConfigError

__all__ = ["PiecewiseDecay", "LinearWarmup", "LearningRate", "OptimizerBuilder", "WarmupPiecewiseLR"]

logger = logging.getLogger(__name__)


@serializable
class PiecewiseDecay(object):
    """Multiply the lr by ``gamma[i]`` after ``milestones[i]`` epochs (a scalar gamma g means g, g/10, ...)."""

    def __init__(self, gamma: Union[float, List[float]] = (0.1, 0.01), milestones: List[int] = (8, 11),
                 values: Optional[List[float]] = None, use_warmup: bool = True):
        if isinstance(gamma, (list, tuple)):
            self.gamma = [float(g) for g in gamma]
        else:
            self.gamma = [float(gamma) / 10 ** i for i in range(len(milestones))]
        if len(self.gamma) != len(milestones):
            raise ConfigError("PiecewiseDecay: {} gamma values for {} milestones".format(len(self.gamma), len(milestones)))
        self.milestones = [int(m) for m in milestones]
        self.values = list(values) if values is not None else None
        self.use_warmup = use_warmup


@serializable
class LinearWarmup(object):
    """Linear warm-up from ``start_factor * base_lr`` over ``steps`` iterations (or ``epochs`` epochs)."""

    def __init__(self, steps: int = 500, start_factor: float = 1.0 / 3, epochs: Optional[int] = None):
        self.steps = int(steps)
        self.start_factor = float(start_factor)
        self.epochs = epochs


class WarmupPiecewiseLR(LRScheduler):
    """lr(i) = warm-up factor (i < warmup_steps) x piecewise factor of the iteration i."""

    def __init__(self, base_lr, boundaries, factors, warmup_steps=0, start_factor=1.0, last_epoch=-1):
        self.boundaries = [int(b) for b in boundaries]
        self.factors = [float(f) for f in factors]
        self.warmup_steps = int(warmup_steps)
        self.start_factor = float(start_factor)
        super().__init__(learning_rate=base_lr, last_epoch=last_epoch)

    def lr_at(self, step):
        factor = 1.0
        for b, f in zip(self.boundaries, self.factors):
            if step >= b:
                factor = f
        lr = self.base_lr * factor
        if step < self.warmup_steps:
            alpha = step / float(self.warmup_steps)
            lr = self.base_lr * (self.start_factor * (1 - alpha) + alpha)
        return lr

    def get_lr(self):
        return self.lr_at(self.last_epoch)


@register
class LearningRate(object):
    """``base_lr`` and its schedulers; ``auto_scale`` scales ``base_lr`` by total_batch/``base_batch_size``."""

    def __init__(self, base_lr: float = 0.01, schedulers: list = None, auto_scale: bool = False,
                 base_batch_size: int = 16):
        self.base_lr = float(base_lr)
        self.schedulers = [self._build(s) for s in (schedulers or [])]
        self.auto_scale = auto_scale
        self.base_batch_size = int(base_batch_size)

    @staticmethod
    def _build(s):
        from ..core.config import TaggedDict, create

        if isinstance(s, TaggedDict):
            return create(s)
        return s

    def effective_base_lr(self, total_batch_size):
        """The base lr after the optional linear scaling rule (logged by the trainer)."""
        if not self.auto_scale:
            return self.base_lr
        return self.base_lr * float(total_batch_size) / self.base_batch_size

    def __call__(self, step_per_epoch, total_batch_size=None):
        base = self.effective_base_lr(total_batch_size) if total_batch_size else self.base_lr
        decay = next((s for s in self.schedulers if isinstance(s, PiecewiseDecay)), None)
        warm = next((s for s in self.schedulers if isinstance(s, LinearWarmup)), None)
        boundaries, factors = [], []
        if decay is not None:
            boundaries = [int(step_per_epoch) * m for m in decay.milestones]
            if decay.values is not None:
                factors = [v / self.base_lr for v in decay.values[1:]]
            else:
                factors = list(decay.gamma)
        warm_steps, start = 0, 1.0
        if warm is not None and (decay is None or decay.use_warmup):
            warm_steps = warm.epochs * int(step_per_epoch) if warm.epochs is not None else warm.steps
            warm_steps = max(int(warm_steps), 1)
            start = warm.start_factor
        return WarmupPiecewiseLR(base, boundaries, factors, warm_steps, start)


@register
class OptimizerBuilder(object):
    """Momentum/SGD/Adam/AdamW with L2 (or L1) decay and optional gradient clipping by global norm."""

    def __init__(self, clip_grad_by_norm: Optional[float] = None, clip_grad_by_value: Optional[float] = None,
                 regularizer: Optional[dict] = None, optimizer: Optional[dict] = None):
        self.clip_grad_by_norm = clip_grad_by_norm
        self.clip_grad_by_value = clip_grad_by_value
        self.regularizer = regularizer if regularizer is not None else {"type": "L2", "factor": 0.0001}
        self.optimizer = optimizer if optimizer is not None else {"type": "Momentum", "momentum": 0.9}

    def __call__(self, learning_rate, model):
        grad_clip = None
        if self.clip_grad_by_norm is not None:
            grad_clip = paddle.nn.ClipGradByGlobalNorm(clip_norm=float(self.clip_grad_by_norm))
        elif self.clip_grad_by_value is not None:
            v = float(self.clip_grad_by_value)
            grad_clip = paddle.nn.ClipGradByValue(min=-v, max=v)
        decay = None
        if self.regularizer and self.regularizer != "None":
            kind = self.regularizer.get("type", "L2")
            if kind not in ("L1", "L2"):
                raise ConfigError("OptimizerBuilder.regularizer.type must be L1 or L2, got {!r}".format(kind))
            decay = getattr(paddle.regularizer, kind + "Decay")(float(self.regularizer.get("factor", 0.0)))
        args = dict(self.optimizer)
        kind = args.pop("type", "Momentum")
        if not hasattr(paddle.optimizer, kind):
            raise ConfigError("OptimizerBuilder.optimizer.type {!r} is not a paddle.optimizer class".format(kind))
        params = [p for p in model.parameters() if not p.stop_gradient]
        if kind in ("AdamW",):
            return getattr(paddle.optimizer, kind)(learning_rate=learning_rate, parameters=params,
                                                   grad_clip=grad_clip, **args)
        return getattr(paddle.optimizer, kind)(learning_rate=learning_rate, parameters=params,
                                               weight_decay=decay, grad_clip=grad_clip, **args)
