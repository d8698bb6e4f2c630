"""Live frames, VNC and takeover through a replica that does not run the session (docs/scale-out.md).

Three real ``deskpilot serve`` replicas on one PostgreSQL; replica 1 runs the session on a real local desktop.
A viewer on replica 2 receives its live JPEG frames and opens its VNC: view-only while the agent has control,
input-capable once the user took over through replica 3, and closed when replica 3 hands back.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from desktop.client import DesktopClient, DesktopEndpoint
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import make_tokens, wait_for
from tests.web.pg import PgCluster
from tests.web.procs import ServerProcess
from tests.web.rfb import RfbClient
from tests.web.test_replicas import replica_dirs, stream
from tests.web.test_restart import get, model_env, post, wait_session

pytestmark = pytest.mark.desktop

SHIFT_L = 0xFFE1
# Whether Shift_L is down on the X server right now (XQueryKeymap), asked from inside the desktop.
SHIFT_DOWN = (
    "python3 -c \"import ctypes as c; x = c.CDLL('libX11.so.6'); x.XOpenDisplay.restype = c.c_void_p; "
    "d = c.c_void_p(x.XOpenDisplay(None)); k = (c.c_char * 32)(); x.XQueryKeymap(d, k); "
    f"n = x.XKeysymToKeycode(d, {SHIFT_L}); print('shift', (k.raw[n // 8] >> (n % 8)) & 1)\""
)


class Desktop:
    """The session's desktop, reached by the test as any replica reaches it: from the endpoint in the lease."""

    def __init__(self, endpoint: DesktopEndpoint) -> None:
        self.endpoint = endpoint

    def bash(self, command: str) -> str:
        async def go() -> str:
            async with DesktopClient.to(self.endpoint, timeout_s=60) as client:
                result = await client.tool("bash", {"command": command})
            assert not result.error, result.error
            return result.output

        return asyncio.run(go())

    def mouse(self) -> tuple[int, int]:
        out = self.bash("xdotool getmouselocation --shell")
        values = dict(line.split("=", 1) for line in out.split() if "=" in line)
        return int(values["X"]), int(values["Y"])

    def shift_down(self) -> bool:
        return "shift 1" in self.bash(SHIFT_DOWN)


def first_frame(server: ServerProcess, token: str, sid: str, timeout: float) -> bytes:
    with stream(server, token, sid) as viewer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = viewer.recv(timeout=deadline - time.monotonic())
            if isinstance(msg, bytes):
                return msg
    raise AssertionError("no live frame")


def vnc(server: ServerProcess, token: str, sid: str) -> RfbClient:
    return RfbClient(f"ws://127.0.0.1:{server.port}/api/sessions/{sid}/vnc", {"Authorization": f"Bearer {token}"})


def test_frames_vnc_and_takeover_through_replicas_that_do_not_run_the_session(
        tmp_path: Path, pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database()
    db = url.split("/")[3].split("?")[0]
    dirs = replica_dirs(tmp_path, 3)
    token = make_tokens(dirs[0], ["alice"], url)["alice"]

    with FakeMessages() as fake:
        fake.script(reply(tool_use("bash", {"command": "true"})), reply(text("finished")))
        replicas = [ServerProcess(d, model_env(fake, DESKPILOT_DATABASE_URL=url, DESKPILOT_CLUSTER="true",
                                               DESKPILOT_REPLICA_ID=f"r{i}", DESKPILOT_FRAME_FPS="2"))
                    for i, d in enumerate(dirs, 1)]
        try:
            for r in replicas:
                r.start()
            r1, r2, r3 = replicas
            created = post(r1, token, "/api/sessions", {"task": "one step", "policy": {"preset": "strict"},
                                                        "screen": {"width": 1024, "height": 768}})
            assert created.status_code == 201, created.text
            sid = created.json()["id"]
            card = wait_session(r2, token, sid, "awaiting_approval", timeout=180)["pending_approval"]
            lease = pg_cluster.psql(f"SELECT replica, desktop FROM session_leases WHERE session_id = '{sid}'", db)
            holder, _, endpoint = lease.strip().partition("|")
            assert holder == "r1"
            desktop = Desktop(DesktopEndpoint.from_json(json.loads(endpoint)))

            jpeg = first_frame(r2, token, sid, 120)  # pumped by replica 2 from replica 1's desktop
            assert jpeg[:3] == b"\xff\xd8\xff", jpeg[:16]

            watcher = vnc(r2, token, sid).handshake()  # the agent has control: view-only
            assert watcher.version == b"RFB 003.008\n" and (watcher.width, watcher.height) == (1024, 768)
            start = desktop.mouse()
            target = (start[0] + 37) % 1000 + 10, (start[1] + 53) % 700 + 10
            watcher.pointer(*target)
            watcher.key(SHIFT_L, down=True)
            time.sleep(1)
            assert desktop.mouse() == start and not desktop.shift_down()  # dropped on the server
            watcher.key(SHIFT_L, down=False)

            assert post(r2, token, f"/api/sessions/{sid}/handback").status_code == 409  # nobody holds it yet
            taken = post(r3, token, f"/api/sessions/{sid}/takeover")  # forwarded to replica 1, answered once held
            assert taken.status_code == 200, taken.text
            assert taken.json()["control"] == "user" and taken.json()["status"] == "taken_over"
            assert post(r3, token, f"/api/sessions/{sid}/takeover").status_code == 409

            driver = vnc(r2, token, sid).handshake()  # opened while the user holds control: input allowed
            driver.pointer(*target)
            wait_for(lambda: desktop.mouse() == target, 30)
            driver.key(SHIFT_L, down=True)
            wait_for(desktop.shift_down, 30)
            driver.key(SHIFT_L, down=False)
            wait_for(lambda: not desktop.shift_down(), 30)
            watcher.pointer(5, 5)  # the older view-only connection still cannot move it
            time.sleep(1)
            assert desktop.mouse() == target

            back = post(r3, token, f"/api/sessions/{sid}/handback", {"note": "moved the mouse"})
            assert back.status_code == 200 and back.json()["control"] == "agent", back.text
            with pytest.raises(ConnectionClosed):  # replica 2 learnt of the handback and closed the input connection
                for _ in range(400):
                    driver.ws.recv(timeout=30)
            watcher.close()

            assert post(r2, token, f"/api/sessions/{sid}/approvals/{card['id']}",
                        {"decision": "approve"}).status_code == 200
            done = wait_session(r3, token, sid, "succeeded", "failed", timeout=180)
            assert done["status"] == "succeeded", done
            told = json.dumps(fake.requests[1].body["messages"])
            assert "took control of the desktop" in told and "moved the mouse" in told
            with pytest.raises(InvalidStatus) as ended:  # no desktop anywhere any more
                vnc(r2, token, sid)
            assert ended.value.response.status_code == 409
            items = get(r2, token, f"/api/sessions/{sid}/events")["items"]
            kinds = [(e["type"], e["data"].get("status")) for e in items]
            assert ("status", "taken_over") in kinds
        finally:
            for r in replicas:
                r.stop()
