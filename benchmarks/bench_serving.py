"""Serving benchmark: single-row delay-risk requests at concurrency 1, 8 and 32 against

(a) the Shelfwise BentoML service with prediction logging on (and, to price the logging, off),
(b) `mlflow models serve` of the same registered version with default settings,
(c) a trivial endpoint in the same BentoML configuration (benchmarks/echo_service.py),
(d) in-process prediction (schema validation + fast path), the limit.

Everything runs on loopback in one go: a private MLflow server in a temporary folder, the default
XGBoost pipeline trained on the training split and registered as @champion, then the servers. One
target is measured at a time, so they do not compete for the CPU; the three BentoML targets run
side by side and are measured in interleaved rounds (median req/s), so the logging on/off and
trivial comparisons see the same machine. Only 200 responses count as successes; any other
status or transport error is an error. Results: benchmarks/results/serving.json + .md.

    python -m benchmarks.bench_serving [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform as pyplatform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.configs.platform import PlatformConfig, TrackingConfig
from shelfwise.configs.serving import load_serving_config
from shelfwise.configs.tasks import load_task, training_config
from shelfwise.registry.server import LocalServer, free_port, start_server, stop_server

logger = logging.getLogger("bench_serving")

RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = (1, 8, 32)
REQUESTS = {"bentoml": {1: 1000, 8: 2000, 32: 3000}, "mlflow": {1: 300, 8: 400, 32: 600}}
QUICK = {"bentoml": {1: 200, 8: 400, 32: 600}, "mlflow": {1: 60, 8: 80, 32: 120}}
WARMUP = 50
ROUNDS = 7  # interleaved rounds per BentoML target and concurrency (median req/s reported)
DATA_DIR = Path(os.environ.get("SHELFWISE_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))


def order_payloads(n: int = 256) -> tuple[list[dict], list[dict]]:
    """Real rows of the shipping data as service orders and as mlflow dataframe records."""
    from shelfwise.configs.tasks import load_task
    from shelfwise.models.datasets import load_tabular
    from shelfwise.serving.client import row_payload

    spec = load_tabular_spec("ecommerce_shipping")
    df, _ = load_tabular(spec, DATA_DIR)
    sample = df.sample(n, random_state=7)
    orders, records = [], []
    task = load_task("delay_risk")  # the benchmarked task (its legacy route below)
    for i, row in enumerate(sample.to_dict("records")):
        orders.append(row_payload(task, row, f"bench-{i}"))
        records.append({c: row[c] for c in spec.features})
    return orders, records


def bench_tasks_dir(folder: Path, model_name: str) -> Path:
    """The shipped declaration of the task behind the client's routes, pointed at the benchmark's
    registered model (SHELFWISE_TASKS_DIR)."""
    import yaml

    task = load_task("delay_risk")  # the benchmark's task: the shipped delay-risk declaration
    raw = yaml.safe_load(Path(task.source).read_text())
    raw["model_name"] = model_name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task.name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


# -- load generation --------------------------------------------------------------------------


def summarise(latencies: list[float], ok: int, errors: int, wall: float) -> dict[str, Any]:
    lat = np.asarray(latencies) * 1000.0
    return {
        "requests": ok + errors,
        "ok": ok,
        "errors": errors,
        "rps": round(ok / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "wall_s": round(wall, 2),
    }


async def _http_cell(url: str, bodies: list[bytes], n: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    ok = errors = 0
    error_samples: list[str] = []
    counter = iter(range(n))
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal ok, errors
            for i in counter:
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        status = r.status
                except Exception as exc:  # transport errors count as errors
                    status = -1
                    if len(error_samples) < 3:
                        error_samples.append(f"{type(exc).__name__}: {exc}")
                dt = time.perf_counter() - t0
                if status == 200:
                    ok += 1
                    latencies.append(dt)
                else:
                    errors += 1
                    if status != -1 and len(error_samples) < 3:
                        error_samples.append(f"HTTP {status}")

        # warm-up on the same connections (not measured)
        warm = iter(range(WARMUP))

        async def warmer() -> None:
            for i in warm:
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()

        await asyncio.gather(*(warmer() for _ in range(min(concurrency, WARMUP))))
        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t_start
    out = summarise(latencies, ok, errors, wall)
    out["latencies_s"] = latencies
    if error_samples:
        out["error_samples"] = error_samples
    return out


def http_cell(url: str, bodies: list[bytes], n: int, concurrency: int) -> dict[str, Any]:
    """One measured cell; the summary keeps the raw latencies under ``latencies_s``."""
    out = asyncio.run(_http_cell(url, bodies, n, concurrency))
    logger.info(
        "%s c=%s: %s", url, concurrency, {k: v for k, v in out.items() if k != "latencies_s"}
    )
    return out


def _without_latencies(cell: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cell.items() if k != "latencies_s"}


def merge_rounds(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one (target, concurrency): req/s is the median round's, latencies are pooled."""
    latencies = [x for c in cells for x in c["latencies_s"]]
    ok, errors = sum(c["ok"] for c in cells), sum(c["errors"] for c in cells)
    out = summarise(latencies, ok, errors, sum(c["wall_s"] for c in cells))
    out["rps"] = float(np.median([c["rps"] for c in cells]))
    out["rps_rounds"] = [c["rps"] for c in cells]
    samples = [e for c in cells for e in c.get("error_samples", [])]
    if samples:
        out["error_samples"] = samples[:3]
    return out


