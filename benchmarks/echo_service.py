"""A trivial endpoint in the same BentoML configuration as the Shelfwise service: it parses the
same order schema and answers a constant, so its numbers are the framework's own ceiling."""

from __future__ import annotations

import uuid

import bentoml

from shelfwise.serving.schemas import DelayOrder, DelayRiskResponse
from shelfwise.serving.service import service_options, serving_config


@bentoml.service(name="shelfwise-echo", **service_options(serving_config()))
class EchoService:
    @bentoml.api(route="/v1/delay-risk")
    async def delay_risk(self, order: DelayOrder, /) -> DelayRiskResponse:
        return DelayRiskResponse(
            prediction_id=uuid.uuid4().hex,
            order_id=order.order_id,
            delay_probability=0.5,
            severity="warning",
            model_version="echo",
        )
