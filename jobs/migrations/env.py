"""Alembic's entry: run the job store's migrations on the connection ``jobs/schema.py`` hands over
(under its lock), or on the configured database when the ``alembic`` command runs this directly."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from jobs.schema import VERSION_TABLE, include_name
from jobs.tables import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,  # Optuna keeps its own `alembic_version` in the same PostgreSQL database
        include_name=include_name,  # ... and its own tables, which are not ours to migrate
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from core.settings import get_settings

        url = get_settings().resolved_database_url
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the job store's migrations run online only: tuneserve db upgrade")
main()
