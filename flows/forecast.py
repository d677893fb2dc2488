"""Prefect flow ``train-forecast``, one for every forecast task (``configs/tasks/<name>.yaml``,
kind ``forecast``): load + validate the task's data set (its negative-target policy, wide or long
layout, H/D/W/M frequency), a rolling-origin backtest of every candidate family (one MLflow run
per family, same metric names, tagged ``shelfwise.family``), then the winner on the task's
selection metric (mean over the backtest folds) is fitted on all series, with the declared
fallback forecaster for series too short for it, calibrated (conformal intervals from its
backtest residuals), registered with its family and task tagged, and pointed at by
``@challenger``; then (``promote``) the promotion gate (registry/forecast_gate.py via
flows/promote.py) decides about ``@champion``. The hybrid is champion only where it wins.

When ``@champion`` trained up to a date after the latest backtest origin (a frequent retrain),
the backtest adds the gate fold at that date (models/backtest.py) and the gate's holdout comes
from it. Headline metrics (``metric.*`` tags, the runs' step metrics) stay the latest regular
fold's; the gate fold's are logged on every family's run as ``gate_fold.<metric>`` and its
origin is the run and version tag ``shelfwise.gate_origin``.

Training data: the data set's rows up to ``data.train_end`` (all when unset), plus realised
actuals from a file (``actuals``) when retraining on feedback."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from shelfwise.configs.datasets import TimeSeriesDatasetSpec
from shelfwise.configs.forecast import ForecastConfig
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.configs.tasks import TaskDeclaration, TaskKind, load_task, training_config
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.flows.fanout import batch_mapper
from shelfwise.flows.train import connect_tracking
from shelfwise.models import plots
from shelfwise.models.backtest import (
    FALLBACK,
    BacktestResult,
    backtest,
    calibrate_family,
    candidate_families,
    families,
    gate_origin,
)
from shelfwise.models.datasets import (
    NEGATIVE_COUNT_ATTR,
    cut_and_extend,
    fingerprint,
    load_actuals,
    load_timeseries,
)
from shelfwise.models.forecast import FallbackForecaster, Panel, fit_with_fallback, prepare_panel
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
    metrics: dict[str, float]  # the registered family's, latest backtest fold
    baseline_metrics: dict[str, dict[str, float]]  # every other family's, latest fold
    n_series: int
    data_fingerprint: str
    train_seconds: float
    data_end: str
    task: str = ""
    task_source: str = ""
    family: str = ""  # the family that won and was registered
    selection_metric: str = "smape"
    candidates: list[dict] = field(default_factory=list)  # the candidates table
    coverage: float = float("nan")  # the registered family's backtest interval coverage
    n_fallback: int = 0  # series too short for the family: forecast by the fallback
    fallback: str | None = None
    n_skipped: int = 0
    negative_target: dict = field(default_factory=dict)  # {"policy", "rows"}
    gate: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@task(name="load-and-validate-series", cache_policy=NONE)
def load_panel(
    spec: TimeSeriesDatasetSpec,
    cfg: ForecastConfig,
    platform: PlatformConfig,
    actuals: str | None = None,
    negative_target: str = "error",
) -> tuple[Panel, str, str, dict]:
    """The validated panel, its source, fingerprint and the negative-target count."""
    df, path = load_timeseries(spec, platform.data_dir, negative_target)
    negatives = dict(df.attrs.get(NEGATIVE_COUNT_ATTR, {"policy": negative_target, "rows": 0}))
    extra = load_actuals(spec, actuals, negative_target) if actuals else None
    if extra is not None:
        negatives["rows"] += int(extra.attrs.get(NEGATIVE_COUNT_ATTR, {}).get("rows", 0))
    train_end = pd.Timestamp(cfg.data.train_end) if cfg.data.train_end else None
    panel = prepare_panel(cut_and_extend(df, spec, train_end, extra), spec, cfg)
    log = get_run_logger()
    log.info(
        "%s series ready up to %s (%s skipped as too short, %s short -> fallback %s; %s negative "
        "target row(s), policy %s)",
        panel.n_series,
        panel.frame["ds"].max(),
        len(panel.skipped),
        len(panel.short),
        cfg.data.fallback,
        negatives["rows"],
        negatives["policy"],
    )
    source = f"{path}+{actuals}" if actuals else str(path)
    return panel, source, fingerprint(panel.frame), negatives


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
    main = panel.main_part()
    origin = gate_origin(main, cfg.horizon, cfg.backtest.folds, cfg.backtest.step, champion_end)
    if origin is not None:
        get_run_logger().info(
            "@champion trained up to %s, after the latest backtest origin: gate fold at %s "
            "(realised rows up to %s)",
            champion_end.date(),
            origin.date(),
            main.frame["ds"].max().date(),
        )
    return origin


@task(name="backtest-families", cache_policy=NONE)
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


def stamp(ts: pd.Timestamp) -> str:
    """A date tag: the day (``2017-06-30``) for daily and coarser data, else the timestamp."""
    ts = pd.Timestamp(ts)
    return str(ts.date()) if ts == ts.normalize() else ts.isoformat()


def _tags(task: TaskDeclaration, cfg, spec, family: str, fp: str, trigger: str) -> dict[str, str]:
    return {
        rlog.TAG_TASK: task.name,
        rlog.TAG_TASK_SOURCE: str(task.source or task.name),
        rlog.TAG_FAMILY: family,
        fgate.TAG_FORECAST_FAMILY: family,
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


def candidates_table(result: BacktestResult, cfg: ForecastConfig, metric: str) -> pd.DataFrame:
    """One row per backtested family: the mean over folds and the latest fold of each metric,
    whether it competes (a task candidate) and which one was selected (the lowest mean
    ``metric`` among the candidates)."""
    fm = result.fold_metrics()
    competing = candidate_families(cfg)
    rows = []
    for fam in families(cfg):
        if fam == FALLBACK:
            continue
        g = fm[fm["family"] == fam]
        latest = g[g["fold"] == result.latest_fold]
        row: dict = {"family": fam, "candidate": fam in competing}
        for k in FORECAST_METRICS:
            vals = g[k].dropna()
            row[f"{k}_mean_folds"] = float(vals.mean()) if len(vals) else float("nan")
            row[k] = float(latest[k].iloc[0]) if len(latest) else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    pool = table[table["candidate"]]
    key = f"{metric}_mean_folds"
    if pool[key].isna().all():
        raise ValueError(f"no candidate family has a backtest {metric}")
    winner = pool.loc[pool[key].idxmin(), "family"]
    table["selected"] = table["family"] == winner
    return table.sort_values(key).reset_index(drop=True)


def _figures(panel: Panel, result: BacktestResult, family: str, n: int) -> dict:
    f = result.forecasts[
        (result.forecasts["fold"] == result.latest_fold) & (result.forecasts["family"] == family)
    ]
    origin = f["origin"].iloc[0]
    figs = {}
    for sid in sorted(f["sid"].unique())[:n]:
        hist = panel.frame[(panel.frame["sid"] == sid) & (panel.frame["ds"] <= origin)]
        label = ", ".join(f"{k}={hist[k].iloc[0]}" for k in panel.key_columns)
        g = f[f["sid"] == sid]
        figs[f"forecast_{sid:04d}.png"] = plots.forecast_figure(
            hist, g, f"{label}: {family} forecast vs actual from {pd.Timestamp(origin).date()}"
        )
    return figs


@task(name="log-family-runs", cache_policy=NONE)
def log_family_runs(
    result: BacktestResult,
    task: TaskDeclaration,
    cfg: ForecastConfig,
    spec: TimeSeriesDatasetSpec,
    experiment_id: str,
    fp: str,
    trigger: str,
    winner: str,
) -> dict[str, dict[str, float]]:
    """One MLflow run per backtested family but the winner (whose run registers the model)."""
    out = {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    competing = candidate_families(cfg)
    for fam in families(cfg):
        if fam in (winner, FALLBACK):
            continue
        with rlog.tracked_run(experiment_id=experiment_id, run_name=f"{fam}-{stamp}"):
            mlflow.set_tags(
                {
                    **_tags(task, cfg, spec, fam, fp, trigger),
                    "shelfwise.candidate": str(fam in competing).lower(),
                }
            )
            mlflow.log_params({"family": fam, "horizon": cfg.horizon, "dataset": spec.name})
            out[fam] = _log_backtest_metrics(result, fam)
    return out


@task(name="fit-log-register-winner", cache_policy=NONE)
def fit_and_register(
    panel: Panel,
    result: BacktestResult,
    task: TaskDeclaration,
    cfg: ForecastConfig,
    spec: TimeSeriesDatasetSpec,
    experiment_id: str,
    fp: str,
    source: str,
    trigger: str,
    winner: str,
    table: pd.DataFrame,
    baselines: dict[str, dict[str, float]],
    negatives: dict,
) -> tuple[str, str, dict[str, float], float, int]:
    log = get_run_logger()
    tags = _tags(task, cfg, spec, winner, fp, trigger)
    n_short = len(panel.short)
    with rlog.tracked_run(
        experiment_id=experiment_id, run_name=f"{winner}-{time.strftime('%Y%m%d-%H%M%S')}"
    ) as run:
        mlflow.set_tags({**tags, "shelfwise.candidate": "true", "shelfwise.selected": "true"})
        params = {
            "family": winner,
            "dataset": spec.name,
            "horizon": cfg.horizon,
            "frequency": spec.frequency,
            "backtest.folds": cfg.backtest.folds,
            "n_series": panel.n_series,
            "selection_metric": task.metric,
            "candidates": ",".join(candidate_families(cfg)),
            "short_series": cfg.data.short_series,
            "fallback": cfg.data.fallback,
            "negative_target": negatives["policy"],
        }
        if winner in ("xgboost", "hybrid"):
            params["lags"] = ",".join(map(str, cfg.features.lags))
            params.update({f"xgboost.{k}": v for k, v in cfg.xgboost.model_dump().items()})
        if winner in ("prophet", "hybrid"):
            params.update({f"prophet.{k}": v for k, v in cfg.prophet.model_dump().items()})
        if winner == "hybrid":
            params["residual"] = cfg.features.residual
        mlflow.log_params(params)
        mlflow.log_dict(cfg.model_dump(mode="json"), f"config/{task.name}.json")
        rlog.log_dataset(panel.frame, f"{spec.name}-train", source, "training", "y", fp)
        metrics = _log_backtest_metrics(result, winner)
        for fam, m in baselines.items():
            if m.get("smape"):
                mlflow.log_metric(f"smape_ratio_to_{fam}", metrics["smape"] / m["smape"])
        mlflow.log_metrics(
            {
                "n_series": panel.n_series,
                "n_fallback_series": n_short,
                "n_skipped_series": len(panel.skipped),
                "negative_target_rows": negatives["rows"],
            }
        )
        rlog.log_frame(table, "backtest/candidates.csv")
        per_series = result.series_metrics().merge(panel.keys, on="sid")
        rlog.log_frame(per_series, "backtest/per_series_metrics.json")
        holdout = fgate.holdout_frame(result, panel.key_columns, winner)
        rlog.log_frame(holdout, fgate.HOLDOUT_ARTIFACT)
        rlog.log_figures(_figures(panel, result, winner, cfg.plot_series))
        log.info(
            "fitting %s on all %s series for registration (%s short -> %s)",
            winner,
            panel.n_series - n_short,
            n_short,
            cfg.data.fallback,
        )
        t0 = time.perf_counter()
        with batch_mapper(cfg) as map_batches:
            model = fit_with_fallback(winner, panel, cfg, _progress("final fit"), map_batches)
        train_seconds = time.perf_counter() - t0
        main = model.main if isinstance(model, FallbackForecaster) else model
        main.calibrate(result.residuals(winner))
        if isinstance(model, FallbackForecaster):
            fb = result.residuals(FALLBACK)
            if len(fb):
                model.fallback.calibration = calibrate_family(fb, cfg)
        mlflow.log_metric("train_seconds", train_seconds)
        info = log_forecast_model(model)
        metric_tags = {f"metric.{k}": f"{v:.6f}" for k, v in metrics.items() if pd.notna(v)}
        data_end = panel.frame["ds"].max()
        window_tags = {
            fgate.TAG_DATA_END: stamp(data_end),
            fgate.TAG_WINDOW_END: stamp(data_end + cfg.horizon * panel.step),
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
        data_tags = {
            "shelfwise.n_fallback_series": str(n_short),
            "shelfwise.fallback": cfg.data.fallback,
            "shelfwise.negative_target": f"{negatives['policy']}:{negatives['rows']}",
        }
        mlflow.set_tags(data_tags)
        version = rlog.register_version(
            info.model_uri,
            cfg.registered_model_name,
            {
                **tags,
                "run_id": run.info.run_id,
                **metric_tags,
                **baseline_tags,
                **window_tags,
                **data_tags,
            },
            description=(
                f"{winner} (won the {task.metric} backtest among "
                f"{', '.join(candidate_families(cfg))}) on {panel.n_series} series "
                f"({n_short} by the {cfg.data.fallback} fallback); latest-fold "
                f"{task.metric} {metrics[task.metric]:.3f} (horizon {cfg.horizon})"
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
        "registered %s v%s (%s) as @%s (latest-fold %s %.3f)",
        cfg.registered_model_name,
        version.version,
        winner,
        CHALLENGER,
        task.metric,
        metrics[task.metric],
    )
    return run.info.run_id, version.version, metrics, train_seconds, n_short


def forecast_task_config(task: TaskDeclaration, model_name: str | None = None) -> ForecastConfig:
    """The task's ForecastConfig with its candidates (and ``model_name`` when given)."""
    if task.kind is not TaskKind.forecast:
        raise ValueError(
            f"task {task.name!r} is a {task.kind.value} task, not a forecast: train it with "
            "its kind's flow"
        )
    cfg = training_config(task)
    update: dict = {"candidates": task.families}
    if model_name:
        update["registered_model_name"] = model_name
    return cfg.model_copy(update=update)