def inprocess_cell(call: Callable[[int], Any], n: int, concurrency: int) -> dict[str, Any]:
    for i in range(WARMUP):
        call(i)
    counter = iter(range(n))
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0

    def worker() -> None:
        nonlocal errors
        local = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                call(i)
            except Exception:
                with lock:
                    errors += 1
                continue
            local.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(local)

    t_start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - t_start
    return summarise(latencies, len(latencies), errors, wall)


# -- the servers ------------------------------------------------------------------------------


def train_and_register(tracking_uri: str) -> tuple[str, str]:
    import mlflow

    from shelfwise.models.datasets import load_tabular, stratified_split
    from shelfwise.models.tabular import build_xgb_pipeline, features_and_target
    from shelfwise.registry import log as rlog

    cfg = training_config(load_task("delay_risk"))
    spec = load_tabular_spec(cfg.dataset)
    df, _ = load_tabular(spec, DATA_DIR)
    train, _test = stratified_split(df, spec.target, cfg.split.test_size, cfg.split.seed)
    X, y = features_and_target(train, spec)
    pipe = build_xgb_pipeline(spec, cfg.xgboost, cfg.split.seed).fit(X, y)
    mlflow.set_tracking_uri(tracking_uri)
    name = cfg.registered_model_name
    with mlflow.start_run(experiment_id=rlog.get_or_create_experiment("bench-serving")):
        info = rlog.log_classifier(pipe, X.head(50), pipe.predict_proba(X.head(50)))
        mv = rlog.register_version(info.model_uri, name, {rlog.TAG_TASK: name})
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", mv.version)
    return name, str(mv.version)


def run_bentoml_targets(
    targets: list[tuple[str, str, dict[str, str]]],
    platform: PlatformConfig,
    tracking_uri: str,
    bodies: list[bytes],
    counts: dict[int, int],
    rounds: int,
) -> list[dict[str, Any]]:
    """Start every BentoML target (label, service import, env), then measure them in
    interleaved rounds: a slow phase of the shared machine hits every target alike instead of
    whichever one happened to run then. Idle servers cost next to nothing meanwhile."""
    from shelfwise.serving.run import start_serving, stop_serving

    servers = {}
    try:
        for label, target, env in targets:
            servers[label], _ = start_serving(
                platform,
                tracking_uri,
                port=free_port(),
                env=env,
                name=label.split(" ")[0] + f"-{len(servers)}",
                target=target,
                timeout_s=300,
            )
        cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for c in CONCURRENCY:
            for r in range(rounds):
                for label, server in servers.items():
                    logger.info("%s at concurrency %s, round %s/%s", label, c, r + 1, rounds)
                    cell = http_cell(server.url + "/v1/delay-risk", bodies, counts[c], c)
                    cells.setdefault((label, c), []).append(cell)
    finally:
        for server in servers.values():
            stop_serving(server)
    return [
        {"target": label, "concurrency": c, **merge_rounds(cells[(label, c)])}
        for label, _, _ in targets
        for c in CONCURRENCY
    ]


