"""Stock alerts of forecast tasks: which series will run out within the lead time, when, and by
how much; stored with a status (new, acknowledged, resolved).

For one series, from its forecast over the lead time (per-period mean and interval: the sd per
period as in models/inventory.py, periods independent):

- ``probability``: P(lead-time demand > on hand) (normal approximation, models/inventory.py);
- ``expected_stockout``: the first period whose cumulative mean demand exceeds the stock on
  hand: the median day of stockout under the normal approximation (None: not within the lead
  time);
- ``shortfall``: the expected units missing by the end of the lead time, max(0, E[demand] -
  on hand); ``shortfall_at_service_level`` the units to add to reach the reorder point;
- ``severity``: critical / warning / info by the task's declared bands of the probability.

A series alerts when its probability exceeds the task's ``inventory.alert_probability``.
Table ``stock_alerts(id, task, series, status, ...)``: one open (new or acknowledged) alert per
series; a later evaluation updates it (its status kept), a series no longer at risk has its open
alert resolved.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from shelfwise.configs.actuals import InventorySettings
from shelfwise.models.inventory import lead_time_demand, safety_stock, sd_from_interval
from shelfwise.models.inventory import stockout_probability as p_stockout
from shelfwise.monitoring.actuals import series_id
from shelfwise.monitoring.store import UTCDateTime, tables_on, utc_now

Status = Literal["new", "acknowledged", "resolved"]
OPEN: tuple[str, ...] = ("new", "acknowledged")

metadata = MetaData()
alerts_table = Table(
    "stock_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task", String(200), nullable=False),
    Column("series", String(400), nullable=False),
    Column("status", String(20), nullable=False),
    Column("probability", Float, nullable=False),
    Column("expected_stockout", Date, nullable=True),
    Column("shortfall", Float, nullable=False),
    Column("severity", String(20), nullable=False),
    Column("on_hand", Float, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("origin", Date, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_stock_alerts_task_status", "task", "status"),
)


@dataclass(frozen=True)
class StockRisk:
    series: dict[str, Any]
    on_hand: float
    probability: float
    expected_stockout: date | None
    periods_to_stockout: int | None
    shortfall: float
    shortfall_at_service_level: float
    severity: str
    alert: bool
    model_version: str
    origin: date | None


def severity(probability: float, settings: InventorySettings) -> str:
    if probability >= settings.bands.critical:
        return "critical"
    if probability >= settings.bands.warning:
        return "warning"
    return "info"


def stock_risk(
    forecast: pd.DataFrame,
    on_hand: float,
    level: float,
    settings: InventorySettings,
    series: Mapping[str, Any],
    model_version: str,
    origin: date | None = None,
) -> StockRisk:
    """``forecast``: date, yhat, yhat_lower, yhat_upper of at least ``lead_time`` periods."""
    lt = settings.lead_time
    head = forecast.head(lt)
    mean = head["yhat"].to_numpy(dtype=float)
    sd = sd_from_interval(head["yhat_lower"].to_numpy(), head["yhat_upper"].to_numpy(), level)
    mean_lt, sd_lt = lead_time_demand(mean, sd, lt)
    prob = p_stockout(on_hand, mean_lt, sd_lt)
    crossed = np.flatnonzero(np.cumsum(mean) > on_hand)
    day = pd.Timestamp(head["date"].iloc[int(crossed[0])]).date() if len(crossed) else None
    reorder_point = mean_lt + safety_stock(sd_lt, settings.service_level)
    return StockRisk(
        series=dict(series),
        on_hand=float(on_hand),
        probability=prob,
        expected_stockout=day,
        periods_to_stockout=int(crossed[0]) + 1 if len(crossed) else None,
        shortfall=max(0.0, mean_lt - on_hand),
        shortfall_at_service_level=max(0.0, reorder_point - on_hand),
        severity=severity(prob, settings),
        alert=prob > settings.alert_probability,
        model_version=model_version,
        origin=origin,
    )


class AlertStore:
    """The ``stock_alerts`` table in the store's database."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = tables_on(url_or_engine, metadata, "stock alert")

    def record(
        self, task: str, risks: Iterable[StockRisk], key_columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Open, update or resolve each evaluated series' alert; returns the open alerts of
        the evaluated series (with id, status and ``opened``: new in this evaluation)."""
        t = alerts_table
        now = utc_now()
        out = []
        with self.engine.begin() as conn:
            for risk in risks:
                sid = series_id([risk.series[k] for k in key_columns], key_columns)
                open_row = conn.execute(
                    select(t.c.id, t.c.status).where(
                        t.c.task == task, t.c.series == sid, t.c.status.in_(OPEN)
                    )
                ).first()
                values = {
                    "probability": risk.probability,
                    "expected_stockout": risk.expected_stockout,
                    "shortfall": risk.shortfall,
                    "severity": risk.severity,
                    "on_hand": risk.on_hand,
                    "model_version": risk.model_version,
                    "origin": risk.origin,
                    "updated_at": now,
                }
                if not risk.alert:
                    if open_row is not None:
                        conn.execute(
                            update(t)
                            .where(t.c.id == open_row.id)
                            .values(status="resolved", updated_at=now)
                        )
                    continue
                if open_row is None:
                    new = insert(t).values(
                        task=task, series=sid, status="new", created_at=now, **values
                    )
                    alert_id, status = conn.execute(new).inserted_primary_key[0], "new"
                else:
                    conn.execute(update(t).where(t.c.id == open_row.id).values(**values))
                    alert_id, status = open_row.id, open_row.status
                opened = open_row is None
                out.append(
                    {"id": int(alert_id), "status": status, "opened": opened, **asdict(risk)}
                )
        return out

    def set_status(self, task: str, alert_id: int, status: Status) -> bool:
        t = alerts_table
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t)
                .where(t.c.task == task, t.c.id == alert_id)
                .values(status=status, updated_at=utc_now())
            )
        return bool(done.rowcount)

    def alerts(self, task: str, status: Sequence[str] = OPEN) -> list[dict[str, Any]]:
        t = alerts_table
        query = select(t).where(t.c.task == task, t.c.status.in_(list(status))).order_by(t.c.id)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for r in rows:
            r["series"] = json.loads(r["series"])
        return rows
