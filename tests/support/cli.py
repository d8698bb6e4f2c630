"""``deskpilot …`` in this process, through click's CliRunner: the same group, settings and subcommands a shell
runs, without the second a fresh interpreter spends on imports. A test that needs a real process (a server that
must answer, signals, process-wide state such as the daemon's) spawns one instead."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from click.testing import CliRunner, Result

from deskpilot.cli import main


def deskpilot(*args: str, env: Mapping[str, str] | None = None, input: str | None = None) -> Result:
    """Run ``deskpilot ARGS``. ``env`` is the whole environment, as for a subprocess (variables of this process
    it leaves out are unset during the call). An exception other than an exit propagates: a traceback is a bug."""
    overrides: dict[str, str | None] | None = None
    if env is not None:
        overrides = {**dict.fromkeys(k for k in os.environ if k not in env), **env}
    # The command configures logging for its process (root handler on its stderr, levels): undo that after.
    manager = logging.Logger.manager
    handlers, levels = logging.root.handlers[:], {name: logger.level for name, logger in manager.loggerDict.items()
                                                  if isinstance(logger, logging.Logger)}
    root_level = logging.root.level
    try:
        return CliRunner().invoke(main, list(args), env=overrides, input=input, catch_exceptions=False)
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(root_level)
        for name, logger in list(manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))