def run_mlflow_serve(
    state: Path, tracking_uri: str, name: str, version: str, bodies: list[bytes], counts: dict
) -> list[dict[str, Any]]:
    port = free_port()
    server = LocalServer(
        name="mlflow-models-serve",
        url=f"http://127.0.0.1:{port}",
        health_path="/ping",
        pid_file=state / "run" / "mlflow-models-serve.pid",
        log_file=state / "logs" / "mlflow-models-serve.log",
    )
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{name}/{version}",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    # mlflow runs `uvicorn` through bash: the venv's bin directory must be on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    start_server(server, cmd, "127.0.0.1", port, 300, env=env)
    rows = []
    try:
        for c in CONCURRENCY:
            logger.info("mlflow models serve at concurrency %s", c)
            rows.append(
                {
                    "target": "mlflow models serve",
                    "concurrency": c,
                    **_without_latencies(
                        http_cell(server.url + "/invocations", bodies, counts[c], c)
                    ),
                }
            )
    finally:
        stop_server(server)
    return rows


def run_inprocess(
    tracking_uri: str, name: str, version: str, orders: list[dict], counts: dict
) -> tuple[list[dict[str, Any]], str]:
    import uuid

    from shelfwise.registry.load import load_tabular_model
    from shelfwise.serving.client import _task_api

    task = load_task("delay_risk")  # the benchmarked task
    api = _task_api(task)  # its generated request / response models
    model = load_tabular_model(tracking_uri, name, version, bands=training_config(task).severity)

    def call(i: int) -> Any:
        order = api.request.model_validate(orders[i % len(orders)])
        p = model.predict_one(api.row(order))
        return api.response(
            prediction_id=uuid.uuid4().hex,
            task=api.task.name,
            row_id=api.request_id(order),
            prediction=p,
            severity=model.severity(p),
            model_version=model.version,
        )

    rows = []
    for c in CONCURRENCY:
        rows.append(
            {
                "target": "in-process (validate + fast path)",
                "concurrency": c,
                **inprocess_cell(call, counts[c], c),
            }
        )
    return rows, model.fast_path_note


# -- report -----------------------------------------------------------------------------------


def _cell(rows: list[dict], target: str, c: int) -> dict[str, Any]:
    return next(r for r in rows if r["target"] == target and r["concurrency"] == c)


def logging_cost(on: dict[str, Any], off: dict[str, Any]) -> float | None:
    """Throughput lost to the prediction log: the median over rounds of 1 - on/off, each round's
    pair measured back to back (seconds apart), so a slow phase of the shared machine cancels out
    instead of landing on one side (unpaired medians of 3 rounds moved by +-5% between runs)."""
    pairs = zip(on["rps_rounds"], off["rps_rounds"], strict=True)  # merge_rounds keeps them
    ratios = [1 - a / b for a, b in pairs if b]
    return round(float(np.median(ratios)), 3) if ratios else None


