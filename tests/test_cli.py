"""Every user error is one line on stderr with exit code 2 (--debug adds the traceback); bugs keep theirs."""
import functools
import http.server
import os
import threading

import cv2
import numpy as np
import pytest

from ppdet_htc.cli import eval_main, infer_main, train_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "im.png")
    cv2.imwrite(path, np.full((64, 80, 3), 100, np.uint8))
    return path


def fails_with_one_line(capsys, main, argv):
    """Run a CLI entry point that must fail as a user error; return its single ``error:`` line (and stderr)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0], err


@pytest.fixture
def http_404(tmp_path):
    """A local HTTP server that answers 404 to everything."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:{}".format(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_download_failure_is_one_line(capsys, image, http_404, tmp_path, monkeypatch):
    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    url = http_404 + "/models/htc.pdparams"
    line, err = fails_with_one_line(capsys, infer_main, ["-c", TINY, "--infer_img", image, "-o", "weights=" + url])
    assert url in line and "404" in line and "Traceback" not in err


@pytest.mark.parametrize("opts, expected", [
    (["architecture=HybridTaskCascadee"], "unknown module 'HybridTaskCascadee' (architecture in -o (command line)); "
                                           "did you mean 'HybridTaskCascade'"),
    (["TestReader.sample_transforms=[{Decodee: {}}]"], "unknown transform 'Decodee'"),
    (["TestReader.sample_transforms=[{Resize: {target_size: abc}}]"], "Resize.target_size"),
    (["FPN.out_channel=1e-4"], "FPN.out_channel: expected int, got float 0.0001"),
    (["weights="], "no weights given"),
    (["ResNet.dcn_v1_stages=[7]"], "ResNet.dcn_v1_stages [7] must list stage indices 0..3"),
    (["FPN.has_extra_convs=true"], "FPN.has_extra_convs=True is not supported"),
])
def test_config_errors_are_one_line(capsys, image, opts, expected, tmp_path):
    from ppdet_htc.core import load_config
    from ppdet_htc.engine.checkpoint import save_state_file
    from ppdet_htc.engine.model_builder import build_model

    weights = str(tmp_path / "w.pdparams")
    save_state_file(weights, build_model(load_config(TINY)).state_dict())
    line, err = fails_with_one_line(capsys, infer_main, ["-c", TINY, "--infer_img", image, "--output_dir",
                                                         str(tmp_path), "-o", "weights=" + weights] + opts)
    assert expected in line, line
    assert "Traceback" not in err


def test_debug_flag_and_environment_show_the_traceback(capsys, image, monkeypatch, tmp_path):
    argv = ["-c", TINY, "--infer_img", image, "--output_dir", str(tmp_path), "-o", "architecture=Nope"]
    line, err = fails_with_one_line(capsys, infer_main, argv + ["--debug"])
    assert "Traceback" in err and "UnknownModuleError" in err and "unknown module 'Nope'" in line
    monkeypatch.setenv("PPDET_HTC_DEBUG", "1")
    line, err = fails_with_one_line(capsys, infer_main, argv)
    assert "Traceback" in err
    monkeypatch.setenv("PPDET_HTC_DEBUG", "0")
    line, err = fails_with_one_line(capsys, infer_main, argv)
    assert "Traceback" not in err


@pytest.mark.parametrize("bug", [KeyError("internal key"), ValueError("internal value"), TypeError("internal")])
def test_internal_bugs_are_not_disguised_as_user_errors(capsys, image, monkeypatch, bug, tmp_path):
    import ppdet_htc.engine.predictor as predictor

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(predictor, "build_model", broken)
    with pytest.raises(type(bug)):  # propagates with its traceback; not exit code 2
        infer_main(["-c", TINY, "--infer_img", image, "--output_dir", str(tmp_path)])
    assert "error:" not in capsys.readouterr().err


def test_ctrl_c_outside_the_training_loop_is_one_line(capsys, monkeypatch, tmp_path):
    import ppdet_htc.engine.trainer as trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "__init__", interrupted)
    line, _ = fails_with_one_line(capsys, train_main, ["-c", TINY, "--output_dir", str(tmp_path)])
    assert "interrupted" in line


def test_missing_files_are_one_line(capsys, tmp_path):
    line, _ = fails_with_one_line(capsys, eval_main, ["-c", str(tmp_path / "nope.yml")])
    assert "nope.yml" in line
    line, _ = fails_with_one_line(capsys, infer_main, ["-c", TINY, "--infer_dir", str(tmp_path / "none")])
    assert "none" in line
    line, _ = fails_with_one_line(capsys, infer_main, ["-c", TINY])
    assert "--infer_img" in line


@pytest.mark.parametrize("var, value", [("PPDET_HTC_PROGRESS", "sometimes"), ("PPDET_HTC_PROGRESS_INTERVAL", "soon")])
def test_bad_progress_settings_are_one_line(capsys, image, tmp_path, monkeypatch, var, value):
    from ppdet_htc.core import load_config
    from ppdet_htc.engine.checkpoint import save_state_file
    from ppdet_htc.engine.model_builder import build_model

    weights = str(tmp_path / "w.pdparams")
    save_state_file(weights, build_model(load_config(TINY)).state_dict())
    monkeypatch.setenv("PPDET_HTC_PROGRESS", "lines")
    monkeypatch.setenv(var, value)
    line, err = fails_with_one_line(capsys, infer_main, ["-c", TINY, "--infer_img", image, "--output_dir",
                                                         str(tmp_path / "out"), "-o", "weights=" + weights])
    assert "${}={!r}".format(var, value) in line and "Traceback" not in err


def test_a_file_that_is_not_a_training_log_is_one_line(capsys, tmp_path):
    from ppdet_htc.cli import plot_log_main

    log = tmp_path / "notes.log"
    log.write_text("nothing to plot here\n")
    line, err = fails_with_one_line(capsys, plot_log_main, [str(log)])
    assert str(log) in line and "no training lines" in line and "Traceback" not in err
