"""The Prophet fan-out through Prefect task runners (flows/fanout.py): the process and Dask
runners give exactly the joblib path's Prophet components and forecasts on real series, one
``fit-prophet-batch`` task run per batch, a progress log per batch; config errors name the key."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect import flow, task
from prefect.cache_policies import NONE

from shelfwise.configs.datasets import load_timeseries_spec
from shelfwise.configs.forecast import (
    DASK_ADDRESS_ENV,
    FanoutConfig,
    ForecastConfig,
    load_forecast_config,
)
from shelfwise.configs.loader import ConfigError, configs_dir, read_yaml
from shelfwise.flows.fanout import BATCH_TASK, batch_mapper, dask_address
from shelfwise.flows.forecast import _progress
from shelfwise.models.datasets import load_timeseries
from shelfwise.models.forecast import HybridProphetXGBoost, prepare_panel

N_SERIES, BATCH = 4, 2  # two batches of two series


def ci_config(runner: str) -> ForecastConfig:
    raw = read_yaml(configs_dir() / "demand_forecast.yaml")
    raw.update(workers=2, batch_size=BATCH, fanout={"runner": runner, "address": None})
    raw["prophet"]["max_history"] = 800
    raw["xgboost"].update(n_estimators=50, n_jobs=1)
    raw["data"]["max_series"] = N_SERIES
    return ForecastConfig.model_validate(raw)


@pytest.fixture(scope="module")
def panel(data_dir):
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    return prepare_panel(df, spec, ci_config("joblib"))


@pytest.fixture(scope="module")
def joblib_fit(panel):
    """The reference: the models' default mapper (a joblib pool), outside Prefect."""
    return HybridProphetXGBoost(ci_config("joblib")).fit(panel)


@task(name="fit-hybrid", cache_policy=NONE)
def fit_hybrid(panel, cfg: ForecastConfig) -> HybridProphetXGBoost:
    # inside a running task, like flows/forecast.py's backtest and final fit
    with batch_mapper(cfg) as map_batches:
        return HybridProphetXGBoost(cfg, _progress("test"), map_batches).fit(panel)


@flow(name="fanout-test")
def fanout_flow(panel, cfg: ForecastConfig) -> HybridProphetXGBoost:
    return fit_hybrid(panel, cfg)


def _task_runs_and_logs(flow_run_id, expect: list[str]) -> tuple[list, list[str]]:
    """Task runs and log messages of the flow run; logs reach the API in batches from a
    background worker, so wait (up to 60 s) until the ``expect``ed messages have arrived."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}), limit=200
        )
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                limit=200,
            )
            messages = [log.message for log in logs]
            if all(m in messages for m in expect) or time.monotonic() > deadline:
                return runs, messages
            time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("runner", ["process", "dask"])
def test_task_runner_matches_joblib(runner, panel, joblib_fit, prefect_harness) -> None:
    cfg = ci_config(runner)
    state = fanout_flow(panel, cfg, return_state=True)
    model = state.result()
    comps = [c for c in joblib_fit.future.columns if c.startswith("p_")]
    assert len(comps) == 7
    pd.testing.assert_frame_equal(model.future, joblib_fit.future)  # Prophet components
    a, b = model.precompute(), joblib_fit.precompute()
    pd.testing.assert_frame_equal(a, b)  # the hybrid's forecasts
    assert a["yhat"].notna().all() and (a["yhat"] > 0).mean() > 0.99
    assert np.isfinite(a["p_yhat"]).all()

    progress = [
        "test: Prophet batch 1/2 (2 series fitted)",
        "test: Prophet batch 2/2 (4 series fitted)",
    ]
    runs, messages = _task_runs_and_logs(state.state_details.flow_run_id, progress)
    batch_runs = [r for r in runs if r.name.startswith(BATCH_TASK)]
    assert len(batch_runs) == N_SERIES // BATCH, [r.name for r in runs]
    assert all(r.state.is_completed() for r in batch_runs)
    (parent,) = [r for r in runs if r.name.startswith("fit-hybrid")]
    for r in batch_runs:  # nested under the task that fanned them out
        assert [p.id for p in r.task_inputs["__parents__"]] == [parent.id]
    for line in progress:
        assert line in messages, messages


@pytest.mark.slow
@pytest.mark.integration
def test_a_lone_batch_runs_inline_without_opening_a_pool(
    panel, joblib_fit, prefect_harness, monkeypatch
) -> None:
    import shelfwise.flows.fanout as fanout

    def no_pool(*args, **kwargs):
        raise AssertionError("a single batch must not start a task runner")

    monkeypatch.setattr(fanout, "make_task_runner", no_pool)
    cfg = ci_config("process").model_copy(update={"batch_size": N_SERIES})  # one batch of all
    state = fanout_flow(panel, cfg, return_state=True)
    model = state.result()
    pd.testing.assert_frame_equal(model.future, joblib_fit.future)
    runs, _ = _task_runs_and_logs(state.state_details.flow_run_id, [])
    batch_runs = [r for r in runs if r.name.startswith(BATCH_TASK)]
    assert len(batch_runs) == 1 and batch_runs[0].state.is_completed()  # still a task in the UI


def _write(tmp_path: Path, **fanout) -> Path:
    raw = read_yaml(configs_dir() / "demand_forecast.yaml")
    raw["fanout"].update(fanout)
    path = tmp_path / "forecast.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bad_runner_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, runner="spark")
    with pytest.raises(ConfigError) as exc:
        load_forecast_config(path)
    msg = str(exc.value)
    assert str(path) in msg and "fanout.runner" in msg and "'dask'" in msg, msg


def test_address_only_with_dask(tmp_path: Path) -> None:
    path = _write(tmp_path, runner="process", address="tcp://10.0.0.5:8786")
    with pytest.raises(ConfigError, match="fanout.address.*runner: dask") as exc:
        load_forecast_config(path)
    assert str(path) in str(exc.value)
    cfg = load_forecast_config(_write(tmp_path, runner="dask", address="tcp://10.0.0.5:8786"))
    assert cfg.fanout.address == "tcp://10.0.0.5:8786"


def test_shipped_default_is_process_and_env_picks_dask_scheduler(monkeypatch) -> None:
    assert load_forecast_config("demand_forecast").fanout == FanoutConfig(
        runner="process", address=None
    )
    monkeypatch.delenv(DASK_ADDRESS_ENV, raising=False)
    fanout = FanoutConfig(runner="dask", address="tcp://a:1")
    assert dask_address(fanout) == "tcp://a:1"
    monkeypatch.setenv(DASK_ADDRESS_ENV, "tcp://b:2")
    assert dask_address(fanout) == "tcp://b:2"
    assert dask_address(FanoutConfig(runner="dask")) == "tcp://b:2"
