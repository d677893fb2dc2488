"""`shelfwise promote / rollback / history / compare` against the real `mlflow server`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shelfwise.flows.cli import app

pytestmark = [pytest.mark.integration]


@pytest.fixture
def cli(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    monkeypatch.setenv("SHELFWISE_STORE_URL", f"sqlite:///{tmp_path / 'shelfwise.db'}")
    monkeypatch.setenv("SHELFWISE_ACTOR", "cli-test")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_promote_rollback_history_compare(cli, fresh_model):
    name, v = fresh_model("default", "better")
    one, two = v["default"], v["better"]
    assert "promoted" in cli("promote", name, "--version", one, "--reason", "initial release")
    out = cli("promote", name, "--version", "99", "--reason", "typo", code=2)
    assert "no version 99" in out
    cli("promote", name, "--version", two, "--reason", "hotfix approved by ops")
    cli("rollback", name, "--reason", "latency regression")

    events = json.loads(cli("history", name, "--json"))
    assert [(e["action"], e["from_version"], e["to_version"]) for e in events] == [
        ("manual", None, one),
        ("manual", one, two),
        ("rollback", two, one),
    ]
    assert all(e["actor"] == "cli-test" for e in events)
    assert "hotfix approved by ops" in events[1]["reason"]

    rows = {r["version"]: r for r in json.loads(cli("compare", name, "--json"))}
    assert rows[one]["aliases"] == ["@champion"] and rows[two]["aliases"] == ["@previous"]
    assert rows[one]["metrics"]["roc_auc"] > 0.7 and rows[two]["metrics"]["roc_auc"] > 0.7
    assert rows[one]["decision"] == "rolled_back" and rows[two]["decision"] == "promoted"
    table = cli("compare", name)
    assert "@champion" in table and "roc_auc" in table
    assert "rollback" in cli("history", name)
    assert "no registered model" in cli("compare", "nope_model", code=2)