def checks(rows: list[dict]) -> dict[str, Any]:
    ours, off = "shelfwise (logging on)", "shelfwise (logging off)"
    ml, echo = "mlflow models serve", "bentoml trivial endpoint"
    o1, o32 = _cell(rows, ours, 1), _cell(rows, ours, 32)
    out = {
        "p50_c1_under_3ms": {
            "value": o1["p50_ms"],
            "pass": o1["p50_ms"] is not None and o1["p50_ms"] < 3,
        },
        "p99_c1_under_10ms": {
            "value": o1["p99_ms"],
            "pass": o1["p99_ms"] is not None and o1["p99_ms"] < 10,
        },
        "c32_vs_mlflow_at_least_8x": {
            "value": round(o32["rps"] / max(_cell(rows, ml, 32)["rps"], 1e-9), 2)
        },
        "c32_vs_trivial_at_least_0.8x": {
            "value": round(o32["rps"] / max(_cell(rows, echo, 32)["rps"], 1e-9), 2)
        },
        "zero_errors_on_our_service": {
            "value": sum(r["errors"] for r in rows if r["target"] in (ours, off))
        },
    }
    out["c32_vs_mlflow_at_least_8x"]["pass"] = out["c32_vs_mlflow_at_least_8x"]["value"] >= 8
    out["c32_vs_trivial_at_least_0.8x"]["pass"] = (
        out["c32_vs_trivial_at_least_0.8x"]["value"] >= 0.8
    )
    out["zero_errors_on_our_service"]["pass"] = out["zero_errors_on_our_service"]["value"] == 0
    costs = {c: logging_cost(_cell(rows, ours, c), _cell(rows, off, c)) for c in CONCURRENCY}
    out["logging_cost_under_10pct"] = {
        "value": costs,
        "pass": all(v is not None and v < 0.10 for v in costs.values()),
    }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"Run {result['started_at']} on {result['machine']['cpus']} CPUs "
        f"(load average before {result['machine']['loadavg_before']}, after "
        f"{result['machine']['loadavg_after']}; the machine is shared). Single-row delay-risk "
        f"requests, loopback, aiohttp client; model {result['model']} "
        f"({result['fast_path']}). Command: `{result['command']}`.",
        "",
        "BentoML targets ran side by side in interleaved rounds: req/s is the median round's "
        "(each round listed), p50/p99 are over every round's requests.",
        "",
        "| target | concurrency | requests | ok | errors | req/s | rounds req/s | p50 ms "
        "| p99 ms |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['requests']} | {r['ok']} | {r['errors']} "
            f"| {r['rps']} | {' / '.join(map(str, r.get('rps_rounds', [])))} "
            f"| {r['p50_ms']} | {r['p99_ms']} |"
        )
    lines += ["", "| target check | measured | pass |", "|---|---|---|"]
    for k, v in result["checks"].items():
        lines.append(f"| {k} | {v['value']} | {'yes' if v['pass'] else 'NO'} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few requests (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    counts = QUICK if args.quick else REQUESTS
    rounds = 1 if args.quick else ROUNDS
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = [round(x, 2) for x in os.getloadavg()]
    serving_cfg = load_serving_config()

    from shelfwise.registry.tracking import ensure_tracking_uri, stop_tracking_server

    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-") as tmp:
        state = Path(tmp)
        platform = PlatformConfig(
            state_dir=state,
            data_dir=DATA_DIR,
            tracking=TrackingConfig(port=free_port(), startup_timeout_s=300),
        )
        tracking_uri = ensure_tracking_uri(platform)
        try:
            name, version = train_and_register(tracking_uri)
            orders, records = order_payloads()
            order_bodies = [json.dumps(o).encode() for o in orders]
            mlflow_bodies = [json.dumps({"dataframe_records": [r]}).encode() for r in records]
            base_env = {
                "SHELFWISE_TASKS_DIR": str(bench_tasks_dir(state / "tasks", name)),
                "SHELFWISE_STORE_URL": f"sqlite:///{state / 'predictions.db'}",
                "BENTOML_HOME": str(state / "bentoml"),
                "SHELFWISE_POLL_INTERVAL_S": "10",
            }
            rows: list[dict[str, Any]] = run_bentoml_targets(
                [
                    (
                        "shelfwise (logging on)",
                        "shelfwise.serving.service:ShelfwiseService",
                        {**base_env, "SHELFWISE_PREDICTION_LOG": "true"},
                    ),
                    (
                        "shelfwise (logging off)",
                        "shelfwise.serving.service:ShelfwiseService",
                        {**base_env, "SHELFWISE_PREDICTION_LOG": "false"},
                    ),
                    ("bentoml trivial endpoint", "benchmarks.echo_service:EchoService", base_env),
                ],
                platform,
                tracking_uri,
                order_bodies,
                counts["bentoml"],
                rounds,
            )
            rows += run_mlflow_serve(
                state, tracking_uri, name, version, mlflow_bodies, counts["mlflow"]
            )
            inproc, note = run_inprocess(tracking_uri, name, version, orders, counts["bentoml"])
            rows += inproc
            from shelfwise.monitoring.store import PredictionStore

            logged = PredictionStore(base_env["SHELFWISE_STORE_URL"]).count_predictions(name)
        finally:
            stop_tracking_server(platform)
    expected_logged = (
        sum(r["ok"] for r in rows if r["target"] == "shelfwise (logging on)")
        + WARMUP * len(CONCURRENCY) * rounds
    )
    n_trees = training_config(load_task("delay_risk")).xgboost.n_estimators
    result = {
        "benchmark": "serving",
        "started_at": started,
        "command": "python -m benchmarks.bench_serving" + (" --quick" if args.quick else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "python": pyplatform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "model": f"{name} v{version} (default XGBoost pipeline, {n_trees} trees)",
        "fast_path": note,
        "serving_config": {
            "workers": serving_cfg.workers,
            "threads": serving_cfg.threads,
            "prediction_log": serving_cfg.prediction_log.model_dump(),
        },
        "predictions_logged": {"rows": logged, "successful_requests_incl_warmup": expected_logged},
        "results": rows,
    }
    result["checks"] = checks(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serving.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
