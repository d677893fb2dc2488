"""Swap latency, pushed vs polled: how long from ``@champion`` moving to the first answer from the
new version, under load, with MLflow's alias webhook (serving/push.py) and with the poll alone.

Everything on loopback in one go: a private MLflow server (webhooks allowed to loopback), two
delay-risk versions of the shipped pipeline, one `bentoml serve` of the Shelfwise service with its
shipped poll interval (10 s) and a webhook secret. Under ``concurrency`` client threads the alias
is moved ``swaps`` times (a) with the webhook ACTIVE, (b) with it DISABLED (the anchor: the same
service on its poll alone), and (c) with `shelfwise promote` as a user runs it (CLI start -> first
new answer, and the CLI's own wall time). Every response is counted: any non-200 is an error, and
a response from the old version to a request sent after the new one answered is "stale".

    python -m benchmarks.bench_push [--swaps N] [--concurrency C]

Results: benchmarks/results/push.json and push.md. The reliability test
(tests/serving/test_push_integration.py) runs the same scenario (``swap_under_load``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform as pyplatform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger("bench_push")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Answer:
    sent: float
    received: float
    status: int
    version: str | None
    entity: str = ""  # the request's id (canary routing is sticky by it)


@dataclass
class SwapLoad:
    """``concurrency`` threads posting one row each, back to back; every answer is recorded."""

    url: str
    route: str
    body: dict[str, Any]
    concurrency: int
    id_field: str = "order_id"  # the task's serving.id_field
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True)
            for i in range(self.concurrency)
        ]

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                sent = time.monotonic()
                entity = f"w{worker}-{i % 500}"  # repeats: a sticky route answers alike
                try:
                    r = client.post(self.route, json={**self.body, self.id_field: entity})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                version = r.json().get("model_version") if r.status_code == 200 else None
                answer = Answer(sent, time.monotonic(), r.status_code, version, entity)
                with self._lock:
                    self.answers.append(answer)
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code}: {r.text[:200]}")

    def first_from(self, version: str, since: float) -> Answer | None:
        with self._lock:
            hits = [a for a in self.answers if a.sent >= since and a.version == version]
        return min(hits, key=lambda a: a.received) if hits else None

    def between(self, start: float, end: float) -> list[Answer]:
        """The answers to requests sent at or after ``start`` and received by ``end``."""
        with self._lock:
            return [a for a in self.answers if start <= a.sent and a.received <= end]

    def __enter__(self) -> SwapLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def swap_under_load(
    load: SwapLoad,
    move: Callable[[str], None],
    versions: list[str],
    swaps: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Move the alias ``swaps`` times (alternating ``versions``) with ``move(version)`` while
    ``load`` runs; per swap the lag from the move to the first answer from the new version."""
    lags: list[float] = []
    windows: list[tuple[float, float, str]] = []  # (first new answer, next move, version)
    time.sleep(0.5)
    for i in range(swaps):
        target = versions[(i + 1) % len(versions)]
        t0 = time.monotonic()
        move(target)
        deadline = t0 + timeout_s
        first = None
        while first is None and time.monotonic() < deadline:
            time.sleep(0.02)
            first = load.first_from(target, t0)
        if first is None:
            raise AssertionError(f"swap {i + 1}: version {target} not answering after {timeout_s}s")
        lags.append(first.received - t0)
        time.sleep(0.3)  # some answers from the new version before the next move
        windows.append((first.received, time.monotonic(), target))
    time.sleep(0.3)
    answers = list(load.answers)
    stale = sum(
        1
        for start, end, version in windows
        for a in answers
        if start < a.sent and a.received < end and a.status == 200 and a.version != version
    )
    return {
        "swaps": swaps,
        "lags_s": [round(x, 3) for x in lags],
        "lag_p50_s": round(statistics.median(lags), 3),
        "lag_max_s": round(max(lags), 3),
        "answers": len(answers),
        "statuses": dict(Counter(a.status for a in answers)),
        "transport_errors": len([e for e in load.errors if not e[:3].isdigit()]),
        "stale_answers": stale,
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Swap latency: pushed by the registry vs polled",
        "",
        f"{result['started']} · {result['machine']} · concurrency {result['concurrency']} · "
        f"{result['swaps']} swaps per mode · poll interval {result['poll_interval_s']:g} s",
        "",
        "| mode | lag p50 (s) | lag max (s) | answers | non-200 | stale |",
        "|---|---|---|---|---|---|",
    ]
    for mode, r in result["modes"].items():
        non200 = sum(n for s, n in r["statuses"].items() if str(s) != "200")
        lines.append(
            f"| {mode} | {r['lag_p50_s']} | {r['lag_max_s']} | {r['answers']} | "
            f"{non200 + r['transport_errors']} | {r['stale_answers']} |"
        )
    cli = result.get("promote_cli_s")
    if cli:
        lines += [
            "",
            f"`shelfwise promote` wall time: p50 {statistics.median(cli):.2f} s "
            f"(max {max(cli):.2f} s); CLI start -> first new answer is the `promote CLI` row.",
        ]
    lines += [
        "",
        "Lag: from the alias move (or the CLI's start) to the first 200 answer from the new "
        "version. Stale: an old-version answer to a request sent after the new version answered.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import mlflow

    from benchmarks.bench_serving import bench_tasks_dir, order_payloads, train_and_register
    from shelfwise.configs.platform import PlatformConfig, TrackingConfig
    from shelfwise.registry.server import free_port
    from shelfwise.registry.tracking import ensure_tracking_uri, stop_tracking_server
    from shelfwise.registry.webhooks import ensure_alias_webhook
    from shelfwise.serving.run import start_serving, stop_serving

    started = datetime.now(UTC).isoformat(timespec="seconds")
    poll_s = 10.0
    secret = "bench-push-secret"
    result: dict[str, Any] = {
        "started": started,
        "machine": f"{pyplatform.machine()} {os.cpu_count()} cpu",
        "concurrency": args.concurrency,
        "swaps": args.swaps,
        "poll_interval_s": poll_s,
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-push-") as tmp:
        state = Path(tmp)
        platform = PlatformConfig(
            state_dir=state, tracking=TrackingConfig(port=free_port(), startup_timeout_s=300)
        )
        tracking_uri = ensure_tracking_uri(platform)
        server = None
        try:
            name, v1 = train_and_register(tracking_uri)
            _, v2 = train_and_register(tracking_uri)
            client = mlflow.MlflowClient(tracking_uri)
            client.set_registered_model_alias(name, "champion", v1)
            env = {
                "SHELFWISE_TASKS_DIR": str(bench_tasks_dir(state / "tasks", name)),
                "SHELFWISE_STORE_URL": f"sqlite:///{state / 'predictions.db'}",
                "SHELFWISE_HOME": str(state),
                "BENTOML_HOME": str(state / "bentoml"),
                "SHELFWISE_POLL_INTERVAL_S": f"{poll_s:g}",
                "SHELFWISE_WEBHOOK_SECRET": secret,
            }
            server, _ = start_serving(platform, tracking_uri, port=free_port(), env=env)
            hook = ensure_alias_webhook(client, f"{server.url}/v1/registry/events", secret)
            orders, _ = order_payloads(1)

            def move(version: str) -> None:
                client.set_registered_model_alias(name, "champion", version)

            for mode, status in (("pushed (webhook)", "ACTIVE"), ("polled (anchor)", "DISABLED")):
                client.update_webhook(hook.webhook_id, status=status)
                time.sleep(3)  # the tracking server caches its webhook list for 2 s
                logger.info("%s: %d swaps at concurrency %d", mode, args.swaps, args.concurrency)
                with SwapLoad(server.url, "/v1/delay-risk", orders[0], args.concurrency) as load:
                    result["modes"][mode] = swap_under_load(
                        load, move, [v1, v2], args.swaps, timeout_s=poll_s * 3 + 30
                    )

            client.update_webhook(hook.webhook_id, status="ACTIVE")
            time.sleep(3)
            cli_env = {
                **os.environ,
                "SHELFWISE_TRACKING_URI": tracking_uri,
                "SHELFWISE_STORE_URL": env["SHELFWISE_STORE_URL"],
                "SHELFWISE_HOME": str(state),
                "SHELFWISE_TASKS_DIR": env["SHELFWISE_TASKS_DIR"],
            }
            cli_times: list[float] = []

            def promote(version: str) -> None:
                t0 = time.monotonic()
                subprocess.run(
                    [str(Path(sys.executable).parent / "shelfwise"), "promote", name]
                    + ["--version", version, "--reason", "bench_push"],
                    env=cli_env,
                    check=True,
                    capture_output=True,
                )
                cli_times.append(time.monotonic() - t0)

            with SwapLoad(server.url, "/v1/delay-risk", orders[0], args.concurrency) as load:
                result["modes"]["promote CLI (webhook)"] = swap_under_load(
                    load, promote, [v1, v2], max(3, args.swaps // 2), timeout_s=poll_s * 3 + 60
                )
            result["promote_cli_s"] = [round(x, 2) for x in cli_times]
        finally:
            if server is not None:
                stop_serving(server)
            stop_tracking_server(platform)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "push.json").write_text(json.dumps(result, indent=2))
    (args.out / "push.md").write_text(_markdown(result))
    logger.info("\n%s", _markdown(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
