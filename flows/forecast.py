"""Prefect flow ``train-demand-forecast``: load + validate, rolling-origin backtest of the hybrid
and its baselines (one MLflow run per family, same metric names), plots and a per-series table,
then fit the hybrid on all data, register a ``demand_forecast`` version and point
``@challenger`` at it; then (``promote``) the promotion gate (registry/forecast_gate.py via
flows/promote.py) decides about ``@champion``.

When ``@champion`` trained up to a date after the latest backtest origin (a frequent retrain),
the backtest adds the gate fold at that date (models/backtest.py) and the gate's holdout comes
from it. Headline metrics (``metric.*`` tags, the runs' step metrics) stay the latest regular
fold's; the gate fold's are logged on every family's run as ``gate_fold.<metric>`` and its
origin is the run and version tag ``shelfwise.gate_origin``.

Training data: the data set's rows up to ``data.train_end`` (all when unset), plus realised
actuals from a file (``actuals``) when retraining on feedback."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from shelfwise.configs.datasets import TimeSeriesDatasetSpec, load_timeseries_spec
from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.flows.fanout import batch_mapper
from shelfwise.flows.train import connect_tracking
from shelfwise.models import plots
from shelfwise.models.backtest import HYBRID, BacktestResult, backtest, families, gate_origin
from shelfwise.models.datasets import cut_and_extend, fingerprint, load_actuals, load_timeseries
from shelfwise.models.forecast import HybridProphetXGBoost, Panel, prepare_panel
from shelfwise.models.forecast_metrics import FORECAST_METRICS
from shelfwise.registry import forecast_gate as fgate
from shelfwise.registry import log as rlog
from shelfwise.registry.forecast_model import log_forecast_model

logger = logging.getLogger(__name__)

CHALLENGER = "challenger"


@dataclass
class ForecastTrainResult:
    model_name: str
    version: str
    run_id: str
    experiment_id: str
    tracking_uri: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, dict[str, float]]
    n_series: int
    data_fingerprint: str
    train_seconds: float
    data_end: str
    gate: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@task(name="load-and-validate-series", cache_policy=NONE)
def load_panel(
    spec: TimeSeriesDatasetSpec,
    cfg: ForecastConfig,
    platform: PlatformConfig,
    actuals: str | None = None,
) -> tuple[Panel, str, str]:
    df, path = load_timeseries(spec, platform.data_dir)
    extra = load_actuals(spec, actuals) if actuals else None
    train_end = pd.Timestamp(cfg.data.train_end) if cfg.data.train_end else None
    panel = prepare_panel(cut_and_extend(df, spec, train_end, extra), spec, cfg)
    log = get_run_logger()
    log.info(
        "%s series ready up to %s (%s skipped as too short)",
        panel.n_series,
        panel.frame["ds"].max().date(),
        len(panel.skipped),
    )
    source = f"{path}+{actuals}" if actuals else str(path)
    return panel, source, fingerprint(panel.frame)


def _progress(prefix: str):
    log = get_run_logger()

    def on_batch(i: int, n: int, done: int) -> None:
        log.info("%s: Prophet batch %s/%s (%s series fitted)", prefix, i + 1, n, done)

    return on_batch


@task(name="find-gate-origin", cache_policy=NONE)
def find_gate_origin(panel: Panel, cfg: ForecastConfig) -> pd.Timestamp | None:
    """The champion's data end when the backtest needs a gate fold there (else None)."""
    client = mlflow.MlflowClient()
    champion_end = fgate.champion_data_end(client, cfg.registered_model_name)
    origin = gate_origin(panel, cfg.horizon, cfg.backtest.folds, cfg.backtest.step, champion_end)
    if origin is not None:
        get_run_logger().info(
            "@champion trained up to %s, after the latest backtest origin: gate fold at %s "
            "(realised rows up to %s)",
            champion_end.date(),
            origin.date(),
            panel.frame["ds"].max().date(),
        )
    return origin


@task(name="backtest-hybrid-and-baselines", cache_policy=NONE)
def run_backtest(
    panel: Panel, cfg: ForecastConfig, gate_at: pd.Timestamp | None = None
) -> BacktestResult:
    log = get_run_logger()

    def on_fold(i: int, n: int, origin: pd.Timestamp) -> None:
        log.info("backtest fold %s/%s, origin %s, horizon %s", i + 1, n, origin.date(), cfg.horizon)

    with batch_mapper(cfg) as map_batches:  # one fit-prophet-batch task per batch
        result = backtest(
            panel,
            cfg,
            on_fold=on_fold,
            on_batch=_progress("backtest"),
            gate_at=gate_at,
            map_batches=map_batches,
        )
    for fam in families(cfg):
        m = result.metrics(fam)
        log.info(
            "latest fold %-20s smape %.3f mase %.3f coverage %.3f",
            fam,
            m["smape"],
            m["mase"],
            m["coverage"],
        )
    return result


