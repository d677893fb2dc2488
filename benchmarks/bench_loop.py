"""Issue 6's benchmarks: the loop's latency and the drift report's cost.

1. Loop latency, on embedded defaults: `shelfwise demo --reduced` in a fresh state folder on free
   ports; from the monitoring run that crosses the threshold to the new champion answering
   requests, split into detect / trigger / worker start / retrain (gate) / swap. Target < 30 s.
2. Drift report time for 5k and 100k rows per side (reference vs current), our configured report
   (explicit Wasserstein / Jensen-Shannon tests + prediction drift) beside Evidently's default
   DataDriftPreset on the same frames, median of a few repeats.

`python -m benchmarks.bench_loop [--skip-loop] [--repeats N]`; results in
benchmarks/results/loop.json and loop.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform as host
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parent / "results"
LOOP_TARGET_S = 30.0  # issue 16: threshold crossed -> new champion answering, quiet 2 cores


def resample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df.sample(n=n, replace=n > len(df), random_state=seed).reset_index(drop=True)


def time_drift(
    reference: pd.DataFrame, current: pd.DataFrame, numeric, categorical, repeats: int
) -> dict[str, float]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from shelfwise.configs.monitoring import DriftConfig
    from shelfwise.monitoring.drift import _dataset, drift_report

    ours, default = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        drift_report(reference, current, numeric, categorical, DriftConfig(), "delay_probability")
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        Report([DataDriftPreset()]).run(
            _dataset(current, numeric, categorical), _dataset(reference, numeric, categorical)
        )
        default.append(time.perf_counter() - t0)
    return {"ours_s": statistics.median(ours), "evidently_default_s": statistics.median(default)}


def drift_bench(repeats: int) -> list[dict]:
    from shelfwise.configs.datasets import load_tabular_spec
    from shelfwise.configs.platform import load_platform_config
    from shelfwise.models.datasets import load_tabular

    spec = load_tabular_spec("ecommerce_shipping")
    data, _ = load_tabular(spec, load_platform_config().data_dir)
    rng = np.random.default_rng(0)
    data = data.assign(delay_probability=rng.uniform(size=len(data)))
    low, high = data.query("Discount_offered <= 10"), data
    rows = []
    for n in (5_000, 100_000):
        ref, cur = resample(low, n, 1), resample(high, n, 2)
        t = time_drift(ref, cur, spec.numeric, spec.categorical, repeats)
        rows.append({"rows_per_side": n, **{k: round(v, 3) for k, v in t.items()}})
        logger.info("drift report %s rows per side: %s", n, t)
    return rows


def loop_bench() -> dict:
    from rich.console import Console

    from shelfwise.configs.demo import load_demo_config
    from shelfwise.configs.platform import (
        PlatformConfig,
        PrefectConfig,
        ServingConfig,
        TrackingConfig,
    )
    from shelfwise.configs.stack import EvidentlyStackConfig, StackConfig
    from shelfwise.flows.demo import run_demo
    from shelfwise.registry.server import free_port

    os.environ.setdefault("SHELFWISE_API_KEY", "bench-loop-key")
    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-loop-") as tmp:
        platform = PlatformConfig(
            state_dir=Path(tmp) / ".shelfwise",
            data_dir=Path(os.environ.get("SHELFWISE_DATA_DIR", "data")).resolve(),
            tracking=TrackingConfig(port=free_port(), startup_timeout_s=300),
            prefect=PrefectConfig(port=free_port()),
            serving=ServingConfig(port=free_port()),
        )
        stack = StackConfig(evidently=EvidentlyStackConfig(port=free_port()))
        summary = run_demo(
            platform, stack, load_demo_config(), reduced=True, keep=False, console=Console()
        )
    loop = summary.loop
    return {
        "stages_s": {
            "detect": loop.detect_s,
            "trigger": loop.trigger_s,
            "worker_start": loop.start_s,
            "retrain -> promoted": loop.retrain_s,
            "gate (part of retrain)": loop.gate_s,
            "swap": loop.swap_s,
        },
        "total_s": loop.total_s,
        "old_version": loop.old_version,
        "new_version": loop.new_version,
        "promoted": loop.promoted,
        "target_s": LOOP_TARGET_S,
        "meets_target": bool(loop.promoted and loop.total_s < LOOP_TARGET_S),
        "demo_wall_s": summary.wall_s,
        "monitoring": [
            {"traffic": m.traffic, "drift_share": m.drift_share, "retrain": m.retrain}
            for m in summary.monitoring
        ],
    }


def markdown(result: dict) -> str:
    lines = [
        "# Loop latency and drift report time",
        "",
        f"Command: `python -m benchmarks.bench_loop` on {os.cpu_count()} CPUs, Python "
        f"{host.python_version()}, {result['at']} (load average before {result['load_before']}, "
        f"after {result['load_after']}; a shared machine).",
        "",
    ]
    loop = result.get("loop")
    if loop:
        lines += [
            f"## Loop latency (delay risk, `shelfwise demo --reduced`, fresh state): "
            f"v{loop['old_version']} -> v{loop['new_version']}",
            "",
            "| stage | seconds |",
            "|---|---:|",
            *(f"| {k} | {v:.1f} |" for k, v in loop["stages_s"].items()),
            f"| **total** (threshold -> new champion answering) | **{loop['total_s']:.1f}** |",
            "",
            "Flow runs start warm (a fork of the stack's warm server, `flows/warm.py`); the "
            "swap is pushed by the registry's webhook, so the service can serve the new version "
            "before the retrain run has finished (swap 0).",
            "",
            f"Target < {loop['target_s']:.0f} s: {'yes' if loop['meets_target'] else 'NO'}. "
            f"Whole demo wall time {loop['demo_wall_s']:.0f} s. Monitoring decisions: "
            + ", ".join(
                f"{m['traffic']} traffic drift share {m['drift_share']:.2f} -> "
                f"{'retrain' if m['retrain'] else 'keep'}"
                for m in loop["monitoring"]
            ),
            "",
        ]
    lines += [
        "## Drift report time (shipping features, 10 columns + prediction; median of "
        f"{result['repeats']})",
        "",
        "| rows per side | ours (explicit tests + prediction drift) s | Evidently default "
        "DataDriftPreset s |",
        "|---:|---:|---:|",
        *(
            f"| {r['rows_per_side']:,} | {r['ours_s']:.2f} | {r['evidently_default_s']:.2f} |"
            for r in result["drift"]
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result: dict = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "repeats": args.repeats,
        "drift": drift_bench(args.repeats),
    }
    if not args.skip_loop:
        result["loop"] = loop_bench()
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loop.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (RESULTS / "loop.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))  # noqa: T201 (a benchmark's report)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main()
