"""The tenant auth middleware's cost per request (serving/auth.py), in process: the middleware
in front of a no-op ASGI app, one request after another on one event loop, per case:

- ``passthrough``: a route without a policy (docs, health): the dict lookup only;
- ``anonymous``: a default-tenant prediction route without a key;
- ``shared_key``: the SHELFWISE_API_KEY (one timing-safe comparison);
- ``store_key_cached``: a tenant key whose row is cached (key_cache_ttl_s 2: parse, sha256,
  compare, scope, owner, token bucket);
- ``store_key_uncached``: ttl 0, every request reads the row from SQLite in a worker thread;
- ``bad_key``: a malformed key (401).

Writes benchmarks/results/auth.json and auth.md.

    python -m benchmarks.bench_auth [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from shelfwise.serving.auth import RateLimiter, TenantAuthMiddleware, route_policies
from shelfwise.serving.keys import KeyAuthenticator, KeyStore

RESULTS = Path(__file__).resolve().parent / "results"
ROUTE = "/v1/delay-risk/predict"


async def _noop_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _middleware(store: KeyStore, ttl_s: float) -> TenantAuthMiddleware:
    policies = route_policies({ROUTE: "delay_risk"}, {"delay_risk": "default"}, {}, [])
    return TenantAuthMiddleware(
        _noop_app,
        policies,
        authenticator_factory=lambda: KeyAuthenticator(store, "shared-key", ttl_s),
        limiter_factory=lambda: RateLimiter(0, 1),  # the bucket is measured, never refusing
    )


async def _run(mw: TenantAuthMiddleware, path: str, key: str | None, n: int) -> list[float]:
    headers = [(b"x-api-key", key.encode())] if key is not None else []
    statuses: list[int] = []

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    rounds = []
    per_round = max(1, n // 5)
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_round):
            scope = {"type": "http", "path": path, "headers": headers}
            await mw(scope, receive, send)
        rounds.append((time.perf_counter() - start) / per_round * 1e6)
    return rounds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = KeyStore(f"sqlite:///{Path(tmp) / 'keys.db'}")
        _, raw = store.create("default", ["predict"], "bench")
        cases = {
            "passthrough": ("/docs.json", None, 2.0, args.requests),
            "anonymous": (ROUTE, None, 2.0, args.requests),
            "shared_key": (ROUTE, "shared-key", 2.0, args.requests),
            "store_key_cached": (ROUTE, raw, 2.0, args.requests),
            "store_key_uncached": (ROUTE, raw, 0.0, max(500, args.requests // 20)),
            "bad_key": (ROUTE, "not-a-key", 2.0, args.requests),
        }
        results = {}
        for name, (path, key, ttl, n) in cases.items():
            mw = _middleware(store, ttl)
            rounds = asyncio.run(_run(mw, path, key, n))
            results[name] = {
                "requests": n,
                "us_per_request_median": round(statistics.median(rounds), 2),
                "us_per_request_min": round(min(rounds), 2),
            }
        store.dispose()
    out = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cases": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "auth.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Tenant auth middleware, cost per request (in process, no-op app)",
        "",
        "| case | requests | us/request (median of 5 rounds) | min |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        median, low = r["us_per_request_median"], r["us_per_request_min"]
        lines.append(f"| {name} | {r['requests']} | {median} | {low} |")
    (RESULTS / "auth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201 - a benchmark's report
    return out


if __name__ == "__main__":
    main()
