"""Named phase timing for the benchmark: ``with phase('box_stage0'): ...`` inside the model.

Disabled (the default) it costs one attribute check. Enabled, each phase synchronises the device
before and after (GPU kernels run asynchronously) and accumulates wall time; nested phases are
attributed to the innermost one only, so the phases add up to the total.
"""
import contextlib
import time

__all__ = ["phase", "PhaseTimer", "active_timer"]

_ACTIVE = [None]


def active_timer():
    return _ACTIVE[0]


def _sync():
    import paddle

    if paddle.device.get_device().startswith("gpu"):
        paddle.device.synchronize()


class PhaseTimer(object):
    """Collects ``{phase: seconds}`` while active (``with PhaseTimer() as t: ...``)."""

    def __init__(self, sync=True):
        self.sync = sync
        self.times = {}
        self._stack = []

    def __enter__(self):
        self._prev = _ACTIVE[0]
        _ACTIVE[0] = self
        return self

    def __exit__(self, *exc):
        _ACTIVE[0] = self._prev
        return False

    def _now(self):
        if self.sync:
            _sync()
        return time.perf_counter()

    def push(self, name):
        t = self._now()
        if self._stack:  # pause the enclosing phase
            outer, start = self._stack[-1]
            self.times[outer] = self.times.get(outer, 0.0) + t - start
        self._stack.append([name, t])

    def pop(self):
        t = self._now()
        name, start = self._stack.pop()
        self.times[name] = self.times.get(name, 0.0) + t - start
        if self._stack:
            self._stack[-1][1] = t

    def add(self, name, seconds):
        self.times[name] = self.times.get(name, 0.0) + seconds

    @property
    def current(self):
        """The innermost running phase (None outside any phase)."""
        return self._stack[-1][0] if self._stack else None


@contextlib.contextmanager
def _timed(timer, name):
    timer.push(name)
    try:
        yield
    finally:
        timer.pop()


_NULL = contextlib.nullcontext()


def phase(name):
    """Context manager timing ``name`` when a :class:`PhaseTimer` is active, else a no-op."""
    timer = _ACTIVE[0]
    if timer is None:
        return _NULL
    return _timed(timer, name)
