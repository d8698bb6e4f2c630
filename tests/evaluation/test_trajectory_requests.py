"""The bundle's ``requests.jsonl`` against what the fake Messages API received: every model call's messages are
rebuilt exactly, the screenshots pruned from the history since then included (service + fake desktop backend)."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support.fake_desktop import FakeBackend
from tests.support.fake_messages import FakeMessages, reply, text, tool_use, without_cache_control
from tests.web.conftest import Service, start_service, stop_service, wait_status

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "trajectory.schema.json").read_text())


@pytest.fixture
def pruning_service(tmp_path: Path) -> Iterator[Service]:
    """The fake-backed service keeping at most 2 screenshots per request, removed one at a time."""
    with FakeMessages() as fake:
        svc = start_service(tmp_path / "data", FakeBackend(), anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0, keep_screenshots=2, screenshot_removal_chunk=1)
        svc.extra["fake"] = fake
        try:
            yield svc
        finally:
            stop_service(svc)


def inline_files(node: Any, files: dict[str, bytes]) -> Any:
    """An exported request with each image file put back as the base64 the API receives."""
    if isinstance(node, dict):
        src = node.get("source")
        if node.get("type") == "image" and isinstance(src, dict) and src.get("type") == "file":
            data = base64.b64encode(files[src["path"]]).decode()
            return {**node, "source": {"type": "base64", "media_type": src["media_type"], "data": data}}
        return {k: inline_files(v, files) for k, v in node.items()}
    if isinstance(node, list):
        return [inline_files(v, files) for v in node]
    return node


def test_every_request_of_a_pruned_run_is_exported_as_sent(pruning_service: Service) -> None:
    fake: FakeMessages = pruning_service.extra["fake"]
    fake.script(
        reply(text("Looking."), tool_use("computer", {"action": "screenshot"})),
        *[reply(tool_use("computer", {"action": "left_click", "coordinate": [100 + 50 * i, 200]})) for i in range(4)],
        reply(tool_use("computer", {"action": "type", "text": "hi"}),
              tool_use("computer", {"action": "key", "text": "Return"})),
        reply(text("Done.")),
    )
    with pruning_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "click around", "policy": {"preset": "autonomous"}}).json()["id"]
        final = wait_status(pruning_service, sid, "succeeded", "failed")
        assert final["status"] == "succeeded", final
        got = c.get(f"/api/sessions/{sid}/trajectory")
    assert got.status_code == 200
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        files = {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}
    requests = [json.loads(line) for line in files["requests.jsonl"].decode().splitlines()]
    steps = [json.loads(line) for line in files["traj.jsonl"].decode().splitlines()]
    jsonschema.validate({"meta": json.loads(files["meta.json"]), "steps": steps,
                         "messages": json.loads(files["messages.json"]), "requests": requests}, SCHEMA)

    sent = fake.requests
    assert len(sent) == 7 and [r["model_step"] for r in requests] == list(range(1, 8))
    # The run did prune: the last request carries 2 screenshots, the final history fewer than were ever sent.
    assert [len(r.images) for r in sent] == [0, 1, 2, 2, 2, 2, 2]
    for exported, received in zip(requests, sent, strict=True):
        assert inline_files(exported["messages"], files) == without_cache_control(received.body["messages"])
        # The other parameters as the API received them; the SDK sends ``betas`` as a header.
        params = dict(exported["params"])
        assert params.pop("betas") == received.headers["anthropic-beta"].split(",")
        assert params == {k: v for k, v in received.body.items() if k not in ("messages", "stream")}
    # The newest request is the final history up to its last message (messages.json keeps its meaning).
    assert json.loads(files["messages.json"])[: len(requests[-1]["messages"])] == requests[-1]["messages"]
    # An older request had a screenshot the final history has replaced by a placeholder.
    early = inline_files(requests[2]["messages"], files)
    assert early != json.loads(json.dumps(inline_files(json.loads(files["messages.json"]), files)))[: len(early)]
