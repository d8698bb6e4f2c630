"""Logging for every deskpilot process.

Modules log through the standard library (``logging.getLogger(__name__)``); this module renders those
records with structlog: JSON lines in containers and pipes, readable lines on a terminal. Values bound with
``bind_log_context(session_id=..., step=...)`` (contextvars, so per asyncio task) appear on every record.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog


def bind_log_context(**values: Any) -> None:
    """Attach values (e.g. session_id, step) to every log record of the current task."""
    structlog.contextvars.bind_contextvars(**values)


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: int | str = logging.INFO) -> None:
    """Install one handler on the root logger. ``auto`` means JSON unless stderr is a terminal."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_deskpilot", False):
            root.removeHandler(old)
    handler._deskpilot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Access logs of every request would drown the useful lines.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic narrates every start (plugins, context); web/migrations logs the upgrades it runs itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
