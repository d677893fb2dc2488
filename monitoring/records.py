"""Monitoring results as a time series in the platform's SQL store (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shelfwise.monitoring.policy import LastRetrain, RetrainDecision


class Base(DeclarativeBase):
    pass


class MonitoringRecord(Base):
    __tablename__ = "monitoring_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[str] = mapped_column(String(50))
    window_rows: Mapped[int] = mapped_column(Integer)
    labelled_rows: Mapped[int] = mapped_column(Integer)
    drift_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    prediction_drift_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    retrain: Mapped[bool] = mapped_column(Boolean)
    trigger: Mapped[str | None] = mapped_column(String(50), nullable=True)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


def decision_columns(decision: RetrainDecision, emitted: bool) -> dict[str, Any]:
    """The record's decision columns. A retrain counts (cooldown, one per incident) only when it
    was asked for: a dry run (emit=false) that breaks a rule must not suppress the real incident
    that follows."""
    not_emitted = ["not emitted (emit=false)"] if decision.retrain and not emitted else []
    return {
        "retrain": decision.retrain and emitted,
        "trigger": decision.trigger,
        "reasons": [*decision.reasons, *decision.suppressed, *not_emitted],
    }


def ensure_tables(engine: Engine) -> Engine:
    """Create the monitoring tables beside the prediction log (same database, same engine)."""
    Base.metadata.create_all(engine)
    return engine


def record(engine: Engine, row: MonitoringRecord) -> int:
    with Session(engine) as s, s.begin():
        s.add(row)
        s.flush()
        return int(row.id)


def last_retrain(engine: Engine, model_name: str) -> LastRetrain | None:
    with Session(engine) as s:
        row = s.scalars(
            select(MonitoringRecord)
            .where(MonitoringRecord.model_name == model_name, MonitoringRecord.retrain.is_(True))
            .order_by(MonitoringRecord.created_at.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return LastRetrain(at=at, model_version=row.model_version, trigger=row.trigger or "")


def history(engine: Engine, model_name: str) -> pd.DataFrame:
    with Session(engine) as s:
        rows = s.scalars(
            select(MonitoringRecord)
            .where(MonitoringRecord.model_name == model_name)
            .order_by(MonitoringRecord.created_at)
        ).all()
    return pd.DataFrame(
        [
            {
                "created_at": r.created_at,
                "model_version": r.model_version,
                "window_rows": r.window_rows,
                "labelled_rows": r.labelled_rows,
                "drift_share": r.drift_share,
                "prediction_drift_score": r.prediction_drift_score,
                "retrain": r.retrain,
                "trigger": r.trigger,
                "reasons": "; ".join(r.reasons),
                **{f"metric.{k}": v for k, v in (r.metrics or {}).items()},
            }
            for r in rows
        ]
    )
