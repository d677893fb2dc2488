"""Serving configuration: alias polling, batching, auth and prediction logging.

Which models are served is not configured here: the service serves every declared task
(configs/tasks/<name>.yaml, ``serving.enabled``) at its ``serving.alias``; ``SHELFWISE_TASKS_DIR``
points it at another folder of declarations."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path

ENV_OVERRIDES: dict[str, str] = {
    "poll_interval_s": "SHELFWISE_POLL_INTERVAL_S",
    "auth.protect_predictions": "SHELFWISE_PROTECT_PREDICTIONS",
    "auth.key_cache_ttl_s": "SHELFWISE_KEY_CACHE_TTL_S",
    "auth.rate_limit.requests_per_s": "SHELFWISE_RATE_LIMIT_RPS",
    "auth.rate_limit.burst": "SHELFWISE_RATE_LIMIT_BURST",
    "prediction_log.enabled": "SHELFWISE_PREDICTION_LOG",
    "prediction_log.writer": "SHELFWISE_PREDICTION_LOG_WRITER",
    "workers": "SHELFWISE_SERVING_WORKERS",
    "push.enabled": "SHELFWISE_PUSH_SWAPS",
}

# BentoML's dispatcher answers 503 "process is overloaded" when max_latency_ms is close to the
# cost of one batch (measured: 20 ms rejected 97-99% of requests at concurrency 8-32).
MIN_BATCH_LATENCY_MS = 200


class BatchingConfig(StrictModel):
    max_batch_size: int = Field(256, ge=1, le=10_000)
    max_latency_ms: int = Field(500, ge=MIN_BATCH_LATENCY_MS, le=60_000)


class RateLimitConfig(StrictModel):
    """Per API key, per worker process: a token bucket of ``burst`` requests refilled at
    ``requests_per_s`` (0: no limit). Over it a key gets 429 with Retry-After."""

    requests_per_s: float = Field(1000.0, ge=0)
    burst: int = Field(2000, ge=1)


class AuthConfig(StrictModel):
    api_key_env: str = "SHELFWISE_API_KEY"
    protect_predictions: bool = False
    # how long a worker trusts a key row it read (a revoked key stops working within this)
    key_cache_ttl_s: float = Field(2.0, ge=0, le=3600)
    rate_limit: RateLimitConfig = RateLimitConfig()


class PredictionLogConfig(StrictModel):
    enabled: bool = True
    # process: the inserts run in a child process (monitoring/log_writer.py), off the serving
    # process's GIL; thread: in a thread of the serving process
    writer: Literal["process", "thread"] = "process"
    flush_interval_ms: int = Field(200, ge=1, le=60_000)
    max_batch_rows: int = Field(500, ge=1, le=100_000)
    max_queue_rows: int = Field(200_000, ge=1)


class PushConfig(StrictModel):
    """Swaps pushed by the registry (serving/push.py): the stack registers an MLflow webhook for
    alias events at ``route``; the service verifies its HMAC signature with the secret in
    ``secret_env`` and checks the alias at once. Polling (``poll_interval_s``) stays the
    fallback."""

    enabled: bool = True
    route: str = Field("/v1/registry/events", pattern=r"^/[A-Za-z0-9_\-/]+$")
    secret_env: str = "SHELFWISE_WEBHOOK_SECRET"
    max_age_s: float = Field(300.0, gt=0, le=3600, description="replay window of a delivery")
    signal_tick_s: float = Field(
        0.2, gt=0, le=10, description="how often the other workers look at the wake signal"
    )

    def secret(self, environ: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if environ is None else environ
        return (env.get(self.secret_env) or None) if self.enabled else None


class ServingSettings(StrictModel):
    poll_interval_s: float = Field(10.0, gt=0, le=3600)
    push: PushConfig = PushConfig()
    batching: BatchingConfig = BatchingConfig()
    auth: AuthConfig = AuthConfig()
    prediction_log: PredictionLogConfig = PredictionLogConfig()
    workers: int = Field(1, ge=1, le=64)
    threads: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(30.0, gt=0)

    def api_key(
        self, fallback: str | None = None, environ: Mapping[str, str] | None = None
    ) -> str | None:
        """The API key from ``auth.api_key_env``, else ``fallback`` (platform serving.api_key)."""
        env = os.environ if environ is None else environ
        return env.get(self.auth.api_key_env) or fallback or None


def load_serving_config(
    path: str | Path = "serving", environ: Mapping[str, str] | None = None
) -> ServingSettings:
    return load_config(resolve_config_path(path), ServingSettings, ENV_OVERRIDES, environ)
