"""The ``deskpilot`` command. Subcommands live next to the code they run and are imported lazily,
so ``deskpilot --help`` is fast and a command's heavy imports (X11, SQLAlchemy) load only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from deskpilot.settings import Settings

# command name -> ("module:attribute" of a click command, one-line help shown without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("web.cli:serve_command", "Run the web service (REST, live viewer, approvals, takeover)."),
    "token": ("web.cli:token_group", "Create, list and revoke API tokens."),
    "run": ("agent.cli_run:run_command", "Run one task on a local desktop, with progress in the terminal."),
    "export": ("web.export_cli:export_command", "Export a session's trajectory bundle (steps, screenshots, messages)."),
    "eval": ("evaluation.cli:eval_command", "Run a task suite and score it (deskpilot eval compare A B: two runs)."),
    "desktopd": ("desktop.daemon:desktopd_command", "Start a desktop and serve its tools (the desktop daemon)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        target = entry[0]
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every command's dependencies.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deskpilot")
@click.pass_context
def main(ctx: click.Context) -> None:
    """deskpilot: a computer-use agent service.

    A task in plain words runs on a virtual desktop driven by Claude, streamed live,
    with approvals for risky actions and human takeover.
    """
    from pydantic import ValidationError

    from deskpilot.logs import configure_logging
    from deskpilot.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"DESKPILOT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise click.ClickException(f"invalid settings: {problems}") from None
    ctx.obj = settings  # read once here, passed down: every subcommand takes it from cli_settings()
    configure_logging(settings.log_format)


def cli_settings() -> Settings:
    """The settings ``deskpilot`` read at start, for the subcommand running now (a subcommand invoked on its
    own, without the group, reads them itself)."""
    from deskpilot.settings import Settings

    settings = click.get_current_context().find_root().obj
    return settings if isinstance(settings, Settings) else Settings()


if __name__ == "__main__":
    main()
