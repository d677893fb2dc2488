"""Demand-forecast monitoring on real data: a forecaster trained through mid-2017 (2017-06-30,
90-day window to 2017-09-28) is fed the later actuals as feedback.

* the first four weeks of actuals (inside the window): SMAPE close to the gate SMAPE, 31% of
  the window realised -> no retrain (no false alarm);
* the same four weeks ingested into the store (``POST /v1/<task>/actuals``) and no file: the
  same evidence (the flow snapshots the store's actuals);
* the whole window realised (2017-07-01 .. 2017-09-28) plus October: the decision fires
  (trigger feedback), the retrain event carries the actuals file, the retraining trains on data
  through the actuals, goes through the gate and forecasts the following, unseen period (to the
  end of 2017), which the old version cannot forecast at all, better than the yearly naive.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from shelfwise.configs.loader import read_yaml
from shelfwise.models.forecast_metrics import smape
from shelfwise.monitoring import records
from shelfwise.monitoring.store import PredictionStore
from tests.flows.forecast_helpers import (
    CUTOFF,
    HORIZON,
    actual_rows,
    forecast_task,
    train_and_gate,
    write_actuals,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAY = pd.Timedelta(days=1)


def test_forecast_monitoring_scenario(
    tmp_path, monkeypatch, mlflow_server, prefect_harness, data_dir
):
    from shelfwise.flows.monitor_forecast import monitor_forecast, retrain_forecast

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHELFWISE_STORE_URL", store_url)
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    task_path = forecast_task(tmp_path, candidates=["hybrid"], train_end=str(CUTOFF.date()))
    name = read_yaml(task_path)["model_name"]
    task = str(task_path)
    client = MlflowClient(mlflow_server)

    v1 = train_and_gate(task_path)
    assert v1["gate"]["promoted"] and v1["data_end"] == "2017-06-30"
    gate_smape = v1["metrics"]["smape"]
    window_end = CUTOFF + HORIZON * DAY

    # -- no false alarm: the first four weeks after the cutoff
    first = write_actuals(
        tmp_path / "actuals-july.csv", actual_rows(data_dir, CUTOFF + DAY, CUTOFF + 28 * DAY)
    )
    now = datetime(2017, 7, 29, tzinfo=UTC)
    quiet = monitor_forecast(task=task, actuals=str(first), now=now)
    ev = quiet["evidence"]
    assert not quiet["decision"]["retrain"], quiet["decision"]
    assert ev["scored_rows"] == 28 * 5 and ev["beyond_window_rows"] == 0
    assert ev["window_realised_share"] == pytest.approx(28 / 90)
    assert abs(ev["performance"]["smape"] - gate_smape) < 5.0

    # -- the window runs out: actuals to the end of October
    later = write_actuals(
        tmp_path / "actuals-jul-oct.csv",
        actual_rows(data_dir, CUTOFF + DAY, pd.Timestamp("2017-10-31")),
    )
    fired = monitor_forecast(
        task=task, actuals=str(later), emit=False, now=now + timedelta(days=95)
    )
    ev = fired["evidence"]
    assert fired["decision"]["retrain"] and fired["decision"]["trigger"] == "feedback"
    assert ev["scored_rows"] == 90 * 5 and ev["beyond_window_rows"] == 33 * 5
    assert ev["window_realised_share"] == 1.0
    assert any("of the forecast window" in r for r in fired["decision"]["reasons"])
    print(
        "monitor numbers",
        {
            "gate_smape": gate_smape,
            "first_weeks": quiet["evidence"],
            "window": ev,
            "decision": fired["decision"],
        },
    )

    store = PredictionStore(store_url)
    try:
        hist = records.history(records.ensure_tables(store.engine), name)
    finally:
        store.dispose()
    # a dry run (emit=False) records its decision but not as a retrain, as the delay monitor
    # does: it must not put the real incident that follows into cooldown
    assert list(hist["retrain"]) == [False, False]
    assert "not emitted (emit=false)" in list(hist["reasons"])[1]
    # each check is a snapshot in the Evidently workspace (the UI's forecast-error dashboard)
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(tmp_path / ".shelfwise" / "evidently"))
    (project,) = [p for p in ws.list_projects() if p.name == "Shelfwise demand forecast"]
    assert len(ws.list_runs(project.id)) == 2

    # -- the same four weeks ingested into the store instead (no file): the same evidence
    from shelfwise.configs.tasks import load_task
    from shelfwise.monitoring.actuals import ActualsStore, SeriesCatalogue, validate_actuals

    declaration = load_task(task_path)
    spec = declaration.dataset_spec()
    catalogue = SeriesCatalogue.from_frame(actual_rows(data_dir, CUTOFF - DAY, CUTOFF), spec)
    july = validate_actuals(actual_rows(data_dir, CUTOFF + DAY, CUTOFF + 28 * DAY), spec, catalogue)
    ActualsStore(store_url).upsert(declaration.name, july, spec.series_keys)
    stored = monitor_forecast(task=task, emit=False, now=now)
    assert stored["evidence"]["scored_rows"] == 28 * 5
    assert stored["evidence"]["performance"]["smape"] == pytest.approx(
        quiet["evidence"]["performance"]["smape"]
    )

    # -- retraining on the data plus the actuals, through the gate
    window_actuals = write_actuals(
        tmp_path / "actuals-window.csv", actual_rows(data_dir, CUTOFF + DAY, window_end)
    )
    v2 = retrain_forecast(task=task, actuals=str(window_actuals), model=name)
    assert v2["version"] == "2" and v2["data_end"] == str(window_end.date())
    g = v2["gate"]
    print(
        "retrain gate", g["reasons"], g["gate"]["challenger_metrics"], g["gate"]["champion_metrics"]
    )
    assert g["promoted"], g["reasons"]
    assert client.get_model_version_by_alias(name, "champion").version == "2"

    # -- the following, unseen period: v2 forecasts it; v1 cannot (its window has ended)
    unseen = actual_rows(data_dir, window_end + DAY, window_end + HORIZON * DAY)
    mlflow.set_tracking_uri(mlflow_server)
    request = unseen[["store", "item"]].assign(date=unseen["date"])
    new = mlflow.pyfunc.load_model(f"models:/{name}/2").predict(request)
    assert len(new) == len(unseen)
    new_smape = smape(unseen["sales"].to_numpy(), new["yhat"].to_numpy())
    with pytest.raises(Exception, match="outside the forecast window"):
        mlflow.pyfunc.load_model(f"models:/{name}/1").predict(request)
    history = actual_rows(data_dir, window_end - 400 * DAY, window_end)
    naive = unseen.assign(src=unseen["date"] - pd.Timedelta(days=364)).merge(
        history.rename(columns={"date": "src", "sales": "naive"}), on=["store", "item", "src"]
    )
    naive_smape = smape(naive["sales"].to_numpy(), naive["naive"].to_numpy())
    print("unseen period", {"v2_smape": new_smape, "naive_year_smape": naive_smape})
    assert new_smape < naive_smape