def _tags(cfg, spec, family: str, fp: str, trigger: str) -> dict[str, str]:
    return {
        rlog.TAG_TASK: rlog.TASK_DEMAND_FORECAST,
        rlog.TAG_FAMILY: family,
        rlog.TAG_DATA_FINGERPRINT: fp,
        rlog.TAG_CODE_VERSION: rlog.code_version(),
        rlog.TAG_CONFIG_HASH: rlog.config_hash(cfg, spec),
        rlog.TAG_TRIGGER: trigger,
    }


def _log_backtest_metrics(result: BacktestResult, family: str) -> dict[str, float]:
    """Same names for every family: the value at the highest step is the latest fold."""
    fm = result.fold_metrics()
    fm = fm[fm["family"] == family].sort_values("fold")
    for _, row in fm.iterrows():
        for k in FORECAST_METRICS:
            if pd.notna(row[k]):
                mlflow.log_metric(k, float(row[k]), step=int(row["fold"]))
    for k in FORECAST_METRICS:
        vals = fm[k].dropna()
        if len(vals):
            mlflow.log_metric(f"{k}_mean_folds", float(vals.mean()))
    gate = result.gate_fold_metrics(family)
    if gate is not None:
        mlflow.log_metrics({f"gate_fold.{k}": float(v) for k, v in gate.items() if pd.notna(v)})
        mlflow.set_tag(fgate.TAG_GATE_ORIGIN, str(result.gate.origin.date()))
    return result.metrics(family)


def _figures(panel: Panel, result: BacktestResult, n: int) -> dict:
    f = result.forecasts[result.forecasts["fold"] == result.latest_fold]
    origin = f["origin"].iloc[0]
    figs = {}
    for sid in sorted(f["sid"].unique())[:n]:
        hist = panel.frame[(panel.frame["sid"] == sid) & (panel.frame["ds"] <= origin)]
        label = ", ".join(f"{k}={hist[k].iloc[0]}" for k in panel.key_columns)
        g = f[f["sid"] == sid]
        figs[f"forecast_{sid:04d}.png"] = plots.forecast_figure(
            hist, g, f"{label}: forecast vs actual from {pd.Timestamp(origin).date()}"
        )
    return figs


