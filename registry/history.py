"""Promotion history: every gate decision, manual promotion and rollback, in the platform's SQL
store (SQLite by default, PostgreSQL by URL), because MLflow keeps no alias history.

The store also provides the per-model lock that serialises decide-and-move (see
``HistoryStore.model_lock``): on PostgreSQL a transaction-scoped advisory lock, on SQLite a
``BEGIN IMMEDIATE`` transaction (SQLite's database-wide write lock), elsewhere ``SELECT ... FOR
UPDATE`` on a per-model lock row. The history row of a decision is written in the same
transaction, so a decision is recorded if and only if the transaction that moved the aliases
committed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger(__name__)

Decision = Literal["promoted", "refused", "rolled_back", "aborted"]
Action = Literal["gate", "manual", "rollback", "online", "alarm"]
TRIGGERS = ("manual", "schedule", "feedback", "drift", "alarm")

metadata = MetaData()

promotion_history = Table(
    "promotion_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("model_name", String(255), nullable=False, index=True),
    Column("action", String(16), nullable=False),  # gate | manual | rollback | online | alarm
    Column("decision", String(16), nullable=False),  # promoted | refused | rolled_back | aborted
    Column("promoted", Boolean, nullable=False),  # did @champion move?
    Column("from_version", String(32)),  # @champion before
    Column("to_version", String(32), nullable=False),  # the candidate / rollback target
    Column("champion_after", String(32)),  # @champion after
    Column("primary_metric", String(64)),
    Column("interval_low", Float),
    Column("interval_high", Float),
    Column("metrics", JSON),  # {"challenger": {...}, "champion": {...}, "checks": [...]}
    Column("eval_fingerprint", String(64)),
    Column("reason", Text, nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("actor", String(255), nullable=False),
)

# used only by dialects other than PostgreSQL and SQLite (SELECT ... FOR UPDATE on this row)
registry_locks = Table(
    "registry_locks", metadata, Column("model_name", String(255), primary_key=True)
)


@dataclass(frozen=True)
class HistoryEntry:
    model_name: str
    action: Action
    decision: Decision
    promoted: bool
    to_version: str
    from_version: str | None
    champion_after: str | None
    reason: str
    trigger: str
    actor: str
    primary_metric: str | None = None
    interval_low: float | None = None
    interval_high: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    eval_fingerprint: str | None = None
    created_at: datetime | None = None
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        return d


def lock_key(model_name: str) -> int:
    """Stable signed 64-bit key for ``pg_advisory_xact_lock`` (hash of the model name)."""
    digest = hashlib.sha256(f"shelfwise.registry:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _sqlite_begin_immediate(engine: Engine) -> None:
    """pysqlite defers BEGIN until the first write; take the write lock when the transaction
    starts instead, so decide-and-move sections never interleave (SQLAlchemy's documented
    recipe for controlling SQLite transactions)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # pragma: no cover - driver hook
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # pragma: no cover - driver hook
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})
        _sqlite_begin_immediate(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


class HistoryStore:
    """Promotion history table plus the per-model lock, on one SQLAlchemy engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_url(cls, url: str, create: bool = True) -> HistoryStore:
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        store = cls(make_engine(url))
        if create:
            store.create_schema()
        return store

    def create_schema(self) -> None:
        """Create the tables if missing (tolerates another process creating them meanwhile)."""
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except SQLAlchemyError:
            if not inspect(self.engine).has_table(promotion_history.name):
                raise

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def model_lock(self, model_name: str) -> Iterator[Connection]:
        """A transaction holding the model's promotion lock until it commits or rolls back."""
        with self.engine.begin() as conn:
            dialect = conn.dialect.name
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(model_name)})
            elif dialect != "sqlite":  # SQLite: BEGIN IMMEDIATE already holds the write lock
                exists = conn.execute(
                    select(registry_locks.c.model_name).where(
                        registry_locks.c.model_name == model_name
                    )
                ).first()
                if exists is None:
                    conn.execute(insert(registry_locks).values(model_name=model_name))
                conn.execute(
                    select(registry_locks.c.model_name)
                    .where(registry_locks.c.model_name == model_name)
                    .with_for_update()
                )
            yield conn

    def record(self, conn: Connection, entry: HistoryEntry) -> int:
        """Insert ``entry`` inside the caller's (locked) transaction; returns the row id."""
        values = asdict(entry)
        values.pop("id")
        values["created_at"] = entry.created_at or datetime.now(UTC)
        values["metrics"] = _jsonable(entry.metrics)
        result = conn.execute(insert(promotion_history).values(**values))
        return int(result.inserted_primary_key[0])

    def entries(self, model_name: str, limit: int | None = None) -> list[HistoryEntry]:
        """The model's history, oldest first."""
        q = (
            select(promotion_history)
            .where(promotion_history.c.model_name == model_name)
            .order_by(promotion_history.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = [HistoryEntry(**dict(r)) for r in rows]
        return out[-limit:] if limit else out


def _jsonable(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _jsonable(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_jsonable(v) for v in node]
    if hasattr(node, "item"):  # numpy scalars
        return node.item()
    return node
