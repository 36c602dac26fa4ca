"""Progress people can see wherever the output goes: a tqdm bar on a terminal, timed lines elsewhere.

Long jobs (evaluation, folder inference, training, downloads, weight conversion, demo-data generation)
report through :func:`progress`. When both stdout and stderr are terminals it is a tqdm bar. Otherwise
(CI, ``nohup``, ``| tee``, a notebook's log) a bar would either print nothing or one line per item, so it
writes one line every ``interval`` seconds instead::

    eval: 24/60 img (40%) | 3.10 img/s | elapsed 0:00:08 | ETA 0:00:12

and a closing ``done`` line when at least one progress line was written (quick jobs stay silent).

Environment: ``PPDET_HTC_PROGRESS`` = ``auto`` (default) | ``bar`` | ``lines`` | ``off``;
``PPDET_HTC_PROGRESS_INTERVAL`` = seconds between lines (default 10).
"""
import datetime
import logging
import os
import sys
import time

from ..errors import ConfigError

__all__ = ["progress", "Progress", "LineProgress", "NullProgress", "progress_mode", "progress_interval",
           "format_duration", "MODE_ENV", "INTERVAL_ENV"]

MODE_ENV = "PPDET_HTC_PROGRESS"
INTERVAL_ENV = "PPDET_HTC_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0
_MODES = ("auto", "bar", "lines", "off")

logger = logging.getLogger("ppdet_htc.progress")


def progress_mode():
    """The mode from ``$PPDET_HTC_PROGRESS`` (unknown values are an error naming the variable)."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ConfigError("${}={!r}: expected one of {}".format(MODE_ENV, mode, ", ".join(_MODES)))
    return mode


def progress_interval(default=DEFAULT_INTERVAL):
    """Seconds between progress lines: ``$PPDET_HTC_PROGRESS_INTERVAL`` or ``default``."""
    value = os.environ.get(INTERVAL_ENV)
    if value is None or not value.strip():
        return float(default)
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError("${}={!r}: expected a number of seconds".format(INTERVAL_ENV, value)) from None
    if seconds < 0:
        raise ConfigError("${}={!r}: must be >= 0".format(INTERVAL_ENV, value))
    return seconds


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_duration(seconds):
    """``H:MM:SS`` (``?`` when unknown)."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    return str(datetime.timedelta(seconds=int(round(max(seconds, 0.0)))))


class NullProgress(object):
    """Progress that reports nothing (disabled, or a non-zero rank)."""

    n = 0

    def update(self, n=1):
        self.n += n

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class LineProgress(object):
    """One line every ``interval`` seconds with done/total, rate, elapsed time and ETA.

    ``write`` receives each line (default: the ``ppdet_htc`` logger when the command line set it up,
    otherwise stdout). ``clock`` is injectable so tests can drive the time.
    """

    def __init__(self, total=None, desc="", unit="it", interval=None, write=None, clock=time.monotonic,
                 initial=0, unit_scale=False):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval = progress_interval() if interval is None else float(interval)
        self.write = write or _default_write
        self.clock = clock
        self.unit_scale = unit_scale
        self.n = initial
        self._initial = initial
        self._start = clock()
        self._last = self._start
        self.lines = 0
        self._closed = False

    def _amount(self, n):
        if not self.unit_scale:
            return str(int(n))
        for suffix in ("", "K", "M", "G", "T"):
            if abs(n) < 1024 or suffix == "T":
                return "{:.1f}{}".format(n, suffix) if suffix else str(int(n))
            n /= 1024.0
        return str(n)

    def _line(self, now, final=False):
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._initial) / elapsed
        head = "{}: ".format(self.desc) if self.desc else ""
        if self.total:
            done = "{}/{} {} ({:.0f}%)".format(self._amount(self.n), self._amount(self.total), self.unit,
                                              100.0 * self.n / self.total)
        else:
            done = "{} {}".format(self._amount(self.n), self.unit)
        rate_text = "{} {}/s".format(self._amount(rate) if self.unit_scale else "{:.2f}".format(rate), self.unit)
        if final:
            return "{}done, {} in {} | {}".format(head, done, format_duration(elapsed), rate_text)
        eta = (self.total - self.n) / rate if self.total and rate > 0 else None
        return "{}{} | {} | elapsed {} | ETA {}".format(head, done, rate_text, format_duration(elapsed),
                                                          format_duration(eta))

    def update(self, n=1):
        self.n += n
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self.lines += 1
            self.write(self._line(now))

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.lines:  # a job that printed progress also says it finished; quick jobs stay silent
            self.write(self._line(self.clock(), final=True))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _default_write(line):
    base = logging.getLogger("ppdet_htc")
    if base.handlers and logger.isEnabledFor(logging.INFO):  # the command line's logger (and its log file)
        logger.info(line)
    else:
        print(line, flush=True)


class Progress(object):
    """A tqdm bar (terminal) with the same small interface as :class:`LineProgress`."""

    def __init__(self, total=None, desc="", unit="it", initial=0, unit_scale=False):
        from tqdm import tqdm

        kwargs = {"unit_scale": True, "unit_divisor": 1024} if unit_scale else {}
        self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=True, dynamic_ncols=True,
                         **kwargs)

    @property
    def n(self):
        return self._bar.n

    def update(self, n=1):
        self._bar.update(n)

    def close(self):
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(total=None, desc="", unit="it", enabled=True, interval=None, initial=0, unit_scale=False):
    """The right progress reporter for where the output goes (see the module docstring).

    ``enabled=False`` (or ``$PPDET_HTC_PROGRESS=off``) gives a silent reporter; ranks > 0 of a
    multi-process run are silent too.
    """
    rank = int(os.environ.get("PADDLE_TRAINER_ID", os.environ.get("RANK", "0")) or 0)
    mode = progress_mode()
    if not enabled or mode == "off" or rank != 0:
        return NullProgress()
    if mode == "bar" or (mode == "auto" and _is_terminal(sys.stderr) and _is_terminal(sys.stdout)):
        return Progress(total, desc, unit, initial=initial, unit_scale=unit_scale)
    return LineProgress(total, desc, unit, interval=interval, initial=initial, unit_scale=unit_scale)
