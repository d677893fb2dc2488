"""Forecast tasks benchmark (not run in tests): for every declared forecast task
(``configs/tasks/*.yaml``, kind forecast), the task's candidate families on the same
rolling-origin backtest as ``train-forecast`` (the task's horizon and folds), one candidates
table per data set with the selected champion, its interval coverage (folds after the first:
conformal intervals need earlier residuals) and, where published figures exist for the data set,
the peers beside it.

Run: python -m benchmarks.bench_forecast_tasks [--max-series [TASK=]N ...] [--task NAME ...]
[--candidates a,b] [--out NAME]   (writes benchmarks/results/<NAME, default forecast_tasks>.json
+ .md; ``--candidates`` overrides the tasks' own, e.g. to leave Prophet out on all 500 series)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform as pyplatform
import time
from pathlib import Path

from shelfwise.configs.platform import load_platform_config
from shelfwise.configs.tasks import TaskKind, load_tasks
from shelfwise.flows.forecast import candidates_table, forecast_task_config
from shelfwise.models.backtest import backtest, families
from shelfwise.models.datasets import load_timeseries
from shelfwise.models.forecast import prepare_panel

RESULTS = Path(__file__).resolve().parent / "results"

# Published figures on the same holdouts, by data set (issue 14: the last 90 days of 2017, all
# 500 store_item series, same SMAPE). Only comparable on the full data set.
PEERS: dict[str, list[dict]] = {
    "store_item_demand": [
        {"peer": "mlforecast + LightGBM, recursive", "smape": 12.46, "seconds": 16},
        {"peer": "mlforecast + LightGBM, direct", "smape": 12.50, "seconds": 17},
        {"peer": "statsforecast MSTL + AutoETS", "smape": 14.44, "seconds": 236},
        {"peer": "statsforecast SeasonalNaive(364)", "smape": 17.87, "seconds": None},
    ],
}
TARGETS = {"store_item_demand": 12.25, "walmart_weekly": 3.85}


def run_task(task, max_series: int | None, candidates: list[str] | None = None) -> dict:
    cfg = forecast_task_config(task)
    if candidates:
        cfg = cfg.model_copy(update={"candidates": candidates})
    if max_series:
        cfg = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"max_series": max_series})}
        )
    spec = task.dataset_spec()
    df, _ = load_timeseries(
        spec, load_platform_config("platform").data_dir, task.data.negative_target
    )
    panel = prepare_panel(df, spec, cfg)
    t0 = time.perf_counter()
    result = backtest(panel, cfg)
    seconds = time.perf_counter() - t0
    table = candidates_table(result, cfg, task.metric)
    fm = result.fold_metrics()
    coverage = fm[fm["fold"] >= 1].groupby("family")["coverage"].mean().to_dict()
    champion = str(table.loc[table["selected"], "family"].iloc[0])
    return {
        "task": task.name,
        "dataset": spec.name,
        "n_series": panel.n_series,
        "n_fallback": len(panel.short),
        "horizon": cfg.horizon,
        "folds": cfg.backtest.folds,
        "selection_metric": task.metric,
        "champion": champion,
        "champion_smape_latest_fold": float(table.loc[table["selected"], "smape"].iloc[0]),
        "champion_coverage": float(coverage.get(champion, float("nan"))),
        "interval_level": cfg.intervals.level,
        "candidates": json.loads(table.to_json(orient="records")),
        "coverage_after_first_fold": {
            f: float(coverage.get(f, float("nan"))) for f in families(cfg)
        },
        "backtest_seconds": seconds,
        "full_data_set": max_series is None,
    }


def to_markdown(res: dict) -> str:
    lines = [
        "# Forecast tasks: candidate families on each task's backtest",
        "",
        f"Command: `{res['command']}` on {res['machine']} "
        f"(load average at start {res['load_average_start']}).",
        "",
    ]
    for t in res["tasks"]:
        m = t["selection_metric"]
        lines += [
            f"## {t['task']} ({t['dataset']}): {t['n_series']} series"
            + ("" if t["full_data_set"] else " (a subset: data.max_series)")
            + f", horizon {t['horizon']}, {t['folds']} folds, {t['backtest_seconds']:.0f}s",
            "",
            f"| family | competes | {m} (mean of folds) | {m} (latest fold) | MASE (latest) | "
            f"coverage {t['interval_level']:.0%} (folds >= 1) | selected |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in t["candidates"]:
            cov = t["coverage_after_first_fold"].get(c["family"], float("nan"))
            lines.append(
                f"| {c['family']} | {'yes' if c['candidate'] else 'reference'} | "
                f"{c[m + '_mean_folds']:.3f} | {c[m]:.3f} | {c['mase']:.3f} | {cov:.3f} | "
                f"{'**champion**' if c['selected'] else ''} |"
            )
        lines.append("")
        target = TARGETS.get(t["dataset"])
        lines.append(
            f"- champion {t['champion']}: latest-fold SMAPE {t['champion_smape_latest_fold']:.3f}"
            + (f" (target <= {target} on the full data set)" if target else "")
            + f", interval coverage {t['champion_coverage']:.3f} "
            f"(nominal {t['interval_level']:.2f}, target within +-0.03)"
        )
        peers = PEERS.get(t["dataset"])
        if peers:
            note = (
                ""
                if t["full_data_set"]
                else " (peers ran on all series: not comparable to a subset)"
            )
            lines += [
                "",
                f"Peers on the same holdout{note}:",
                "",
                "| peer | SMAPE | seconds |",
                "|---|---|---|",
            ]
            lines += [f"| {p['peer']} | {p['smape']:.2f} | {p['seconds'] or '-'} |" for p in peers]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-series", action="append", default=[], help="N (every task) or TASK=N")
    ap.add_argument("--task", action="append", default=None)
    ap.add_argument("--candidates", default=None, help="comma-separated families")
    ap.add_argument("--out", default="forecast_tasks")
    args = ap.parse_args()
    cands = args.candidates.split(",") if args.candidates else None
    logging.basicConfig(level=logging.WARNING)
    tasks = [t for t in load_tasks() if t.kind is TaskKind.forecast]
    if args.task:
        tasks = [t for t in tasks if t.name in args.task]
    limits: dict[str | None, int] = {}
    for item in args.max_series:
        name, _, n = item.rpartition("=")
        limits[name or None] = int(n)
    cmd = "python -m benchmarks.bench_forecast_tasks" + "".join(
        f" --max-series {m}" for m in args.max_series
    )
    cmd += "".join(f" --task {t}" for t in args.task or [])
    cmd += f" --candidates {args.candidates}" if args.candidates else ""
    cmd += f" --out {args.out}" if args.out != "forecast_tasks" else ""
    res = {
        "command": cmd,
        "machine": f"{os.cpu_count()} cores, {pyplatform.python_version()}",
        "load_average_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "tasks": [run_task(t, limits.get(t.name, limits.get(None)), cands) for t in tasks],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2, default=float))
    (RESULTS / f"{args.out}.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
