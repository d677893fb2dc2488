"""Single-series forecast latency through the demand-forecast pyfunc, at the full data set's size
without its 10-minute training: a hybrid is fitted on a few store_item series, then its per-series
state (stored tail, future window, scale) is copied onto 500 series keys (10 stores x 50 items).
The booster and the request path are the real ones; only the series values repeat.

    python -m benchmarks.bench_forecast_latency [--fit-series 6] [--requests 50]

Prints JSON: pyfunc save/load seconds and the 28-day one-series latency (median, p95) over
``--requests`` random series, as bench_forecast.py measures it on the real 500-series model.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def fit_small(n_series: int):
    from shelfwise.configs.datasets import load_timeseries_spec
    from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
    from shelfwise.configs.platform import load_platform_config
    from shelfwise.models.datasets import load_timeseries
    from shelfwise.models.forecast import HybridProphetXGBoost, prepare_panel

    raw = load_forecast_config("demand_forecast").model_dump()
    raw["data"]["max_series"] = n_series
    raw["workers"] = 1
    cfg = ForecastConfig.model_validate(raw)
    spec = load_timeseries_spec(cfg.dataset)
    df, _ = load_timeseries(spec, load_platform_config().data_dir)
    panel = prepare_panel(df, spec, cfg)
    model = HybridProphetXGBoost(cfg).fit(panel)
    tail = panel.frame.groupby("sid").tail(cfg.horizon)
    wobble = np.where(np.arange(len(tail)) % 2 == 0, 1.1, 0.9)  # stand-in residuals
    model.calibrate(tail.assign(yhat=tail["y"] * wobble)[["sid", "y", "yhat"]])
    return model


def replicate(model, n_stores: int = 10, n_items: int = 50):
    """Copy the fitted series' state onto n_stores x n_items keys (timing only)."""
    out = copy.deepcopy(model)
    base = sorted(model.keys["sid"])
    keys = pd.DataFrame(
        [(s, i) for s in range(1, n_stores + 1) for i in range(1, n_items + 1)],
        columns=model.key_columns,
    ).astype(model.keys[model.key_columns].dtypes.to_dict())
    keys.insert(0, "sid", np.arange(len(keys)))
    src = {int(sid): base[sid % len(base)] for sid in keys["sid"]}

    def rep(frame: pd.DataFrame) -> pd.DataFrame:
        groups = dict(tuple(frame.groupby("sid")))
        return pd.concat([groups[s].assign(sid=sid) for sid, s in src.items()], ignore_index=True)

    out.keys, out.tail, out.future = keys, rep(model.tail), rep(model.future)
    out.series_mean = {sid: model.series_mean[s] for sid, s in src.items()}
    out.last_date = {sid: model.last_date[s] for sid, s in src.items()}
    cal = model.calibration
    out.calibration.scale = {sid: cal.scale.get(s, cal.default_scale) for sid, s in src.items()}
    return out


def measure(model, requests: int, horizon: int = 28) -> dict:
    import mlflow

    from shelfwise.registry.forecast_model import save_forecast_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        t0 = time.perf_counter()
        save_forecast_model(model, path)
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = mlflow.pyfunc.load_model(str(path))
        load_s = time.perf_counter() - t0
        keys = model.keys.sample(requests, random_state=0)
        reqs = [
            pd.DataFrame({k: [row[k]] for k in model.key_columns}).assign(horizon=horizon)
            for _, row in keys.iterrows()
        ]
        loaded.predict(reqs[0])
        lat = []
        for req in reqs:
            t0 = time.perf_counter()
            res = loaded.predict(req)
            lat.append(time.perf_counter() - t0)
            assert len(res) == horizon
    return {
        "n_series": int(len(model.keys)),
        "save_seconds": save_s,
        "load_seconds": load_s,
        f"latency_{horizon}d_one_series_ms_median": 1000 * statistics.median(lat),
        f"latency_{horizon}d_one_series_ms_p95": 1000 * float(np.quantile(lat, 0.95)),
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-series", type=int, default=6)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args(argv)
    model = replicate(fit_small(args.fit_series))
    print(json.dumps(measure(model, args.requests), indent=2))


if __name__ == "__main__":
    main()
