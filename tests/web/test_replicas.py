"""Three service replicas on one PostgreSQL (issue 13): a task started through replica 1, watched through
replica 2, approved through replica 3; replica 1 killed (SIGKILL) mid-step → another replica adopts the
session and finishes it; no event lost or duplicated, no action run twice.

Each replica is a real ``deskpilot serve`` with its own desktops; the replicas share the database and the
data directory's ``sessions/`` and ``screenshots/`` (a shared volume in production, docs/scale-out.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.support.shared_dir import desktop_writable_dir
from tests.web.conftest import make_tokens, wait_for
from tests.web.pg import PgCluster
from tests.web.procs import ServerProcess
from tests.web.test_restart import get, model_env, post, wait_session

pytestmark = pytest.mark.desktop  # each replica runs real local desktops (the fake one lives in one process)


@pytest.fixture
def shared() -> Iterator[Path]:
    """Where the desktops' shells (a sandbox uid) write the test's markers."""
    with desktop_writable_dir() as path:
        yield path


def replica_dirs(root: Path, n: int) -> list[Path]:
    shared = root / "shared"
    for sub in ("sessions", "screenshots"):
        (shared / sub).mkdir(parents=True)
    dirs = []
    for i in range(1, n + 1):
        d = root / f"r{i}"
        d.mkdir()
        for sub in ("sessions", "screenshots"):
            (d / sub).symlink_to(shared / sub)
        dirs.append(d)
    return dirs


def stream(server: ServerProcess, token: str, sid: str, after: int = 0) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{server.port}/api/sessions/{sid}/stream?after={after}",
                   additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30)


def read_until_final(conn: ClientConnection, out: list[dict[str, Any]], timeout: float) -> None:
    """Collect event messages until the session's final status (frames and the hello are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = conn.recv(timeout=deadline - time.monotonic())
        if isinstance(msg, bytes):
            continue
        body = json.loads(msg)
        if body["kind"] != "event":
            continue
        out.append(body)
        if body["type"] == "status" and body["data"]["status"] in ("succeeded", "failed", "cancelled"):
            return


def test_three_replicas_a_killed_owner_loses_nothing(tmp_path: Path, shared: Path, pg_cluster: PgCluster) -> None:
    first, slow = shared / "first.txt", shared / "slow.txt"
    url = pg_cluster.create_database()
    db = url.split("/")[3].split("?")[0]
    dirs = replica_dirs(tmp_path, 3)
    token = make_tokens(dirs[0], ["alice"], url)["alice"]

    def model(req: Request) -> Reply:
        answered = sum(1 for m in req.body["messages"] if m["role"] == "assistant")
        if answered == 0:
            return reply(text("First step."), tool_use("bash", {"command": f"echo first >> {first}"}))
        if answered == 1:
            return reply(text("A slow step."), tool_use("bash", {"command": f"sleep 60; echo slow >> {slow}"}))
        return reply(text("finished"))

    with FakeMessages() as fake:
        fake.script(*([model] * 6))
        replicas = [ServerProcess(d, model_env(fake, DESKPILOT_DATABASE_URL=url, DESKPILOT_CLUSTER="true",
                                               DESKPILOT_REPLICA_ID=f"r{i}", DESKPILOT_LEASE_TTL_S="6",
                                               DESKPILOT_LEASE_RENEW_S="2"))
                    for i, d in enumerate(dirs, 1)]
        try:
            for r in replicas:
                r.start()
            r1, r2, r3 = replicas
            created = post(r1, token, "/api/sessions", {"task": "two steps", "policy": {"preset": "strict"}})
            assert created.status_code == 201, created.text
            sid = created.json()["id"]
            lease = f"SELECT replica FROM session_leases WHERE session_id = '{sid}'"
            assert pg_cluster.psql(lease, db).strip() == "r1"

            seen: list[dict[str, Any]] = []  # everything replica 2's viewer receives, failover included
            failures: list[BaseException] = []

            def watch() -> None:
                try:
                    with stream(r2, token, sid) as viewer:
                        read_until_final(viewer, seen, 400)
                except BaseException as exc:  # reported by the assertion below, with what was seen
                    failures.append(exc)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()

            card = wait_session(r2, token, sid, "awaiting_approval")["pending_approval"]
            assert post(r3, token, f"/api/sessions/{sid}/approvals/{card['id']}",
                        {"decision": "approve"}).status_code == 200
            second = wait_for(lambda: (p := get(r2, token, f"/api/sessions/{sid}")["pending_approval"])
                              and p["id"] != card["id"] and p, 180)
            assert post(r3, token, f"/api/sessions/{sid}/approvals/{second['id']}",
                        {"decision": "approve"}).status_code == 200
            # mid-step: the slow command was approved on replica 1 and runs there
            wait_for(lambda: any(e["type"] == "approval_decided" and e["data"]["approval_id"] == second["id"]
                                 for e in get(r2, token, f"/api/sessions/{sid}/events")["items"]), 120)
            time.sleep(1)
            killed_at = time.monotonic()
            r1.kill()  # SIGKILL; its desktops go too

            def failed_over() -> Any:
                items = get(r2, token, f"/api/sessions/{sid}/events")["items"]
                return any(e["type"] == "status" and e["data"].get("reason") == "failover" for e in items)

            wait_for(failed_over, 60)
            failover_s = time.monotonic() - killed_at
            print(f"failover after SIGKILL: {failover_s:.1f} s")
            assert failover_s < 30, failover_s  # lease TTL 6 s + one 2 s tick, with room for a loaded machine
            assert pg_cluster.psql(lease, db).strip() in ("r2", "r3")

            done = wait_session(r3, token, sid, "succeeded", "failed", timeout=300)
            assert done["status"] == "succeeded" and done["result"] == "finished", done
            watcher.join(120)
            assert not failures, (failures, [m["seq"] for m in seen])

            items = get(r3, token, f"/api/sessions/{sid}/events")["items"]
            seqs = [e["seq"] for e in items]
            assert seqs == list(range(1, len(items) + 1))  # contiguous: nothing lost or written twice
            assert [m["seq"] for m in seen] == seqs  # replica 2's viewer got each event exactly once, live
            assert first.read_text() == "first\n"  # approved once through replica 3, run once
            assert not slow.exists()  # cut off by the kill and never run again
            results = [e["data"] for e in items if e["type"] == "tool_result"]
            assert len(results) == 2 and "outcome unknown" in results[1]["error"]
            assert pg_cluster.psql(lease, db).strip() == ""  # finished: nobody holds it

            # a viewer resuming on another replica with after=SEQ gets exactly the rest
            cut = next(e["seq"] for e in items if e["data"].get("reason") == "failover") - 1
            rest: list[dict[str, Any]] = []
            with stream(r3, token, sid, after=cut) as again:
                read_until_final(again, rest, 60)
            assert [m["seq"] for m in rest] == seqs[cut:]
        finally:
            for r in replicas:
                r.stop()


