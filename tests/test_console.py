"""Console entry points exit 0 on success even though the cli mains return results (metrics, paths)."""
import os
import sys

import pytest

from ppdet_htc import cli, console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_success_returns_exit_code_0_not_the_result(monkeypatch):
    calls = []

    def fake_main(argv=None):
        calls.append(argv)
        return {"bbox": {"AP": 0.5}}  # what eval_main returns; sys.exit(dict) would exit 1

    monkeypatch.setattr(cli, "eval_main", fake_main)
    monkeypatch.setattr(sys, "argv", ["ppdet-htc-eval", "-c", "x.yml"])
    assert console.evaluate() == 0
    assert calls == [["-c", "x.yml"]]


def test_every_setup_entry_point_names_a_console_function():
    text = open(os.path.join(REPO, "setup.py")).read()
    targets = [line.split("=", 1)[1].strip().strip('",') for line in text.splitlines()
               if line.strip().startswith('"ppdet-htc-')]
    assert len(targets) >= 8
    for target in targets:
        module, func = target.split(":")
        assert module == "ppdet_htc.console" and callable(getattr(console, func)), target


def test_plot_log_command_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ppdet-htc-plot-log", os.path.join(REPO, "weights",
                                                                         "htc_r18_demo_shapes.train.log"),
                                      "--output", str(tmp_path / "c.png")])
    assert console.plot_log() == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(sys, "argv", ["ppdet-htc-plot-log", str(tmp_path / "missing.log")])
    with pytest.raises(SystemExit) as e:  # a user error: one line, exit code 2
        console.plot_log()
    assert e.value.code == 2


def test_demo_data_command_exits_0_and_2_on_a_user_error(tmp_path, monkeypatch, capsys):
    root = tmp_path / "demo"
    monkeypatch.setattr(sys, "argv", ["ppdet-htc-demo-data", "--root", str(root), "--num_train", "1", "--num_val",
                                      "1"])
    assert console.demo_data() == 0
    assert (root / "annotations" / "instances_val.json").is_file()
    monkeypatch.setattr(sys, "argv", ["ppdet-htc-demo-data", "--root", str(tmp_path / "bad"), "--num_train", "-1"])
    with pytest.raises(SystemExit) as e:
        console.demo_data()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if x.startswith("error:")] == [
        "error: image counts must be >= 0, got num_train=-1 num_val=60"] and "Traceback" not in err


def test_every_command_accepts_debug(monkeypatch):
    """--debug is one flag of every command (also the converter's own parser)."""
    import argparse

    class Parsed(Exception):
        pass

    for name in [n for n in dir(cli) if n.endswith("_main")]:
        seen = {}

        def fake_parse_args(self, args=None, namespace=None):
            seen["options"] = {o for a in self._actions for o in a.option_strings}
            raise Parsed  # stop before the command runs

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", fake_parse_args)
        with pytest.raises(Parsed):
            getattr(cli, name)([])
        assert "--debug" in seen["options"], name
