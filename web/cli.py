"""``deskpilot serve`` and ``deskpilot token …``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from deskpilot.cli import cli_settings
from deskpilot.errors import DeskpilotError
from deskpilot.settings import Settings

T = TypeVar("T")


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; a deskpilot error (e.g. a database newer than this release) is a message, not a traceback."""
    try:
        return asyncio.run(work)
    except DeskpilotError as exc:
        raise click.ClickException(exc.message) from None


async def _prepare_database(settings: Settings) -> None:
    from web.store import Store

    store = Store(settings.data_dir, settings.database_url)
    try:
        await store.init()
    finally:
        await store.close()


@click.command("serve")
@click.option("--host", default=None, help="Address to bind (default: DESKPILOT_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default: DESKPILOT_PORT or 8000).")
def serve_command(host: str | None, port: int | None) -> None:
    """Run the web service: REST API, browser UI at /, live stream, approvals and takeover.

    Embedded defaults: SQLite and screenshots in DESKPILOT_DATA_DIR, desktops as local processes.
    On the first start an API token is created and printed once.
    """
    import uvicorn

    from web.app import create_app
    from web.runner import model_unavailable

    settings = cli_settings()
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = settings.model_copy(update=overrides)
    reason = model_unavailable(settings)
    if reason:
        click.echo(f"deskpilot: the service starts, but {reason}", err=True)
    _run(_prepare_database(settings))  # migrate, or refuse, before the server starts
    app = create_app(settings)
    click.echo(f"deskpilot: serving on http://{settings.host}:{settings.port}/ (data in {settings.data_dir})", err=True)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_config=None, ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=False, timeout_graceful_shutdown=5,
    )


@click.group("token")
def token_group() -> None:
    """Create, list and revoke API tokens (stored hashed; a secret is shown once)."""


async def _with_store(settings: Settings, fn: str, *args: str) -> object:
    from web import auth
    from web.store import Store

    store = Store(settings.data_dir, settings.database_url)
    try:
        await store.init()
        if fn == "create":
            return await auth.create_token(store, args[0])
        if fn == "list":
            return await store.list_tokens()
        return await store.revoke_token(args[0])
    finally:
        await store.close()


@token_group.command("create")
@click.argument("name")
def token_create(name: str) -> None:
    """Create a token for NAME (the owner of the sessions it starts) and print it once."""
    if not name.strip() or len(name) > 200:
        raise click.ClickException("NAME must be 1-200 characters")
    token = _run(_with_store(cli_settings(), "create", name.strip()))
    click.echo(str(token))
    click.echo("Keep it now: it is stored hashed and cannot be shown again.", err=True)


@token_group.command("list")
def token_list() -> None:
    """List tokens (names and ids, never the secrets)."""
    rows = _run(_with_store(cli_settings(), "list"))
    for row in rows:  # type: ignore[attr-defined]
        state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
        click.echo(f"{row.id}  {row.name}  created {row.created_at:%Y-%m-%d %H:%M}  {state}")


@token_group.command("revoke")
@click.argument("token_id_or_name")
def token_revoke(token_id_or_name: str) -> None:
    """Revoke a token by id, or every token of a name."""
    count = _run(_with_store(cli_settings(), "revoke", token_id_or_name))
    if not count:
        raise click.ClickException(f"no active token matches {token_id_or_name!r}")
    click.echo(f"revoked {count} token(s)")
    sys.stdout.flush()
