"""A session's states: the agent loop's own (``agent.events.RunStatus``) plus the ones only the service
has — waiting for a slot, starting its desktop, cut off by a restart, driven by a person."""

from __future__ import annotations

from typing import Literal, get_args

from agent.events import FinalStatus, RunStatus

SessionStatus = Literal[RunStatus, "queued", "starting", "interrupted", "taken_over"]

SESSION_STATES: tuple[str, ...] = get_args(SessionStatus)
FINAL_STATES: tuple[str, ...] = get_args(FinalStatus)
# Holding (or about to hold) a desktop: after a restart these were cut short.
ACTIVE_STATES: tuple[str, ...] = tuple(s for s in SESSION_STATES
                                       if s not in FINAL_STATES and s not in ("queued", "interrupted"))
