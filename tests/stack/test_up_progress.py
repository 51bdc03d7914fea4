"""`up --rows N` shows how far the generating has gone, on a terminal (a hundred million rows
printed one line and then nothing for minutes)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from common.config import build_settings
from pipeline import stack


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_up_shows_the_share_of_rows_generated_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = build_settings({"SALESMART_STATE_DIR": str(tmp_path / "state")})
    shown = Terminal()
    monkeypatch.setattr("sys.stdout", shown)
    files = stack._data_files(None, 300_000, settings)
    generated = files[-1]
    assert generated.name == "generated-300000.csv"
    assert sum(1 for _ in generated.open()) == 300_001  # the header and the rows
    what = "- generating 300000 transactions ..."
    states = shown.getvalue().split("\r")
    assert states[:4] == [what, f"{what} 0%", f"{what} 33%", f"{what} 66%"]
    # The count is blanked, and the line ends as every step's does.
    assert states[4] == f"{what}    "
    assert states[5].startswith(f"{what} done (") and states[5].endswith("s)\n")
    assert len(states) == 6


def test_a_pipe_gets_the_step_line_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = build_settings({"SALESMART_STATE_DIR": str(tmp_path / "state")})
    piped = io.StringIO()
    monkeypatch.setattr("sys.stdout", piped)
    stack._data_files(None, 200_000, settings)
    line = piped.getvalue()
    assert line.startswith("- generating 200000 transactions ... done (")
    assert "\r" not in line and "%" not in line
    piped.truncate(0)
    piped.seek(0)
    stack._data_files(None, 1, settings)
    assert piped.getvalue().startswith("- generating 1 transaction ... done (")


def test_a_closed_stdout_generates_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `up --rows N >&-`: Python's sys.stdout is None (the step said "'NoneType' object has
    # no attribute 'isatty'" and up stopped).
    settings = build_settings({"SALESMART_STATE_DIR": str(tmp_path / "state")})
    monkeypatch.setattr("sys.stdout", None)
    files = stack._data_files(None, 1_000, settings)
    assert sum(1 for _ in files[-1].open()) == 1_001
