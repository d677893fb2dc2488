"""Live data for forecast tasks: ingesting actuals, forecasting from fresh history, stock alerts.

    python -m benchmarks.bench_actuals [--rows 1000000] [--series 500] [--requests 300]

On the store_item data: a global XGBoost (horizon 28, lags 28/364, 100 trees) fitted on
``--series`` series up to 2017-12-03, then

- ingest: ``--rows`` synthetic actuals (every series, consecutive days from 2017-12-04) in
  batches of 10,000 through validation + the SQLite store's upsert (rows/s), and the same
  batches again (all unchanged: the idempotent path);
- latency of one series' forecast from fresh history (the 28 real actuals 2017-12-04..31 of
  each series ingested, ratio correction on: the SQL read, feature recompute and booster call),
  p50 / p99 over ``--requests`` random series, beside the precomputed stale path;
- the time to compute the stock alerts of every series (lead time 7) from that history.

Writes benchmarks/results/actuals.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_END = pd.Timestamp("2017-12-03")


def _model(n_series: int):
    from shelfwise.configs.datasets import load_timeseries_spec
    from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
    from shelfwise.configs.platform import load_platform_config
    from shelfwise.models.datasets import load_timeseries
    from shelfwise.models.forecast import GlobalXGBoost, prepare_panel, split_at

    raw = load_forecast_config("demand_forecast").model_dump()
    raw.update(horizon=28, workers=1)
    raw["features"]["lags"] = [28, 364]
    raw["data"]["max_series"] = n_series
    raw["xgboost"].update(n_estimators=100)
    cfg = ForecastConfig.model_validate(raw)
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, Path(load_platform_config("platform").data_dir))
    train, test = split_at(prepare_panel(df, spec, cfg), TRAIN_END, 28)
    model = GlobalXGBoost(cfg).fit(train)
    tail = train.frame.groupby("sid").tail(28)
    model.calibrate(tail.assign(yhat=tail["y"] * 1.1)[["sid", "y", "yhat"]])
    return model, spec, test


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=500)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    from shelfwise.configs.actuals import ActualsSettings, InventorySettings
    from shelfwise.monitoring.actuals import ActualsStore, validate_actuals
    from shelfwise.registry.load import prepare_forecast_model
    from shelfwise.serving.current import LiveForecasts, stock_alerts

    t0 = time.perf_counter()
    model, spec, test = _model(args.series)
    fit_s = time.perf_counter() - t0
    loaded = prepare_forecast_model(model, "bench_actuals", "1")
    out: dict = {"series": args.series, "fit_s": round(fit_s, 1)}
    settings = ActualsSettings()
    with tempfile.TemporaryDirectory() as tmp:
        # -- ingest: synthetic rows far after the training end (their own task)
        store = ActualsStore(f"sqlite:///{Path(tmp) / 'bench.db'}")
        live = LiveForecasts(store)
        catalogue = live.index(loaded).catalogue
        keys = loaded.model.keys
        per_series = max(1, args.rows // len(keys))
        days = pd.date_range(TRAIN_END + pd.Timedelta(days=1), periods=per_series, freq="D")
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(
            {
                "store": np.repeat(keys["store"].to_numpy(), per_series),
                "item": np.repeat(keys["item"].to_numpy(), per_series),
                "date": np.tile(days.strftime("%Y-%m-%d"), len(keys)),
                "sales": rng.integers(0, 100, per_series * len(keys)).astype(float),
            }
        )
        n = len(frame)
        for label in ("ingest", "ingest_again"):
            t0 = time.perf_counter()
            validate_s = 0.0
            counts = np.zeros(3, dtype=int)
            for i in range(0, n, settings.max_rows):
                batch = frame.iloc[i : i + settings.max_rows].to_dict("records")
                v0 = time.perf_counter()
                rows = validate_actuals(batch, spec, catalogue)
                validate_s += time.perf_counter() - v0
                r = store.upsert("bench_ingest", rows, spec.series_keys)
                counts += (r.inserted, r.updated, r.unchanged)
            secs = time.perf_counter() - t0
            out[label] = {
                "rows": n,
                "seconds": round(secs, 1),
                "rows_per_s": round(n / secs),
                "validation_share": round(validate_s / secs, 2),
                "inserted_updated_unchanged": counts.tolist(),
            }
            print(label, out[label], flush=True)
        # -- forecasts from fresh history: the real December actuals of every series
        real = test.frame
        real = real.assign(date=real["ds"].dt.strftime("%Y-%m-%d"), sales=real["y"])
        rows = validate_actuals(real[["store", "item", "date", "sales"]], spec, catalogue)
        store.upsert("demand", rows, spec.series_keys)
        live.correction("demand", loaded, settings)  # the pooled ratio, once per revision
        picks = rng.integers(0, len(keys), args.requests)
        fresh, stale = [], []
        for i in picks:
            row = keys.iloc[int(i)]
            series = {"store": int(row["store"]), "item": int(row["item"])}
            t1 = time.perf_counter()
            got = live.forecast("demand", loaded, series, 28, None, settings)
            fresh.append(time.perf_counter() - t1)
            assert got is not None and got.actuals_used == 28
            t1 = time.perf_counter()
            loaded.forecast(series, 28)
            stale.append(time.perf_counter() - t1)
        ms = lambda xs, q: round(float(np.percentile(xs, q)) * 1000, 2)  # noqa: E731
        out["forecast_fresh_ms"] = {"p50": ms(fresh, 50), "p99": ms(fresh, 99)}
        out["forecast_precomputed_ms"] = {"p50": ms(stale, 50), "p99": ms(stale, 99)}
        print("latency", out["forecast_fresh_ms"], out["forecast_precomputed_ms"], flush=True)
        # -- stock alerts of every series
        inventory = InventorySettings(lead_time=7, alert_probability=0.2)
        positions = [
            ({"store": int(r.store), "item": int(r.item)}, 300.0) for r in keys.itertuples()
        ]
        t1 = time.perf_counter()
        risks = stock_alerts(live, "demand", loaded, positions, inventory, settings)
        out["alerts_all_series_s"] = round(time.perf_counter() - t1, 2)
        out["alerts"] = sum(r.alert for r in risks)
        print("alerts", out["alerts_all_series_s"], out["alerts"], flush=True)
        store.engine.dispose()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "actuals.json").write_text(json.dumps(out, indent=2))
    md = [
        "| what | result |",
        "|---|---|",
        f"| ingest {out['ingest']['rows']:,} actuals (SQLite, batches of 10k) | "
        f"{out['ingest']['rows_per_s']:,} rows/s ({out['ingest']['validation_share']:.0%} "
        "validation) |",
        f"| the same rows again (unchanged) | {out['ingest_again']['rows_per_s']:,} rows/s |",
        f"| forecast from fresh history (28 actuals, p50 / p99) | "
        f"{out['forecast_fresh_ms']['p50']} / {out['forecast_fresh_ms']['p99']} ms |",
        f"| precomputed window (p50 / p99) | {out['forecast_precomputed_ms']['p50']} / "
        f"{out['forecast_precomputed_ms']['p99']} ms |",
        f"| stock alerts of all {args.series} series | {out['alerts_all_series_s']} s |",
    ]
    (RESULTS / "actuals.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
