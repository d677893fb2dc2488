"""Demand-forecast benchmark (not run in tests): all 500 store_item series with the last 90 days
of 2017 held out, and Walmart's last 13 weeks.

For each dataset two rolling origins are fitted: fold 0 (one horizon earlier) only calibrates
the prediction intervals; fold 1 is the holdout reported. Families: the hybrid, Prophet alone
(the hybrid's own Prophet fits), XGBoost alone, seasonal naive weekly / yearly. The fold-1
hybrid is saved as the pyfunc to measure load time and per-series 28-day latency.

Run: python -m benchmarks.bench_forecast   (writes benchmarks/results/forecast.json + .md)
"""

from __future__ import annotations

import json
import logging
import os
import platform as pyplatform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shelfwise.configs.datasets import load_timeseries_spec
from shelfwise.configs.forecast import load_forecast_config
from shelfwise.models.backtest import rolling_origins
from shelfwise.models.datasets import load_timeseries
from shelfwise.models.forecast import (
    GlobalXGBoost,
    HybridProphetXGBoost,
    calibrate_intervals,
    prepare_panel,
    seasonal_naive,
    split_at,
)
from shelfwise.models.forecast_metrics import mase_scales, overall_metrics, smape

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(os.environ.get("SHELFWISE_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))
log = logging.getLogger("bench_forecast")


def run_dataset(config: str, pyfunc_latency: bool) -> dict:
    cfg = load_forecast_config(config)
    spec = load_timeseries_spec(cfg.dataset)
    df, _ = load_timeseries(spec, DATA_DIR)
    panel = prepare_panel(df, spec, cfg)
    origins = rolling_origins(panel, cfg.horizon, 2, None)
    folds, models = {}, {}
    for i, origin in enumerate(origins):
        train, test = split_at(panel, origin, cfg.horizon)
        req = test.frame[["sid", *test.key_columns, "ds"]]
        regs = test.frame[[*test.key_columns, "ds", *test.regressors]] if test.regressors else None
        t0 = time.perf_counter()
        hyb = HybridProphetXGBoost(cfg).fit(train, regs)
        t_h = time.perf_counter() - t0
        t0 = time.perf_counter()
        xgbm = GlobalXGBoost(cfg).fit(train, regs)
        t_x = time.perf_counter() - t0
        ph = hyb.predict(req, components=True)
        px = xgbm.predict(req, components=True)
        truth = test.frame[["sid", "ds", "y"]]
        fc = {
            "hybrid": truth.merge(ph[["sid", "ds", "yhat"]], on=["sid", "ds"]),
            "prophet": truth.merge(
                ph[["sid", "ds", "p_yhat"]].rename(columns={"p_yhat": "yhat"}), on=["sid", "ds"]
            ),
            "xgboost": truth.merge(px[["sid", "ds", "yhat"]], on=["sid", "ds"]),
        }
        for name, period in cfg.seasonal_naive_periods.items():
            fc[name] = truth.merge(seasonal_naive(train, req, period), on=["sid", "ds"])
        folds[i] = {
            "origin": str(origin.date()),
            "forecasts": fc,
            "train_seconds": {
                "hybrid": t_h,
                "hybrid_prophet_part": hyb.fit_seconds["components"],
                "hybrid_xgboost_part": hyb.fit_seconds["xgboost"],
                "xgboost": t_x,
            },
        }
        folds[i]["scales"] = mase_scales(train.frame, cfg.mase_period)
        models[i] = hyb
        log.info(
            "%s fold %s: hybrid %.3f prophet %.3f xgboost %.3f (fit %.0fs / %.0fs)",
            config,
            i,
            smape(fc["hybrid"]["y"], fc["hybrid"]["yhat"]),
            smape(fc["prophet"]["y"], fc["prophet"]["yhat"]),
            smape(fc["xgboost"]["y"], fc["xgboost"]["yhat"]),
            t_h,
            t_x,
        )
    hold = folds[1]
    out: dict = {
        "config": config,
        "n_series": panel.n_series,
        "horizon": cfg.horizon,
        "holdout_origin": hold["origin"],
        "calibration_origin": folds[0]["origin"],
        "train_seconds": hold["train_seconds"],
        "families": {},
    }
    for fam, f in hold["forecasts"].items():
        cal = calibrate_intervals(
            folds[0]["forecasts"][fam][["sid", "y", "yhat"]],
            cfg.intervals.level,
            cfg.intervals.min_residuals_per_series,
        )
        lo, hi = cal.bounds(f["sid"].to_numpy(), f["yhat"].to_numpy())
        m = overall_metrics(f.assign(yhat_lower=lo, yhat_upper=hi), hold["scales"])
        m["smape_calibration_fold"] = smape(
            folds[0]["forecasts"][fam]["y"], folds[0]["forecasts"][fam]["yhat"]
        )
        out["families"][fam] = m
    fam = out["families"]
    out["ratio_hybrid_to_best_of_prophet_xgboost"] = fam["hybrid"]["smape"] / min(
        fam["prophet"]["smape"], fam["xgboost"]["smape"]
    )
    out["ratio_hybrid_to_seasonal_naive_year"] = (
        fam["hybrid"]["smape"] / fam["seasonal_naive_year"]["smape"]
    )
    if pyfunc_latency:
        out["pyfunc"] = pyfunc_numbers(models[1], folds[0]["forecasts"]["hybrid"], cfg)
    return out


def pyfunc_numbers(model: HybridProphetXGBoost, residuals: pd.DataFrame, cfg) -> dict:
    import mlflow

    from shelfwise.registry.forecast_model import save_forecast_model

    model.calibrate(residuals[["sid", "y", "yhat"]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        t0 = time.perf_counter()
        save_forecast_model(model, path)
        save_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            loaded = mlflow.pyfunc.load_model(str(path))
            loads.append(time.perf_counter() - t0)
        keys = model.keys.sample(50, random_state=0)
        lat = []
        for _, row in keys.iterrows():
            req = pd.DataFrame({k: [row[k]] for k in model.key_columns}).assign(horizon=28)
            t0 = time.perf_counter()
            res = loaded.predict(req)
            lat.append(time.perf_counter() - t0)
            assert len(res) == 28
    return {
        "n_series": int(len(model.keys)),
        "save_seconds": save_s,
        "artifact_mb": size_mb,
        "load_seconds_first": loads[0],
        "load_seconds_median": statistics.median(loads),
        "latency_28d_one_series_ms_median": 1000 * statistics.median(lat),
        "latency_28d_one_series_ms_p95": 1000 * float(np.quantile(lat, 0.95)),
    }


def to_markdown(res: dict) -> str:
    lines = [
        "# Demand-forecast benchmark",
        "",
        f"Command: `{res['command']}` on {res['machine']} "
        f"(load average at start {res['load_average_start']}).",
        "",
    ]
    for ds in res["datasets"]:
        lines += [
            f"## {ds['config']}: {ds['n_series']} series, holdout = {ds['horizon']} periods "
            f"after {ds['holdout_origin']} (intervals calibrated on the fold at "
            f"{ds['calibration_origin']})",
            "",
            "| family | SMAPE | MASE | MAE | RMSE | coverage (90%) |",
            "|---|---|---|---|---|---|",
        ]
        for fam, m in ds["families"].items():
            lines.append(
                f"| {fam} | {m['smape']:.3f} | {m['mase']:.3f} | {m['mae']:.3f} | "
                f"{m['rmse']:.3f} | {m['coverage']:.3f} |"
            )
        lines += [
            "",
            f"- hybrid / min(Prophet, XGBoost) SMAPE: "
            f"{ds['ratio_hybrid_to_best_of_prophet_xgboost']:.3f} (target <= 0.97)",
            f"- hybrid / yearly seasonal naive SMAPE: "
            f"{ds['ratio_hybrid_to_seasonal_naive_year']:.3f} (target <= 0.70)",
            "- train seconds (fit on the holdout's training data): "
            + ", ".join(f"{k} {v:.1f}" for k, v in ds["train_seconds"].items()),
        ]
        if "pyfunc" in ds:
            p = ds["pyfunc"]
            lines += [
                f"- pyfunc ({p['n_series']} series, {p['artifact_mb']:.1f} MB): load "
                f"{p['load_seconds_first']:.2f}s first / {p['load_seconds_median']:.2f}s "
                f"median; 28-day forecast for one series "
                f"{p['latency_28d_one_series_ms_median']:.1f} ms median, "
                f"{p['latency_28d_one_series_ms_p95']:.1f} ms p95"
            ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("cmdstanpy", "prophet"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = {
        "command": "python -m benchmarks.bench_forecast",
        "machine": f"{os.cpu_count()} cores, {pyplatform.python_version()}",
        "load_average_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "datasets": [
            run_dataset("demand_forecast", True),
            run_dataset("demand_forecast_walmart", False),
        ],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forecast.json").write_text(json.dumps(res, indent=2, default=float))
    (RESULTS / "forecast.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
