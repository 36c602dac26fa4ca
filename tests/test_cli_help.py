"""`--help` of every command documents every option once, with its default."""
import argparse

import pytest

from ppdet_htc import cli

# Every command's main (new commands are covered as soon as they exist).
MAINS = sorted(name for name in dir(cli) if name.endswith("_main") and callable(getattr(cli, name)))


def test_all_known_commands_are_covered():
    assert {"infer_main", "eval_main", "train_main", "export_main", "benchmark_main", "analyze_main",
            "plot_log_main"} <= set(MAINS)


class _Captured(Exception):
    pass


def _parser_of(main_name, monkeypatch):
    captured = {}

    def fake_parse_args(self, args=None, namespace=None):
        captured["parser"] = self
        raise _Captured

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", fake_parse_args)
    with pytest.raises(_Captured):
        getattr(cli, main_name)([])
    return captured["parser"]


@pytest.mark.parametrize("main_name", MAINS)
def test_every_option_has_help_and_states_its_default_once(main_name, monkeypatch):
    parser = _parser_of(main_name, monkeypatch)
    formatter = parser._get_formatter()
    seen = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = tuple(action.option_strings) or (action.dest,)
        assert not seen.intersection(names), names  # every option once
        seen.update(names)
        assert action.help, "{}: {} has no help text".format(main_name, names)
        text = formatter._get_help_string(action) % dict(vars(action), prog=parser.prog)
        count = text.lower().count("default")
        if not action.option_strings or action.required:
            assert count == 0, (names, text)  # positional / required: no default to state
        elif action.nargs == 0:  # a flag: off unless given
            assert count == 0, (names, text)
        else:
            assert count == 1, "{} {}: {!r}".format(main_name, names, text)


def test_help_output_lists_the_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        cli.eval_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--output_eval" in out and "output/<config name>" in out and "--plot" in out and "--debug" in out
    with pytest.raises(SystemExit):
        cli.benchmark_main(["--help"])
    assert "(default: 10)" in capsys.readouterr().out
