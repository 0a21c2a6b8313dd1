"""Alembic environment: runs migrations on the engine Mailgate itself would build.

The URL comes from the Alembic config (set by ``mailgate.db.alembic_config``), so the
migration path never reads the environment on its own.
"""

from __future__ import annotations

from alembic import context

from mailgate.db import make_engine
from mailgate.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by mailgate.db.alembic_config"
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run: mailgate db upgrade")
run_migrations_online()
