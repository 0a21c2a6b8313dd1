"""Database adapter: engines, sessions, the unit of work, and migrations.

Input: a database URL (from :class:`mailgate.settings.Settings`). Output: SQLAlchemy
engines and sessions. SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit
survives power loss (DUR-01); PostgreSQL keeps its default ``synchronous_commit=on``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the pragmas and pool settings Mailgate relies on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; take control so that
            # BEGIN IMMEDIATE can be used for writers and pragmas run outside a txn.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front: two writers never deadlock on
            # a read→write upgrade, they queue on busy_timeout instead. Sessions opened
            # with read_only() only read, so they take a plain (deferred) BEGIN and run
            # beside the writer (WAL).
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


READ_ONLY = "mailgate_read_only"


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only: never commits, and on SQLite takes no write lock."""
    session = factory()
    try:
        session.connection(execution_options={READ_ONLY: True})
        yield session
    finally:
        session.rollback()
        session.close()


def insert_ignoring_duplicates(session: Session, model: Any, values: list[dict[str, Any]]) -> int:
    """INSERT … ON CONFLICT DO NOTHING on both engines; returns rows inserted."""
    # The table, not the mapped class: an ORM-enabled INSERT returns a result without a
    # rowcount, so every caller counted 0 new rows (``ask tick`` printed "reminders: 0"
    # while reminders went out, issue 17).
    table = getattr(model, "__table__", model)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        statement: Any = postgresql.insert(table).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects import sqlite

        statement = sqlite.insert(table).on_conflict_do_nothing()
    # Count what RETURNING gives back, not rowcount: with psycopg (SQLAlchemy 2.1) the
    # rowcount of these inserts reads -1, and callers count how many rows were new.
    # Multi-row VALUES in chunks of 500 keep a statement under SQLite's 32,766 bound
    # parameters for any of our tables.
    statement = statement.returning(*table.primary_key.columns)
    inserted = 0
    for start in range(0, len(values), 500):
        inserted += len(session.execute(statement.values(values[start : start + 500])).all())
    return inserted


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("mailgate") / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` (idempotent)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()
