"""Shared test settings: CPU only, quiet Paddle logs, fixed seeds."""
import os
import random

import numpy as np
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("FLAGS_call_stack_level", "0")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_REFERENCE = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "reference"))


@pytest.fixture(autouse=True)
def _ppdet_htc_logs_reach_caplog():
    """The CLI's ``setup_logger`` stops ``ppdet_htc`` records from propagating (no duplicate lines); pytest's
    ``caplog`` listens on the root logger, so tests get propagation back."""
    import logging

    logging.getLogger("ppdet_htc").propagate = True
    yield


_INITIAL_SWITCHES = {k: os.environ.get(k) for k in ("PPDET_HTC_EXACT", "PPDET_HTC_RUNTIME")}


@pytest.fixture(autouse=True)
def _restore_process_switches():
    """CLI tests with ``--exact`` set PPDET_HTC_EXACT for the whole process (as they should in a real run);
    later tests get the environment of the session's start back (also after module fixtures that ran the CLI)."""
    yield
    for k, v in _INITIAL_SWITCHES.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import paddle

        paddle.seed(0)
        paddle.set_device("cpu")
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def shared_reference():
    if not os.path.isdir(SHARED_REFERENCE):
        pytest.skip("../shared/reference is not available")
    return SHARED_REFERENCE
