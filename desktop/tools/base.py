"""What every tool returns, and the shape of a tool call's outcome on the wire."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of one tool call.

    ``image`` is the encoded screenshot (PNG by default) the model sees, at model resolution.
    ``is_error`` results still carry a screenshot where one could be taken, so the model sees what happened.
    """

    output: str = ""
    error: str = ""
    image: bytes | None = None
    image_media_type: str = "image/png"
    system: str = ""  # a note for the model about the environment, e.g. "bash was restarted"
    meta: dict[str, Any] = field(default_factory=dict)  # timings etc., never sent to the model

    @property
    def is_error(self) -> bool:
        return bool(self.error)

    def with_error(self, error: str) -> ToolResult:
        return replace(self, error=error)

    def to_json(self) -> dict[str, Any]:
        """JSON form used between the desktop daemon and its client."""
        return {
            "output": self.output,
            "error": self.error,
            "image": base64.b64encode(self.image).decode() if self.image is not None else None,
            "image_media_type": self.image_media_type,
            "system": self.system,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolResult:
        image = data.get("image")
        return cls(
            output=str(data.get("output") or ""),
            error=str(data.get("error") or ""),
            image=base64.b64decode(image) if image else None,
            image_media_type=str(data.get("image_media_type") or "image/png"),
            system=str(data.get("system") or ""),
            meta=dict(data.get("meta") or {}),
        )
