"""WS /api/sessions/{id}/stream: handshake checks, replay from ``after``, and slow viewers."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agent.events import Event
from tests.web.conftest import Service, start_service, stop_service, wait_for


def bare_session(svc: Service, owner: str = "alice") -> str:
    """A session row that no runner picks up (it is never queued), for exercising the stream alone."""
    row = svc.call(svc.app.state.store.create_session(
        owner=owner, task="t", model="m", max_steps=1, width=800, height=600, status="paused"))
    return str(row.id)


def emit(svc: Service, sid: str, n: int, size: int = 10) -> None:
    runner = svc.app.state.runner

    async def go() -> None:
        for i in range(n):
            await runner.emit(sid, Event("assistant_text", {"text": "x" * size, "i": i}))

    svc.call(go(), timeout=120)


def ws(svc: Service, sid: str, who: str | None = "alice", after: int | None = None, **kw: Any) -> Any:
    query = f"?after={after}" if after is not None else ""
    headers = kw.pop("headers", {})
    if who:
        headers["Authorization"] = f"Bearer {svc.tokens[who]}"
    return connect(f"{svc.ws_url}/api/sessions/{sid}/stream{query}", additional_headers=headers,
                   open_timeout=10, **kw)


def read_events(conn: Any, until_seq: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] < until_seq:
        msg = json.loads(conn.recv(timeout=30))
        if msg["kind"] == "event":
            seqs.append(msg["seq"])
    return seqs


def test_handshake_needs_token_ownership_and_own_origin(service: Service) -> None:
    sid = bare_session(service)
    with pytest.raises(InvalidStatus) as no_token:
        ws(service, sid, who=None)
    assert no_token.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as bad:
        ws(service, sid, who=None, headers={"Authorization": "Bearer dp_forged"})
    assert bad.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as foreign:
        ws(service, sid, who="bob")
    assert foreign.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as evil:
        ws(service, sid, headers={"Origin": "http://evil.example"})
    assert evil.value.response.status_code == 403  # close 1008 before accept = a refused handshake
    host = service.url.removeprefix("http://")
    with ws(service, sid, headers={"Origin": f"http://{host}"}) as conn:
        hello = json.loads(conn.recv(timeout=10))
        assert hello["kind"] == "hello" and hello["session"]["id"] == sid


def test_reconnect_with_after_misses_nothing(service: Service) -> None:
    sid = bare_session(service)
    emit(service, sid, 20)
    with ws(service, sid) as conn:
        assert json.loads(conn.recv(timeout=10))["kind"] == "hello"
        first = read_events(conn, 20)
        assert first == list(range(1, 21))
        emit(service, sid, 10)  # live now
        assert read_events(conn, 30) == list(range(21, 31))
    emit(service, sid, 25)  # nobody connected
    with ws(service, sid, after=30) as conn:
        conn.recv(timeout=10)
        assert read_events(conn, 55) == list(range(31, 56))
        emit(service, sid, 5)
        assert read_events(conn, 60) == list(range(56, 61))


def test_a_viewer_that_never_reads_is_dropped_and_the_agent_goes_on(tmp_path: Path) -> None:
    # A short queue and large events: the stuck viewer overflows after a few hundred events instead of
    # thousands, and the good one is read after every batch, so it is never a queue behind.
    svc = start_service(tmp_path / "data", viewer_queue_size=64)
    try:
        sid = bare_session(svc)
        bus = svc.app.state.bus
        stuck = ws(svc, sid, max_queue=1, legacy=True)  # the client stops reading its socket once one message waits
        stuck.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with ws(svc, sid) as good:
            good.recv(timeout=10)
            wait_for(lambda: bus.viewer_count(sid) == 2, 10)
            for batch in range(10):  # 320 events of 32 KB: ~10 MB, far beyond the stuck viewer's buffers and queue
                emit(svc, sid, 32, size=32_000)
                assert read_events(good, 32 * (batch + 1)) == list(range(32 * batch + 1, 32 * (batch + 1) + 1))
            wait_for(lambda: bus.viewer_count(sid) == 1, 30)  # the stuck one is gone, the good one stays
        stuck.close_socket()
        wait_for(lambda: bus.viewer_count(sid) == 0, 10)
    finally:
        stop_service(svc)


def test_event_schema_is_published(service: Service) -> None:
    import httpx

    schema = httpx.get(service.url + "/api/schema/events.json").json()
    kinds = json.dumps(schema)
    for needle in ('"hello"', '"event"', '"dropped"', "seq", "approval_requested"):
        assert needle in kinds


def test_oversized_websocket_messages_end_the_connection(tmp_path: Any) -> None:
    from websockets.exceptions import ConnectionClosed

    svc = start_service(tmp_path / "d", ws_max_message_bytes=4096)
    try:
        sid = bare_session(svc)
        with ws(svc, sid) as conn:
            conn.recv(timeout=10)
            conn.send(b"x" * 10_000)
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):
                    conn.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        stop_service(svc)


def test_frames_flow_only_while_someone_watches(fake_service: Service) -> None:
    from tests.support.fake_messages import FakeMessages, reply, tool_use

    fake: FakeMessages = fake_service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": "true"})))
    with fake_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "wait", "policy": {"preset": "strict"}}).json()["id"]
    runner = fake_service.app.state.runner
    wait_for(lambda: fake_service.call(_status(fake_service, sid)) == "awaiting_approval", 60)
    assert runner.frames.all_tasks() == []  # nobody watches: the desktop is not polled
    with ws(fake_service, sid) as conn:
        frames = 0
        deadline = time.monotonic() + 30
        while frames == 0 and time.monotonic() < deadline:
            msg = conn.recv(timeout=30)
            if isinstance(msg, bytes):
                assert msg.startswith(b"\xff\xd8")  # a JPEG
                frames += 1
        assert frames == 1
        assert len(runner.frames.all_tasks()) == 1
    wait_for(lambda: runner.frames.all_tasks() == [], 10)
    with fake_service.client("alice") as c:
        c.post(f"/api/sessions/{sid}/cancel")


async def _status(svc: Service, sid: str) -> str:
    row = await svc.app.state.store.get_session(sid)
    return str(row.status)
