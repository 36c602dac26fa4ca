"""Progress reporting: timed lines (with rate and ETA) when output is not a terminal, a bar on a terminal."""
import io
import re

import pytest

from ppdet_htc.errors import ConfigError
from ppdet_htc.utils import progress as progress_mod
from ppdet_htc.utils.progress import LineProgress, NullProgress, Progress, format_duration, progress


class FakeClock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_lines_come_every_interval_not_every_item():
    clock, lines = FakeClock(), []
    bar = LineProgress(total=100, desc="eval", unit="img", interval=10, write=lines.append, clock=clock)
    for _ in range(100):  # 100 items, 0.5 s each: 50 s in total -> a line at 10, 20, 30, 40, 50 s
        clock.now += 0.5
        bar.update(1)
    assert len(lines) == 5
    first = lines[0]
    assert first.startswith("eval: 20/100 img (20%)")
    assert "2.00 img/s" in first and "elapsed 0:00:10" in first
    assert "ETA 0:00:40" in first  # 80 items left at 2 items/s
    bar.close()
    assert len(lines) == 6 and lines[-1].startswith("eval: done, 100/100 img (100%) in 0:00:50")
    bar.close()  # idempotent
    assert len(lines) == 6


def test_quick_jobs_stay_silent_and_unknown_totals_have_no_eta():
    clock, lines = FakeClock(), []
    with LineProgress(total=5, desc="quick", interval=10, write=lines.append, clock=clock) as bar:
        for _ in range(5):
            clock.now += 0.1
            bar.update()
    assert lines == []
    bar = LineProgress(total=None, desc="dl", unit="B", interval=1, write=lines.append, clock=clock,
                       unit_scale=True)
    clock.now += 2
    bar.update(3 * 1024 * 1024)
    assert re.match(r"dl: 3\.0M B \| 1\.5M B/s \| elapsed 0:00:02 \| ETA \?$", lines[0]), lines[0]


def test_progress_picks_lines_off_a_terminal_and_respects_the_environment(monkeypatch):
    monkeypatch.delenv(progress_mod.MODE_ENV, raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress(total=3), LineProgress)
    assert isinstance(progress(total=3, enabled=False), NullProgress)
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")  # other ranks of a multi-process run stay quiet
    assert isinstance(progress(total=3), NullProgress)
    monkeypatch.delenv("PADDLE_TRAINER_ID")
    monkeypatch.setenv(progress_mod.MODE_ENV, "off")
    assert isinstance(progress(total=3), NullProgress)
    monkeypatch.setenv(progress_mod.MODE_ENV, "bar")
    bar = progress(total=3)
    assert isinstance(bar, Progress)
    bar.close()
    monkeypatch.setenv(progress_mod.MODE_ENV, "sometimes")
    with pytest.raises(ConfigError, match="PPDET_HTC_PROGRESS"):  # a user error: one line from the CLI
        progress(total=3)
    monkeypatch.setenv(progress_mod.MODE_ENV, "lines")
    monkeypatch.setenv(progress_mod.INTERVAL_ENV, "2.5")
    assert progress(total=3).interval == 2.5
    monkeypatch.setenv(progress_mod.INTERVAL_ENV, "soon")
    with pytest.raises(ConfigError, match="PPDET_HTC_PROGRESS_INTERVAL"):
        progress(total=3)


def test_lines_go_to_stdout_without_a_configured_logger(monkeypatch, capsys):
    import logging

    monkeypatch.setattr(logging.getLogger("ppdet_htc"), "handlers", [])
    clock = FakeClock()
    bar = LineProgress(total=2, desc="x", interval=0, clock=clock)
    clock.now += 1
    bar.update()
    assert "x: 1/2 it (50%)" in capsys.readouterr().out


def test_format_duration():
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "?"
    assert format_duration(float("inf")) == "?"


def test_demo_generation_does_not_print_a_line_per_image(tmp_path, monkeypatch, capsys):
    from ppdet_htc.data.demo_shapes import generate_demo_dataset

    monkeypatch.delenv(progress_mod.MODE_ENV, raising=False)
    monkeypatch.setenv(progress_mod.INTERVAL_ENV, "30")
    generate_demo_dataset(str(tmp_path / "d"), num_train=4, num_val=2, progress=True)
    out = capsys.readouterr()
    assert "demo_shapes" not in out.out + out.err  # done in well under 30 s: no line at all
