"""Trajectory export of a real run (service + fake Messages API + a real desktop), checked against the schema."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from tests.evaluation.test_trajectory_requests import inline_files
from tests.support.cli import deskpilot
from tests.support.fake_messages import FakeMessages, reply, text, thinking, tool_use, without_cache_control
from tests.web.conftest import Service, wait_status

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "trajectory.schema.json").read_text())


def _bundle(files: dict[str, bytes]) -> dict[str, object]:
    steps = [json.loads(line) for line in files["traj.jsonl"].decode().splitlines()]
    requests = [json.loads(line) for line in files["requests.jsonl"].decode().splitlines()]
    return {"meta": json.loads(files["meta.json"]), "steps": steps, "messages": json.loads(files["messages.json"]),
            "requests": requests}


def _unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        root = names[0].split("/")[0]
        assert all(n.startswith(root + "/") for n in names)
        return {n[len(root) + 1:]: zf.read(n) for n in names}


def test_a_real_run_exports_a_bundle_that_matches_its_schema(agent_service: Service, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake: FakeMessages = agent_service.extra["fake"]
    marker = tmp_path / "marker.txt"
    fake.script(
        reply(thinking("First I look."), text("Looking at the screen."),
              tool_use("computer", {"action": "screenshot"})),
        reply(text("Clicking the middle."), tool_use("computer", {"action": "left_click", "coordinate": [500, 400]})),
        reply(tool_use("bash", {"command": f"echo hi > {marker}"})),
        reply(text("Done: wrote the marker.")),
    )
    with agent_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "write a marker", "policy": {"preset": "autonomous"}}).json()["id"]
    final = wait_status(agent_service, sid, "succeeded", "failed")
    assert final["status"] == "succeeded", final
    with agent_service.client("alice") as c:
        got = c.get(f"/api/sessions/{sid}/trajectory")
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    assert f"trajectory-{sid}.zip" in got.headers["content-disposition"]
    files = _unzip(got.content)
    bundle = _bundle(files)
    jsonschema.validate(bundle, SCHEMA, format_checker=jsonschema.FormatChecker())

    meta, steps = bundle["meta"], bundle["steps"]
    assert isinstance(meta, dict) and isinstance(steps, list)
    assert meta["status"] == "succeeded" and meta["task"] == "write a marker" and meta["version"] == "1.0"
    assert meta["totals"]["model_calls"] == 4 and meta["totals"]["actions"] == 3
    assert meta["totals"]["input_tokens"] == 4000 and meta["totals"]["wall_s"] > 0
    assert [s["tool"] for s in steps] == ["computer", "computer", "bash", None]
    assert [s["step_num"] for s in steps] == [1, 2, 3, 4] and [s["done"] for s in steps] == [False] * 3 + [True]
    assert steps[0]["response"] == {"text": "Looking at the screen.", "thinking": "First I look."}
    assert steps[1]["action"] == {"tool": "computer", "action": "left_click", "coordinate": [500, 400]}
    assert steps[1]["approval"]["decision"] == "allow" and steps[1]["approval"]["by"] == "policy"
    assert steps[1]["settle_ms"] is not None and steps[1]["duration_s"] >= 0
    assert steps[2]["result"]["is_error"] is False and steps[2]["screenshot_file"] is None
    assert steps[3]["action"] == {"type": "answer", "text": "Done: wrote the marker."}
    assert sum(s["tokens"]["input_tokens"] for s in steps if s["tokens"]) == 4000
    # The exact bytes the model saw: every image of each request is a screenshot file of the bundle.
    sent = [img for req in fake.requests for img in req.images]
    assert sent and all(any(files[n] == img for n in files if n.startswith("screenshots/")) for img in sent)
    # Each action chosen on a screen points at the frame the model was sent before it.
    assert files[steps[1]["observation_file"]] == fake.requests[1].images[-1]
    assert files[steps[1]["screenshot_file"]] == fake.requests[2].images[-1]
    images = [b for m in bundle["messages"] for b in (m["content"] if isinstance(m["content"], list) else [])
              if b.get("type") == "tool_result" for b in (b.get("content") or []) if b.get("type") == "image"]
    assert images and all(b["source"]["path"] in files for b in images)
    # Each model call's messages as the API received them (thinking and its signature included).
    requests = bundle["requests"]
    assert isinstance(requests, list) and len(requests) == len(fake.requests) == 4
    for exported, received in zip(requests, fake.requests, strict=True):
        assert inline_files(exported["messages"], files) == without_cache_control(received.body["messages"])
    gif = Image.open(io.BytesIO(files["preview.gif"]))
    assert gif.format == "GIF" and gif.n_frames == 4  # three steps planned on a screen + the last screen

    with agent_service.client("bob") as c:
        assert c.get(f"/api/sessions/{sid}/trajectory").status_code == 404
    with agent_service.client(None) as c:
        assert c.get(f"/api/sessions/{sid}/trajectory").status_code == 401

    # The same bundle from the command line, reading the store.
    monkeypatch.setenv("DESKPILOT_DATA_DIR", str(agent_service.settings.data_dir))
    out = tmp_path / "export"
    result = deskpilot("export", sid, "-o", str(out))
    assert result.exit_code == 0, result.output
    exported = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert exported.keys() == files.keys() and exported["traj.jsonl"] == files["traj.jsonl"]
    missing = deskpilot("export", "no-such-session")
    assert missing.exit_code == 1 and "not found" in missing.output