@task(name="log-baseline-runs", cache_policy=NONE)
def log_baselines(
    result: BacktestResult,
    cfg: ForecastConfig,
    spec: TimeSeriesDatasetSpec,
    experiment_id: str,
    fp: str,
    source: str,
    trigger: str,
) -> dict[str, dict[str, float]]:
    out = {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for fam in families(cfg):
        if fam == HYBRID:
            continue
        with rlog.tracked_run(experiment_id=experiment_id, run_name=f"{fam}-{stamp}"):
            mlflow.set_tags(_tags(cfg, spec, fam, fp, trigger))
            mlflow.log_params({"family": fam, "horizon": cfg.horizon, "dataset": spec.name})
            out[fam] = _log_backtest_metrics(result, fam)
    return out


@task(name="fit-log-register-hybrid", cache_policy=NONE)
def fit_and_register(
    panel: Panel,
    result: BacktestResult,
    cfg: ForecastConfig,
    spec: TimeSeriesDatasetSpec,
    experiment_id: str,
    fp: str,
    source: str,
    trigger: str,
    baselines: dict[str, dict[str, float]],
) -> tuple[str, str, dict[str, float], float]:
    log = get_run_logger()
    tags = _tags(cfg, spec, HYBRID, fp, trigger)
    with rlog.tracked_run(
        experiment_id=experiment_id, run_name=f"hybrid-{time.strftime('%Y%m%d-%H%M%S')}"
    ) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(
            {
                "family": HYBRID,
                "dataset": spec.name,
                "horizon": cfg.horizon,
                "backtest.folds": cfg.backtest.folds,
                "n_series": panel.n_series,
                "residual": cfg.features.residual,
                "lags": ",".join(map(str, cfg.features.lags)),
                **{f"xgboost.{k}": v for k, v in cfg.xgboost.model_dump().items()},
                **{f"prophet.{k}": v for k, v in cfg.prophet.model_dump().items()},
            }
        )
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/demand_forecast.json")
        rlog.log_dataset(panel.frame, f"{spec.name}-train", source, "training", "y", fp)
        metrics = _log_backtest_metrics(result, HYBRID)
        for fam, m in baselines.items():
            mlflow.log_metric(f"smape_ratio_to_{fam}", metrics["smape"] / m["smape"])
        table = result.series_metrics().merge(panel.keys, on="sid")
        rlog.log_frame(table, "backtest/per_series_metrics.json")
        holdout = fgate.holdout_frame(result, panel.key_columns)
        rlog.log_frame(holdout, fgate.HOLDOUT_ARTIFACT)
        rlog.log_figures(_figures(panel, result, cfg.plot_series))
        log.info("fitting the hybrid on all %s series for registration", panel.n_series)
        t0 = time.perf_counter()
        with batch_mapper(cfg) as map_batches:
            model = HybridProphetXGBoost(cfg, _progress("final fit"), map_batches).fit(panel)
        train_seconds = time.perf_counter() - t0
        model.calibrate(result.residuals(HYBRID))
        mlflow.log_metric("train_seconds", train_seconds)
        info = log_forecast_model(model)
        metric_tags = {f"metric.{k}": f"{v:.6f}" for k, v in metrics.items() if pd.notna(v)}
        data_end = panel.frame["ds"].max()
        window_tags = {
            fgate.TAG_DATA_END: str(data_end.date()),
            fgate.TAG_WINDOW_END: str((data_end + cfg.horizon * panel.step).date()),
            fgate.TAG_HORIZON: str(cfg.horizon),
            rlog.TAG_EVAL_FINGERPRINT: fgate.eval_fingerprint(holdout, panel.key_columns),
            **({fgate.TAG_GATE_ORIGIN: str(result.gate.origin.date())} if result.gate else {}),
        }
        baseline_tags = {
            f"baseline.{fam}.{k}": f"{v:.6f}"
            for fam, m in baselines.items()
            for k, v in m.items()
            if pd.notna(v)
        }
        version = rlog.register_version(
            info.model_uri,
            cfg.registered_model_name,
            {**tags, "run_id": run.info.run_id, **metric_tags, **baseline_tags, **window_tags},
            description=(
                f"HybridProphetXGBoost on {panel.n_series} series; latest-fold SMAPE "
                f"{metrics['smape']:.3f} (horizon {cfg.horizon})"
            ),
        )
        client = mlflow.MlflowClient()
        try:
            client.set_registered_model_alias(
                cfg.registered_model_name, CHALLENGER, version.version
            )
        except Exception:
            client.delete_model_version(cfg.registered_model_name, version.version)
            raise
        mlflow.set_tag("shelfwise.registered_version", version.version)
    log.info(
        "registered %s v%s as @%s (latest-fold SMAPE %.3f)",
        cfg.registered_model_name,
        version.version,
        CHALLENGER,
        metrics["smape"],
    )
    return run.info.run_id, version.version, metrics, train_seconds


@flow(name="train-demand-forecast")
def train_demand_forecast(
    config: str = "demand_forecast",
    platform_config: str = "platform",
    trigger: str = "manual",
    max_series: int | None = None,
    actuals: str | None = None,
    promote: bool = True,
    gate_config: str = "gate",
) -> dict:
    """Backtest the hybrid and its baselines, log them, register the hybrid as @challenger,
    then (``promote``) run the gate against ``@champion``. ``actuals``: a file of realised
    actuals (the data set's columns) appended to the training data (retraining on feedback)."""
    capture_platform_logs()
    if promote:
        from shelfwise.registry.promotion import check_trigger

        check_trigger(trigger)  # fail before training, not after registering
    cfg = load_forecast_config(config)
    if max_series is not None:
        cfg = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"max_series": max_series})}
        )
    platform = load_platform_config(platform_config)
    spec = load_timeseries_spec(cfg.dataset)
    panel, source, fp = load_panel(spec, cfg, platform, actuals)
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    result = run_backtest(panel, cfg, find_gate_origin(panel, cfg))
    baselines = log_baselines(result, cfg, spec, experiment_id, fp, source, trigger)
    run_id, version, metrics, secs = fit_and_register(
        panel, result, cfg, spec, experiment_id, fp, source, trigger, baselines
    )
    gate = None
    if promote:
        from shelfwise.flows.promote import gate_and_promote_flow

        gate = gate_and_promote_flow(
            model_name=cfg.registered_model_name,
            candidate=version,
            trigger=trigger,
            config=config,
            gate_config=gate_config,
            platform_config=platform_config,
        )
    return ForecastTrainResult(
        model_name=cfg.registered_model_name,
        version=version,
        run_id=run_id,
        experiment_id=experiment_id,
        tracking_uri=tracking_uri,
        metrics=metrics,
        baseline_metrics=baselines,
        n_series=panel.n_series,
        data_fingerprint=fp,
        train_seconds=secs,
        data_end=str(panel.frame["ds"].max().date()),
        gate=gate,
    ).as_dict()
