"""One logging format for scripts; only rank 0 logs at INFO in multi-process runs; Paddle's noise filtered."""
import logging
import os
import sys
import warnings

__all__ = ["setup_logger", "quiet_third_party", "debug_requested", "PADDLE_NOISE", "DEBUG_ENV"]

DEBUG_ENV = "PPDET_HTC_DEBUG"

# Messages Paddle prints on every run that tell a user of these tools nothing they can act on
# (shown again with --debug / PPDET_HTC_DEBUG=1).
PADDLE_NOISE = (
    r"No ccache found",  # on import: only matters for compiling custom C++ operators
    r"When training, we now always track global mean and variance",  # every BatchNorm in train mode
    r"full_graph=False don't support input_spec",  # export: we do pass full_graph=True where it exists
    r"Tensor do not have 'place' interface for pir graph mode",  # export: tracing, no effect on the program
)


def debug_requested(argv=None):
    """True when ``--debug`` is on the command line or ``$PPDET_HTC_DEBUG`` is set (not 0/false/no)."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
    args = sys.argv[1:] if argv is None else list(argv)
    return env or "--debug" in args


def quiet_third_party(debug=False):
    """Hide Paddle's harmless warnings and its C++ INFO/WARNING log lines unless ``debug``.

    Call it before Paddle is imported (its import warns, and its C++ logging reads ``GLOG_minloglevel``
    once). A ``GLOG_minloglevel`` the user set is respected. Returns True when filters were installed.
    """
    if debug:
        return False
    for pattern in PADDLE_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("GLOG_minloglevel", "2")
    return True


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is now (tools and tests replace it after the logger was set up)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def setup_logger(level=logging.INFO, log_file=None):
    """Configure the ``ppdet_htc`` logger (idempotent). Ranks > 0 only show warnings."""
    rank = int(os.environ.get("PADDLE_TRAINER_ID", os.environ.get("RANK", "0")) or 0)
    logger = logging.getLogger("ppdet_htc")
    logger.setLevel(level if rank == 0 else logging.WARNING)
    # Our handler prints the records. Paddle installs a handler on the root logger when it is imported;
    # propagating there would print every line a second time in another format.
    logger.propagate = False
    fmt = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", "%m/%d %H:%M:%S")
    if not any(getattr(h, "_ppdet_htc", False) for h in logger.handlers):
        h = _StdoutHandler()
        h.setFormatter(fmt)
        h._ppdet_htc = True
        logger.addHandler(h)
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a")
        fh.setFormatter(fmt)
        fh._ppdet_htc = True
        logger.addHandler(fh)
    return logger
