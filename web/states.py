"""A session's states as the service uses them, derived from their one definition
(``agent.events.SessionStatus``: the loop's own states plus queued, starting, interrupted, taken_over)."""

from __future__ import annotations

from typing import get_args

from agent.events import FinalStatus, SessionStatus

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "SESSION_STATES", "SessionStatus"]

SESSION_STATES: tuple[SessionStatus, ...] = get_args(SessionStatus)
FINAL_STATES: tuple[FinalStatus, ...] = get_args(FinalStatus)
# Holding (or about to hold) a desktop: after a restart these were cut short.
ACTIVE_STATES: tuple[SessionStatus, ...] = tuple(s for s in SESSION_STATES
                                                 if s not in FINAL_STATES and s not in ("queued", "interrupted"))