def test_messages_pause_and_cancel_through_a_replica_that_does_not_run_the_session(
        tmp_path: Path, shared: Path, pg_cluster: PgCluster) -> None:
    marker = shared / "ran.txt"
    url = pg_cluster.create_database()
    dirs = replica_dirs(tmp_path, 2)
    token = make_tokens(dirs[0], ["alice"], url)["alice"]

    def model(req: Request) -> Reply:
        answered = sum(1 for m in req.body["messages"] if m["role"] == "assistant")
        return reply(tool_use("bash", {"command": f"echo {answered} >> {marker}"}))

    with FakeMessages() as fake:
        fake.script(*([model] * 4))
        replicas = [ServerProcess(d, model_env(fake, DESKPILOT_DATABASE_URL=url, DESKPILOT_CLUSTER="true",
                                               DESKPILOT_REPLICA_ID=f"r{i}"))
                    for i, d in enumerate(dirs, 1)]
        try:
            for r in replicas:
                r.start()
            r1, r2 = replicas
            sid = post(r1, token, "/api/sessions", {"task": "steps", "policy": {"preset": "strict"}}).json()["id"]
            card = wait_session(r2, token, sid, "awaiting_approval")["pending_approval"]
            assert post(r2, token, f"/api/sessions/{sid}/messages", {"text": "hello from r2"}).status_code == 200
            assert post(r2, token, f"/api/sessions/{sid}/approvals/{card['id']}",
                        {"decision": "approve"}).status_code == 200
            wait_for(lambda: (p := get(r2, token, f"/api/sessions/{sid}")["pending_approval"])
                     and p["id"] != card["id"], 180)
            assert "hello from r2" in json.dumps(fake.requests[1].body["messages"])  # reached r1's loop

            assert post(r2, token, f"/api/sessions/{sid}/pause").status_code == 200
            wait_session(r1, token, sid, "paused", timeout=60)
            assert post(r2, token, f"/api/sessions/{sid}/cancel").status_code == 200
            wait_session(r1, token, sid, "cancelled", timeout=120)
            assert marker.read_text() == "0\n"  # the first command ran once; the second was never approved
            db = url.split("/")[3].split("?")[0]
            assert pg_cluster.psql(f"SELECT count(*) FROM session_commands WHERE session_id = '{sid}'", db) \
                .strip() == "0"  # every command was applied by r1
        finally:
            for r in replicas:
                r.stop()
