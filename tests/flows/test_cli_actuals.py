"""``shelfwise actuals <task> FILE`` and ``shelfwise alerts <task>`` through the real executable:
JSON on stdout, idempotent ingestion, a bad file refused naming the row and the column with
nothing stored; alerts from the session's registered forecaster with the declared inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from shelfwise.monitoring.actuals import ActualsStore
from shelfwise.monitoring.alerts import AlertStore
from tests.serving.conftest import forecast_v1  # noqa: F401 (the session's registered forecaster)

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


def _run(env: dict, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [SHELFWISE, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert p.returncode == code, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture
def env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "SHELFWISE_HOME": str(tmp_path / ".shelfwise"),
        "SHELFWISE_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
    }


@pytest.mark.slow  # three CLI processes
def test_actuals_cli_is_idempotent_and_refuses_bad_rows(env: dict, tmp_path: Path) -> None:
    good = pd.DataFrame(
        {"date": ["2018-01-01", "2018-01-02"], "store": [1, 1], "item": [5, 5], "sales": [20, 21]}
    )
    path = tmp_path / "week.csv"
    good.to_csv(path, index=False)
    first = json.loads(_run(env, "actuals", "demand_forecast", str(path), "--json").stdout)
    assert (first["inserted"], first["unchanged"], first["rows"]) == (2, 0, 2)
    again = json.loads(_run(env, "actuals", "demand_forecast", str(path), "--json").stdout)
    assert (again["inserted"], again["unchanged"]) == (0, 2)
    bad = good.assign(sales=[22, "n/a"])
    bad_path = tmp_path / "bad.csv"
    bad.to_csv(bad_path, index=False)
    p = _run(env, "actuals", "demand_forecast", str(bad_path), "--json", code=2)
    assert p.stdout == "" and "row 1: column 'sales'" in " ".join(p.stderr.split())
    store = ActualsStore(env["SHELFWISE_STORE_URL"])
    hist = store.series_history("demand_forecast", {"store": 1, "item": 5}, ["store", "item"])
    assert list(hist["y"]) == [20.0, 21.0]  # the bad file stored nothing


@pytest.mark.integration
def test_alerts_cli_lists_the_series_that_run_out(
    env: dict,
    tmp_path: Path,
    mlflow_server: str,
    forecast_v1,  # noqa: F811 (the fixture imported above)
) -> None:
    from shelfwise.configs.loader import configs_dir

    raw = yaml.safe_load((configs_dir() / "tasks" / "demand_forecast.yaml").read_text())
    positions = tmp_path / "stock.csv"
    pd.DataFrame({"store": [1, 1], "item": [1, 2], "on_hand": [3.0, 1e6]}).to_csv(
        positions, index=False
    )
    raw.update(
        model_name=forecast_v1.name,
        inventory={"lead_time": 7, "alert_probability": 0.2, "positions": str(positions)},
    )
    task = tmp_path / "shop.yaml"
    task.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**env, "SHELFWISE_TRACKING_URI": mlflow_server}
    out = json.loads(_run(env, "alerts", str(task), "--no-emit", "--json").stdout)
    assert out["evaluated"] == 2 and out["model_version"] == forecast_v1.version
    (alert,) = out["alerts"]
    assert alert["series"] == {"store": 1, "item": 1} and alert["severity"] == "critical"
    assert alert["expected_stockout"] == "2018-01-01" and alert["opened"] is True
    stored = AlertStore(env["SHELFWISE_STORE_URL"]).alerts("demand_forecast")
    assert [a["id"] for a in stored] == [alert["id"]]
