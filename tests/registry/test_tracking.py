"""A new SQLite backend store gets MLflow's schema before its server starts (fast and atomic)."""

from __future__ import annotations

import sqlite3

import pytest

from shelfwise.registry import tracking


def _revision(path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_new_sqlite_store_is_created_at_mlflow_schema_head(tmp_path) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = tmp_path / "state" / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert tracking.prepare_sqlite_backend(uri) is True
    assert _revision(db) == _get_latest_schema_revision()
    assert not list(db.parent.glob(".mlflow.db.init-*"))  # the temporary file was renamed
    store = SqlAlchemyStore(uri, str(tmp_path / "artifacts"))  # opens without migrating
    assert store.get_experiment_by_name("Default") is not None
    assert tracking.prepare_sqlite_backend(uri) is False  # an existing store is left alone


def test_a_failed_init_leaves_no_database(tmp_path, monkeypatch) -> None:
    import mlflow.store.db.utils as db_utils

    def boom(engine):
        raise RuntimeError("disk full")

    monkeypatch.setattr(db_utils, "_initialize_tables", boom)
    db = tmp_path / "mlflow.db"
    with pytest.raises(RuntimeError, match="disk full"):
        tracking.prepare_sqlite_backend(f"sqlite:///{db}")
    assert list(tmp_path.iterdir()) == []  # neither the database nor its temporary file


@pytest.mark.parametrize(
    "uri", ["postgresql://postgres@127.0.0.1/x", "sqlite:///:memory:", "sqlite://", "file:///x"]
)
def test_other_backends_are_left_to_the_server(uri) -> None:
    assert tracking.prepare_sqlite_backend(uri) is False
