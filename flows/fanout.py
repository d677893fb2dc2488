"""Fan the hybrid's per-series Prophet fits out through a Prefect task runner.

``batch_mapper(cfg)`` opens the runner chosen by ``cfg.fanout.runner`` and yields a
``shelfwise.models.forecast.BatchMapper`` that submits one ``fit-prophet-batch`` task per batch of
``cfg.batch_size`` series; results come back in completion order (each names its series) and
the models' progress callback runs once per finished batch. The runner is opened by the first
call with more than one batch (a lone batch runs as an inline task) and stays open for the
``with`` block, so a backtest's folds reuse one process pool / Dask cluster.

Runners (``fanout.runner``): ``process`` Prefect's ProcessPoolTaskRunner with ``workers``
processes; ``dask`` prefect-dask's DaskTaskRunner on a local cluster of ``workers``
single-threaded processes, or on the scheduler at ``fanout.address`` / ``SHELFWISE_DASK_ADDRESS``;
``threads`` Prefect's ThreadPoolTaskRunner (Prophet's Stan fit runs in a subprocess, so threads
overlap the fits but not the pandas work around them); ``joblib`` no Prefect tasks at all.

A task runner used as a context manager submits from anywhere in a flow run, including from
inside a running task: the batch tasks are then children of that task in the Prefect UI. On
Prefect's ephemeral API (no ``PREFECT_API_URL``) every worker process would start its own
temporary server on the same database (measured: 70 s before the first batch on 2 workers), so
the workers are pointed at the parent's ephemeral server instead. The process pool spawns its
workers, which re-import ``__main__``: a script that runs the flow must do so under
``if __name__ == "__main__":`` (the CLI and Prefect deployments do).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

from prefect import get_client, task
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from shelfwise.configs.forecast import DASK_ADDRESS_ENV, FanoutConfig, ForecastConfig
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.models.forecast import BatchMapper, joblib_mapper

logger = logging.getLogger(__name__)

BATCH_TASK = "fit-prophet-batch"
B = TypeVar("B")
R = TypeVar("R")


@task(name=BATCH_TASK, cache_policy=NONE)
def run_batch(fn: Callable[[Any], Any], batch: Any) -> Any:
    """One batch of series: ``fn`` is ``models.forecast.fit_prophet_batch`` with its settings."""
    capture_platform_logs()
    return fn(batch)


def dask_address(fanout: FanoutConfig) -> str | None:
    """The scheduler to connect to: ``SHELFWISE_DASK_ADDRESS`` over ``fanout.address``."""
    return os.environ.get(DASK_ADDRESS_ENV) or fanout.address


def make_task_runner(fanout: FanoutConfig, workers: int) -> TaskRunner:
    """A fresh (not yet entered) Prefect task runner for ``fanout.runner``."""
    if fanout.runner == "process":
        return ProcessPoolTaskRunner(max_workers=workers)
    if fanout.runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if fanout.runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError(
                "fanout.runner 'dask' needs prefect-dask: pip install 'shelfwise[dask]' "
                "(make install includes it)"
            ) from exc

        address = dask_address(fanout)
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    raise ValueError(f"fanout.runner {fanout.runner!r} has no Prefect task runner")


def task_mapper(runner: TaskRunner) -> BatchMapper:
    """A mapper submitting one ``fit-prophet-batch`` task per batch to an entered ``runner``."""

    def map_batches(fn: Callable[[B], R], batches: list[B]) -> Iterator[R]:
        futures = [runner.submit(run_batch, {"fn": fn, "batch": b}) for b in batches]
        for future in as_completed(futures):
            yield future.result()

    return map_batches


@contextmanager
def shared_api() -> Iterator[None]:
    """Within the block, processes started by a task runner use this process's Prefect API
    (on the ephemeral API they would otherwise each start a server of their own)."""
    if PREFECT_API_URL.value():
        yield
        return
    url = str(get_client(sync_client=True).api_url)
    with temporary_settings({PREFECT_API_URL: url}):
        yield


def lazy_task_mapper(open_runner: Callable[[], TaskRunner]) -> BatchMapper:
    """A mapper that fits a lone batch as an inline ``fit-prophet-batch`` task (one batch cannot
    run in parallel, so a pool would add only its start-up: ~15 s for two spawned interpreters
    importing Prefect and Prophet) and opens the runner, once, on the first call with more."""
    runner: TaskRunner | None = None

    def map_batches(fn: Callable[[B], R], batches: list[B]) -> Iterator[R]:
        nonlocal runner
        if len(batches) == 1:
            yield run_batch(fn, batches[0])
            return
        if runner is None:
            runner = open_runner()
        yield from task_mapper(runner)(fn, batches)

    return map_batches


@contextmanager
def batch_mapper(cfg: ForecastConfig) -> Iterator[BatchMapper]:
    """The mapper for ``cfg.fanout`` (see the module docstring); a runner it opens stays open
    until the block ends."""
    if cfg.fanout.runner == "joblib":
        yield joblib_mapper(cfg.workers)
        return
    with ExitStack() as stack:

        def open_runner() -> TaskRunner:
            logger.info(
                "Prophet fan-out: %s task runner, %s workers, %s series per task",
                cfg.fanout.runner,
                cfg.workers,
                cfg.batch_size,
            )
            stack.enter_context(shared_api())
            return stack.enter_context(make_task_runner(cfg.fanout, cfg.workers))

        yield lazy_task_mapper(open_runner)
