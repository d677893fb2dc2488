"""`shelfwise online|canary|alarms` end with a message naming the problem, not a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shelfwise.flows.cli import app

VERBS = [["online"], ["canary", "--fraction", "0.1"], ["alarms"]]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_unknown_task_lists_the_declared_ones(tmp_path, monkeypatch, verb):
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    result = CliRunner().invoke(app, [verb[0], "no_such_task", *verb[1:]])
    assert result.exit_code == 2, result.output
    assert "no task 'no_such_task'" in result.output and "delay_risk" in result.output


@pytest.mark.parametrize("fraction", ["1.5", "-0.1"])
def test_a_canary_fraction_outside_0_1_is_refused_before_anything_runs(
    tmp_path, monkeypatch, fraction
):
    home = tmp_path / ".shelfwise"
    monkeypatch.setenv("SHELFWISE_HOME", str(home))
    result = CliRunner().invoke(
        app, ["canary", "delay_risk", "--fraction", fraction], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--fraction'" in result.output, result.output
    assert not home.exists()  # no tracking store was opened, no tag written
