"""A trivial endpoint in the same BentoML configuration as the Shelfwise service: it parses the
same (generated) request model as the served task's one-row route and answers a constant, so its
numbers are the framework's own ceiling."""

from __future__ import annotations

import os
import uuid
from typing import Any

import bentoml

from shelfwise.configs.tasks import load_task
from shelfwise.serving.client import _task_api
from shelfwise.serving.service import service_options, serving_config

# the benchmarked task (bench_serving: the shipped delay_risk); `bentoml serve` imports this module
API = _task_api(load_task(os.environ.get("SHELFWISE_ECHO_TASK", "delay_risk")))
ROUTE = API.task.serving.legacy_routes.predict or f"/v1/{API.task.url_path}/predict"


class EchoService:
    pass


async def predict(self: Any, request: Any, /) -> Any:
    return API.response(
        prediction_id=uuid.uuid4().hex,
        task=API.task.name,
        row_id=API.request_id(request),
        prediction=0.5,
        severity="warning",
        model_version="echo",
    )


predict.__annotations__ = {"request": API.request, "return": API.response}
EchoService.predict = bentoml.api(route=ROUTE)(predict)  # type: ignore[attr-defined]
EchoService = bentoml.service(name="shelfwise-echo", **service_options(serving_config()))(  # type: ignore[misc]
    EchoService
)
