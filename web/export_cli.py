"""``deskpilot export ID [-o DIR]``: a session's trajectory bundle, from the store, as a directory or a zip."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from deskpilot.cli import cli_settings
from deskpilot.errors import NotFound
from deskpilot.settings import Settings


async def _bundle(settings: Settings, session_id: str) -> dict[str, bytes]:
    from web.store import Store
    from web.trajectory import build_bundle

    store = Store(settings.data_dir, settings.database_url)
    await store.init()
    try:
        return await build_bundle(store, session_id)
    finally:
        await store.close()


@click.command("export")
@click.argument("session_id")
@click.option("-o", "--output", type=click.Path(file_okay=True, path_type=Path), default=None,
              help="Directory to write the bundle into (default ./trajectory-ID); a path ending in .zip gets a zip.")
def export_command(session_id: str, output: Path | None) -> None:
    """Export a session's trajectory (traj.jsonl, screenshots, messages.json, meta.json, preview.gif).

    Reads the service's store (DESKPILOT_DATA_DIR / DESKPILOT_DATABASE_URL); works while the session runs.
    """
    from web.trajectory import to_zip, write_dir

    try:
        files = asyncio.run(_bundle(cli_settings(), session_id))
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    target = output or Path(f"trajectory-{session_id}")
    if target.suffix == ".zip":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(to_zip(files, f"trajectory-{session_id}"))
    else:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise click.ClickException(f"{target} exists and is not an empty directory")
        write_dir(files, target)
    steps = files["traj.jsonl"].count(b"\n")
    click.echo(f"wrote {target} ({steps} steps, {sum(1 for n in files if n.startswith('screenshots/'))} screenshots)")
