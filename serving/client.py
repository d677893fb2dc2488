"""A small HTTP client for the Shelfwise service, as a user's application would call it: a
declared task's batch predictions and forecasts, feedback, the served versions. Used by the
demo's traffic replay and the loop benchmark; errors carry the service's own message."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from shelfwise.configs.tasks import TaskDeclaration

FEEDBACK_ROUTE = "/v1/feedback"
VERSIONS_ROUTE = "/v1/versions"


class ServiceError(RuntimeError):
    """The service answered with an error (status and message kept)."""


_APIS: dict[str, Any] = {}


def _task_api(task: TaskDeclaration) -> Any:
    """The task's generated request model (built once per declaration)."""
    from shelfwise.serving.task_api import tabular_api

    key = f"{task.name}:{task.source}"  # per declaration file; not re-serialised per row
    if key not in _APIS:
        _APIS[key] = tabular_api(task)
    return _APIS[key]


def row_payload(task: TaskDeclaration, row: dict[str, Any], row_id: str | None) -> dict[str, Any]:
    """A dataset row (spec column names) as ``task``'s request JSON (its field names, types)."""
    return _task_api(task).payload(row, row_id)


def route(task: TaskDeclaration, kind: str) -> str:
    """The task's own route for ``kind`` (``predict``, ``batch`` or ``forecast``)."""
    from shelfwise.serving.task_api import task_routes

    return task_routes(task)[kind][0]


@dataclass
class ServiceClient:
    base_url: str
    api_key: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url.rstrip("/"), headers=headers, timeout=self.timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, route: str, body: dict[str, Any]) -> Any:
        r = self._http.post(route, json=body)
        if r.status_code >= 400:
            raise ServiceError(f"POST {route} -> {r.status_code}: {r.text[:300]}")
        return r.json()

    def predict_batch(
        self, task: TaskDeclaration, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``rows`` (request JSON, see ``row_payload``) through the task's batch route."""
        return self._post(route(task, "batch"), {task.serving.batch_field: rows})

    def feedback(self, prediction_id: str, actual: float) -> dict[str, Any]:
        return self._post(FEEDBACK_ROUTE, {"prediction_id": prediction_id, "actual": actual})

    def forecast(self, task: TaskDeclaration, request: dict[str, Any]) -> dict[str, Any]:
        """``{"series": {...}, "horizon": n, "on_hand"?, "lead_time"?, "service_level"?}``"""
        return self._post(route(task, "forecast"), request)

    def versions(self) -> dict[str, Any]:
        return self._post(VERSIONS_ROUTE, {})

    def served(self, task: str) -> dict[str, Any]:
        """The versions endpoint's entry for ``task`` (version, serving_since, last_error...)."""
        for m in self.versions()["models"]:
            if m["task"] == task:
                return m
        raise ServiceError(f"{self.base_url} serves no {task!r} model")

    def wait_for_version(
        self, task: str, version: str, timeout_s: float, poll_s: float = 0.5
    ) -> float:
        """Seconds until the service reports ``version`` for ``task``; ServiceError on timeout
        (with the last load error the service reported, if any)."""
        t0 = time.monotonic()
        last: dict[str, Any] = {}
        while time.monotonic() - t0 < timeout_s:
            try:
                for m in self.versions()["models"]:
                    if m["task"] == task:
                        last = m
                        if m["version"] == str(version):
                            return time.monotonic() - t0
            except (httpx.HTTPError, ServiceError):
                pass  # starting up or swapping workers: ask again
            time.sleep(poll_s)
        raise ServiceError(
            f"{self.base_url} did not serve {task} version {version} within {timeout_s:.0f} s "
            f"(serving {last.get('version')!r}, alias points to {last.get('alias_points_to')!r}, "
            f"last error: {last.get('last_error')!r})"
        )
