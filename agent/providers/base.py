"""The provider seam: what the loop asks of a model API, and the canonical reply every adapter returns.

The canonical history is the Messages-API shape deskpilot always stored (``role``/``content`` blocks:
``text``, ``thinking``, ``tool_use``, ``tool_result`` with images). Every adapter turns it into its own
API's request and the answer back into canonical blocks; a ``tool_use`` always names a desktop tool
(``computer``/``bash``/``str_replace_based_edit_tool``) with an input in the ``computer_20251124`` action
vocabulary at model-space coordinates. What a vendor needs to replay later (OpenAI reasoning items, Gemini
thought signatures, an open model's raw text) rides along in a ``vendor`` block of the assistant turn, which
only that vendor's adapter reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
VENDOR = "vendor"  # block type holding a provider's replay state
ACKNOWLEDGED = "acknowledged_safety_checks"  # key of a tool_result: vendor checks a person approved
SAFETY = "safety_checks"  # key of a tool_use: the vendor's checks on it (kept in the history, so a restored
# ask still knows them; only non-Anthropic histories have it, and their adapters never send tool_use blocks)


@dataclass(frozen=True, slots=True)
class SafetyCheck:
    """A vendor's safety signal on a call: it runs only after a person approves (see ``agent.actions``)."""

    id: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "code": self.code, "message": self.message}

    @classmethod
    def all_from(cls, block: dict[str, Any]) -> list[SafetyCheck]:
        """The checks stored on a tool_use block (none for a block without them)."""
        return [cls(str(c.get("id", "")), str(c.get("code", "")), str(c.get("message", "")))
                for c in block.get(SAFETY) or [] if isinstance(c, dict)]


@dataclass(slots=True)
class Reply:
    """One model call's answer in canonical form.

    ``malformed``: tool_use id -> why it cannot run (answered with an error result the model can read).
    ``groups``: tool_use ids that came as one vendor call (a batch): when a person rejects one of them, the
    rest of its group does not run either. A vendor's safety checks sit on the tool_use block (``SAFETY``).
    ``stop_reason`` ``"question"`` means the model asked the user something and waits for an answer.
    """

    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: dict[str, Any]  # Messages-API usage keys (input_tokens, cache_read_input_tokens, ...)
    model: str = ""
    malformed: dict[str, str] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)

    def message(self) -> dict[str, Any]:
        return {"role": "assistant", "content": self.content}

    def flag(self, use_id: str, checks: list[SafetyCheck]) -> None:
        """Put the vendor's safety checks on a tool_use of this reply."""
        for block in self.content:
            if block.get("type") == "tool_use" and block.get("id") == use_id:
                block[SAFETY] = [c.as_dict() for c in checks]

    def group_of(self, use_id: str) -> list[str]:
        return next((g for g in self.groups if use_id in g), [use_id])


def vendor_state(message: Message, provider: str) -> dict[str, Any] | None:
    """The ``vendor`` block an adapter stored on an assistant turn, if any."""
    for block in message.get("content") or []:
        if isinstance(block, dict) and block.get("type") == VENDOR and block.get("provider") == provider:
            return block
    return None
