"""Migrations, durability pragmas and the append-only audit log on the test engine."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from mailgate.db import current_revision, head_revision, make_engine, upgrade_database
from mailgate.models import Base


def test_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    assert current_revision(engine) == head_revision(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_upgrade_is_idempotent(database_url: str) -> None:
    upgrade_database(database_url)
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"people", "addresses", "lists", "memberships", "posts", "raw_messages"} <= tables


def test_empty_sqlite_database_upgrades(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'nested' / 'fresh.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    assert current_revision(engine) == head_revision(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # 2 = FULL: a committed message survives power loss (DUR-01).
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    engine.dispose()


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"])
def test_audit_log_is_append_only(database_url: str, statement: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, target) "
                "VALUES (CURRENT_TIMESTAMP, 'cli:a', 'list.create', 'list:x')"
            )
        )
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor FROM audit_log")).scalars().all() == ["cli:a"]
    engine.dispose()


def test_threading_lookup_uses_indexes_not_a_scan_of_the_list(database_url: str) -> None:
    """The per-post "duplicate or cited?" query must stay an index lookup as a list grows.

    With ``list_id = ? AND (key = ? OR message_id IN …)`` SQLite walked every post of the
    list, so ingest slowed with each post (bench/ingest: 426 vs 336 posts/s at 1,500).
    """
    from mailgate.ingest import _CITED_OR_SAME

    engine = make_engine(database_url)
    if engine.dialect.name != "sqlite":
        engine.dispose()
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL plans by statistics")
    compiled = _CITED_OR_SAME.compile(dialect=engine.dialect)
    state = compiled.construct_expanded_state(
        {"list_id": 1, "key": "k" * 64, "wanted": ["a@x", "b@x"]}
    )
    assert state.positiontup is not None
    params = tuple(state.parameters[name] for name in state.positiontup)
    with engine.connect() as conn:
        plan = [
            row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + state.statement, params)
        ]
    engine.dispose()
    lookups = [step for step in plan if "posts" in step]
    assert len(lookups) == 2, plan
    assert all("(list_id=? AND message_" in step for step in lookups), plan
