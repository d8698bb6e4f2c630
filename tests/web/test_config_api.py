"""What the browser UI reads from the server instead of hard-coding: states, presets, defaults; and the
typed event payloads published with the stream's schema."""

from __future__ import annotations

from pathlib import Path

import httpx
import jsonschema

from agent import events
from agent.policy import PRESETS
from tests.web.conftest import Service, start_service, stop_service


def test_config_gives_the_server_defaults(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "d", max_steps=37, approval_policy="strict", max_cost_usd=0)
    try:
        with svc.client() as c:
            cfg = c.get("/api/config").json()
            assert c.get("/api/config", headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        stop_service(svc)
    assert cfg["defaults"]["max_steps"] == 37
    assert cfg["defaults"]["preset"] == "strict"
    assert cfg["defaults"]["max_cost_usd"] is None  # 0 means no limit
    assert cfg["presets"] == list(PRESETS)
    assert set(cfg["final_states"]) == {"succeeded", "failed", "cancelled"}
    assert {"queued", "interrupted", "taken_over"} <= set(cfg["states"])
    assert "queued" not in cfg["active_states"] and "taken_over" in cfg["active_states"]


def test_the_event_schema_describes_each_payload(service: Service) -> None:
    schema = httpx.get(service.url + "/api/schema/events.json").json()

    def message(kind: str, data: object) -> dict[str, object]:
        return {"kind": "event", "seq": 1, "type": kind, "data": data, "image": None,
                "ts": "2026-01-01T00:00:00Z"}

    jsonschema.validate(message("status", dict(events.status("taken_over", "user").data)), schema)
    unknown = events.unanswered_result("t1", "bash", "outcome unknown", "unknown", step=None)
    jsonschema.validate(message("tool_result", dict(unknown.data)), schema)
    for bad in (message("status", {"status": "asleep", "reason": ""}), message("usage", {"step": 1}),
                message("no_such_type", {})):
        try:
            jsonschema.validate(bad, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"accepted {bad}")
