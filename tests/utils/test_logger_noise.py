"""Paddle's harmless warnings are hidden from normal runs and shown with --debug / PPDET_HTC_DEBUG."""
import subprocess
import sys
import warnings

import pytest

from ppdet_htc.utils.logger import PADDLE_NOISE, debug_requested, quiet_third_party


def test_debug_flag_and_environment(monkeypatch):
    monkeypatch.delenv("PPDET_HTC_DEBUG", raising=False)
    assert not debug_requested(["-c", "x.yml"])
    assert debug_requested(["-c", "x.yml", "--debug"])
    for value, expected in (("1", True), ("yes", True), ("0", False), ("false", False), ("", False)):
        monkeypatch.setenv("PPDET_HTC_DEBUG", value)
        assert debug_requested([]) is expected, value


@pytest.mark.parametrize("debug", [False, True])
def test_noise_filters(debug, monkeypatch):
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert quiet_third_party(debug) is (not debug)
        warnings.warn("No ccache found. Please be aware ...", UserWarning)
        warnings.warn("When training, we now always track global mean and variance.", UserWarning)
        warnings.warn("something that matters", UserWarning)
    messages = [str(w.message) for w in caught]
    assert "something that matters" in messages
    assert (len(messages) == 1) is (not debug), messages
    import os

    assert (os.environ.get("GLOG_minloglevel") == "2") is (not debug)
    assert len(PADDLE_NOISE) >= 4


def test_a_command_hides_the_ccache_warning_unless_debug(tmp_path):
    """The warning comes from importing Paddle, which the command does after installing the filters."""
    code = ("import sys; from ppdet_htc.cli import _run\n"
            "def main(argv):\n    import paddle  # noqa: F401\n    return 0\n"
            "_run(main, sys.argv[1:])\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PPDET_HTC_DEBUG", "GLOG_minloglevel")}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    loud = subprocess.run([sys.executable, "-c", code, "--debug"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "ccache" not in quiet.stderr
    if "ccache" not in loud.stderr:
        pytest.skip("this Paddle build does not warn about ccache")
