"""The hybrid's Prophet stage on N store_item series through each fan-out runner (configs
``fanout.runner``: joblib, Prefect process pool, Dask local cluster), plus Prefect's cost per
``fit-prophet-batch`` task on a warm runner (no-op batches).

Each runner runs in a fresh Python process (cold pools, same footing) inside a Prefect flow on a
temporary ephemeral API; the Prophet time is ``HybridProphetXGBoost.fit_seconds["components"]``
(starting the runner's worker processes included). ``python -m benchmarks.bench_fanout
[--series 100] [--runners joblib,process,dask]`` writes benchmarks/results/fanout.json + .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NOOP_TASKS = 40


def _noop(batch: list[int]) -> list[int]:
    return batch


def _one(runner: str, n_series: int) -> dict:
    """In this process: fit the hybrid on ``n_series`` series with ``runner``; time the stages."""
    from prefect import flow, task
    from prefect.cache_policies import NONE

    from shelfwise.configs.datasets import load_timeseries_spec
    from shelfwise.configs.forecast import load_forecast_config
    from shelfwise.configs.platform import load_platform_config
    from shelfwise.flows.fanout import batch_mapper
    from shelfwise.models.datasets import load_timeseries
    from shelfwise.models.forecast import HybridProphetXGBoost, prepare_panel

    cfg = load_forecast_config("demand_forecast")
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"max_series": n_series}),
            "fanout": cfg.fanout.model_copy(update={"runner": runner}),
        }
    )
    spec = load_timeseries_spec(cfg.dataset)
    df, _ = load_timeseries(spec, load_platform_config().data_dir)
    panel = prepare_panel(df, spec, cfg)

    @task(name="bench-fanout", cache_policy=NONE)
    def run() -> dict:
        t0 = time.perf_counter()
        with batch_mapper(cfg) as map_batches:
            model = HybridProphetXGBoost(cfg, map_batches=map_batches).fit(panel)
            out = {"prophet_s": model.fit_seconds["components"]}
            out["xgboost_s"] = model.fit_seconds["xgboost"]
            if runner != "joblib":
                t1 = time.perf_counter()
                done = list(map_batches(_noop, [[i] for i in range(NOOP_TASKS)]))
                assert len(done) == NOOP_TASKS
                out["ms_per_task_warm"] = 1000 * (time.perf_counter() - t1) / NOOP_TASKS
            t2 = time.perf_counter()
        out["runner_stop_s"] = time.perf_counter() - t2
        out["block_s"] = time.perf_counter() - t0
        return out

    @flow(name="bench-fanout")
    def bench() -> dict:
        return run()

    return {
        "runner": runner,
        "series": panel.n_series,
        "workers": cfg.workers,
        "batch_size": cfg.batch_size,
        **bench(),
    }


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--runners", default="joblib,process,dask")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_one(args.child, args.series)))
        return
    logging.basicConfig(level=logging.INFO)
    rows = []
    for runner in args.runners.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-fanout-") as home:
            env = {
                **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
                "PREFECT_HOME": home,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
            cmd = [sys.executable, "-m", "benchmarks.bench_fanout", "--series", str(args.series)]
            proc = subprocess.run(
                [*cmd, "--child", runner], env=env, capture_output=True, text=True, check=True
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
            logging.info("%s", row)
            rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fanout.json").write_text(json.dumps(rows, indent=2))
    lines = [
        f"# Prophet fan-out, {args.series} store_item series (one run each; 2-core machine)",
        "",
        "| runner | Prophet stage (s) | XGBoost (s) | runner stop (s) | Prefect ms/task (warm) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        per_task = f"{r['ms_per_task_warm']:.0f}" if "ms_per_task_warm" in r else "-"
        lines.append(
            f"| {r['runner']} | {r['prophet_s']:.1f} | {r['xgboost_s']:.1f} "
            f"| {r['runner_stop_s']:.1f} | {per_task} |"
        )
    (RESULTS / "fanout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
