"""Alembic's entry point. The service runs it in-process on the connection ``upgrade()`` passes (one
transaction, under its lock); the ``alembic`` command (docs/migrations.md) runs it on the database the
deskpilot settings name (DESKPILOT_DATABASE_URL, else the SQLite file in DESKPILOT_DATA_DIR)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from web.tables import Base


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_on_settings_database() -> None:
    from deskpilot.settings import Settings
    from web.store import database_url

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(database_url(settings.data_dir, settings.database_url))
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_on)
            await conn.commit()
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_on(connection)
elif context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: run the service, or `alembic upgrade` online")
else:
    asyncio.run(run_on_settings_database())
