"""One logging format for scripts; only rank 0 logs at INFO in multi-process runs."""
import logging
import os
import sys

__all__ = ["setup_logger"]


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