@flow(name="train-forecast", flow_run_name="train-forecast-{task}")
def train_forecast(
    task: str,
    platform_config: str = "platform",
    trigger: str = "manual",
    extra_data: str | None = None,
    promote: bool = True,
    model_name: str | None = None,
) -> dict:
    """Backtest every candidate family of the forecast ``task`` (a name or a declaration's
    path), register the winner on the task's selection metric as @challenger, then
    (``promote``) run the gate against ``@champion``. ``extra_data``: a file of realised
    actuals (the data set's columns) appended to the training data (retraining on feedback);
    ``model_name`` overrides the task's registered model."""
    capture_platform_logs()
    if promote:
        from shelfwise.registry.promotion import check_trigger

        check_trigger(trigger)  # fail before training, not after registering
    declaration = load_task(task)
    cfg = forecast_task_config(declaration, model_name)
    platform = load_platform_config(platform_config)
    spec = declaration.dataset_spec()
    panel, source, fp, negatives = load_panel(
        spec, cfg, platform, extra_data, declaration.data.negative_target
    )
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    result = run_backtest(panel, cfg, find_gate_origin(panel, cfg))
    table = candidates_table(result, cfg, declaration.metric)
    winner = str(table.loc[table["selected"], "family"].iloc[0])
    get_run_logger().info(
        "candidates on %s (mean over %s folds): %s -> %s",
        declaration.metric,
        cfg.backtest.folds,
        ", ".join(
            f"{r.family} {getattr(r, declaration.metric + '_mean_folds'):.3f}"
            for r in table.itertuples()
            if r.candidate
        ),
        winner,
    )
    baselines = log_family_runs(result, declaration, cfg, spec, experiment_id, fp, trigger, winner)
    run_id, version, metrics, secs, n_short = fit_and_register(
        panel,
        result,
        declaration,
        cfg,
        spec,
        experiment_id,
        fp,
        source,
        trigger,
        winner,
        table,
        baselines,
        negatives,
    )
    gate = None
    if promote:
        from shelfwise.flows.promote import gate_and_promote_flow

        gate = gate_and_promote_flow(
            model_name=cfg.registered_model_name,
            candidate=version,
            trigger=trigger,
            task=str(declaration.source or declaration.name),
            platform_config=platform_config,
        )
    row = table[table["family"] == winner].iloc[0]
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
        data_end=stamp(panel.frame["ds"].max()),
        task=declaration.name,
        task_source=str(declaration.source or declaration.name),
        family=winner,
        selection_metric=declaration.metric,
        candidates=json.loads(table.to_json(orient="records")),
        coverage=float(row["coverage_mean_folds"]),
        n_fallback=n_short,
        fallback=cfg.data.fallback if n_short else None,
        n_skipped=len(panel.skipped),
        negative_target=negatives,
        gate=gate,
    ).as_dict()
