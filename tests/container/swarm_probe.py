"""The swarm test's client, run inside a container (the service image, this checkout mounted read-only and
first on ``PYTHONPATH``), because only a member of the overlay network reaches the desktops' daemons.

It builds the backend the way the service does (``web.desktops.make_backend`` from ``DESKPILOT_*``), which
connects this container to the overlay network; acquires a desktop, takes a screenshot, runs a bash
command, opens the VNC view, checks that a wrong token is refused, releases it and closes the backend.
It prints one JSON line of what it saw (the test asserts on it) and exits 0 even when a step failed
(``error`` says which).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import traceback
from typing import Any

from PIL import Image

from deskpilot.errors import DesktopError
from deskpilot.settings import Settings
from desktop.client import DesktopClient
from web.desktops import make_backend


async def probe(report: dict[str, Any]) -> None:
    settings = Settings()
    backend = make_backend(settings)
    engine = backend.engine()
    report["backend"] = type(backend).__name__
    try:
        handle = await backend.acquire("sess-swarm", 1024, 768)
        report["base_url"] = handle.client.base_url
        service = engine.services.get(handle.extra["service"])
        report["service"] = {"id": service.id, "spec": service.attrs["Spec"],
                             "endpoint": service.attrs.get("Endpoint", {})}
        containers = engine.containers.list(filters={"label": f"com.docker.swarm.service.id={service.id}"})
        report["container"] = containers[0].attrs if containers else None
        report["network"] = engine.networks.get(settings.swarm_network).attrs

        shot = await handle.client.screenshot()
        assert shot.image is not None, shot.error
        report["screenshot"] = list(Image.open(io.BytesIO(shot.image)).size)
        bash = await handle.client.tool("bash", {"command": "id -u; grep CapEff /proc/self/status; "
                                                 "cat /run/secrets/deskpilot-token && echo TOKEN-READ; "
                                                 "cat /proc/1/environ && echo ENVIRON-READ; true"})
        report["bash"] = bash.output or bash.error
        async with handle.client.vnc_connect(view_only=True) as ws:  # the live view's path, over the overlay
            greeting = await asyncio.wait_for(ws.recv(), 30)
        report["vnc_greeting"] = bytes(greeting[:12]).decode() if isinstance(greeting, bytes) else greeting
        async with DesktopClient(handle.client.base_url, token="x" * 43, timeout_s=30) as wrong:
            try:
                await wrong.info()
                report["wrong_token"] = "accepted"
            except DesktopError as exc:
                report["wrong_token"] = exc.message

        await backend.release(handle)
        report["services_after_release"] = len(engine.services.list(filters={"label": "deskpilot.backend=swarm"}))
    finally:
        await backend.aclose()


def main() -> None:
    report: dict[str, Any] = {}
    try:
        asyncio.run(probe(report))
    except BaseException:
        report["error"] = traceback.format_exc()[-3000:]
    sys.stdout.write("PROBE " + json.dumps(report, default=str) + "\n")


if __name__ == "__main__":
    main()
