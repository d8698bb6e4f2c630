"""Decisions a person makes on an ``ask``, and the waiting room where the loop waits for them."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from deskpilot.errors import BadRequest, Conflict, NotFound


def new_approval_id() -> str:
    """Unique across processes and restarts, so stored ids never collide and need no mapping."""
    return f"ap_{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class Decision:
    """``approve`` runs the call; ``reject`` answers the model with an error carrying ``note``;
    ``edit`` runs ``input`` instead. ``always`` (with approve) adds a rule allowing exactly this call."""

    kind: Literal["approve", "reject", "edit"]
    note: str = ""
    input: dict[str, Any] | None = None
    always: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("approve", "reject", "edit"):
            raise BadRequest(f"decision must be approve, reject or edit, not {self.kind!r}")
        if self.kind == "edit" and not isinstance(self.input, dict):
            raise BadRequest("an edit decision needs the corrected input as a JSON object")

    @classmethod
    def approve(cls, *, always: bool = False) -> Decision:
        return cls("approve", always=always)

    @classmethod
    def reject(cls, note: str = "") -> Decision:
        return cls("reject", note=note)

    @classmethod
    def edit(cls, new_input: dict[str, Any], note: str = "") -> Decision:
        return cls("edit", note=note, input=new_input)


class Approvals:
    """Pending asks by id. ``wait`` is cancelled when the run is interrupted."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[Decision]] = {}

    def open(self, approval_id: str | None = None) -> str:
        """A new pending ask; pass ``approval_id`` to reopen one restored from before a restart."""
        approval_id = approval_id or new_approval_id()
        if approval_id in self._pending:
            raise Conflict(f"approval {approval_id} is already open")
        self._pending[approval_id] = asyncio.get_running_loop().create_future()
        return approval_id

    def close(self, approval_id: str) -> None:
        """Drop an ask nobody will wait for (e.g. a restored one whose call is no longer pending)."""
        future = self._pending.pop(approval_id, None)
        if future is not None:
            future.cancel()

    async def wait(self, approval_id: str) -> Decision:
        try:
            return await self._pending[approval_id]
        finally:
            self._pending.pop(approval_id, None)

    def decide(self, approval_id: str, decision: Decision) -> None:
        future = self._pending.get(approval_id)
        if future is None or future.done():
            raise NotFound(f"no pending approval {approval_id}")
        future.set_result(decision)

    @property
    def pending(self) -> list[str]:
        return [k for k, f in self._pending.items() if not f.done()]
