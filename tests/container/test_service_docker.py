"""End to end through the service with ``DESKPILOT_DESKTOP_BACKEND=docker``: the real SDK talks to the fake
Messages API, the session's desktop is a container, and the containerized browser records the click."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import numpy as np
import pytest
from PIL import Image

from desktop.backends.docker import LABEL_INSTANCE, LABEL_SESSION, instance_id, run_root_of
from tests.container.conftest import IMAGE
from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.support.testpage import BIG_BUTTON_RGB, TestPageServer
from tests.web.conftest import Service, events, start_service, stop_service, wait_for, wait_status

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_service(engine: Any, run_root: Path) -> Iterator[tuple[Service, FakeMessages, TestPageServer]]:
    with FakeMessages() as fake, TestPageServer() as page:
        svc = start_service(run_root / "data", anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0, desktop_backend="docker", docker_image=IMAGE,
                            docker_network="host", docker_warm_pool=0, browser_start_url=page.url,
                            desktop_start_timeout_s=90)
        try:
            yield svc, fake, page
        finally:
            stop_service(svc)
            # The runner releases live desktops on stop; remove anything a failed test left (ours only).
            mine = f"{LABEL_INSTANCE}={instance_id(run_root_of(svc.settings))}"
            for c in engine.containers.list(all=True, filters={"label": mine}):
                c.remove(force=True)


def session_containers(engine: Any, sid: str) -> list[Any]:
    """A cold desktop carries the session in a label; a pooled one gets it in its name when taken."""
    for _ in range(10):
        try:
            labelled = engine.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={sid}"})
            named = engine.containers.list(all=True, filters={"name": f"-s-{sid}"})
        except docker.errors.NotFound:  # removed between the listing and its inspect: list again
            continue
        return list({c.id: c for c in [*labelled, *named]}.values())
    raise AssertionError("containers kept vanishing while being listed")


def pool_containers(engine: Any, svc: Service) -> list[Any]:
    mine = f"{LABEL_INSTANCE}={instance_id(run_root_of(svc.settings))}"
    return [c for c in engine.containers.list(filters={"label": [mine, f"{LABEL_SESSION}="]}) if "-s-" not in c.name]


def magenta_centre(png: bytes) -> list[int]:
    """Where the test page's big magenta button is on the screenshot: what a model would click."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    near = (np.abs(pixels - np.array(BIG_BUTTON_RGB, dtype=np.int16)) < 24).all(axis=2)
    ys, xs = np.nonzero(near)
    assert len(xs) > 1000, "the big button is not on the screenshot"
    return [int(xs.min() + xs.max()) // 2, int(ys.min() + ys.max()) // 2]


def click_the_button(req: Request) -> Reply:
    return reply(text("I see the button; clicking it."),
                 tool_use("computer", {"action": "left_click", "coordinate": magenta_centre(req.images[-1])}))


def test_a_session_drives_a_click_in_its_own_desktop_container(
        docker_service: tuple[Service, FakeMessages, TestPageServer], engine: Any) -> None:
    svc, fake, page = docker_service
    fake.script(
        reply(text("Let me look."), tool_use("computer", {"action": "screenshot"})),
        click_the_button,
        reply(text("Clicked the big button.")),
    )
    with svc.client("alice") as c:
        body = {"task": "click the big button", "policy": {"preset": "autonomous"},
                "screen": {"width": 1024, "height": 768}}
        r = c.post("/api/sessions", json=body)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
    # The desktop is a container labelled with the session while it runs.
    running = wait_for(lambda: session_containers(engine, sid), timeout=120)
    assert running[0].labels["deskpilot.managed"] == "1"
    final = wait_status(svc, sid, "succeeded", "failed", timeout=180)
    assert final["status"] == "succeeded", final.get("error")
    assert final["result"] == "Clicked the big button."
    clicks = page.wait_for("click")
    assert clicks[-1]["target"] == "big-button"
    evs = events(svc, sid)
    results = [e for e in evs if e["type"] == "tool_result"]
    assert len(results) == 2 and all(e["data"]["is_error"] is False for e in results)
    # The session ended, so its container is gone.
    wait_for(lambda: not session_containers(engine, sid), timeout=60)


def test_a_killed_desktop_container_fails_the_session_clearly_and_keeps_its_transcript(
        docker_service: tuple[Service, FakeMessages, TestPageServer], engine: Any) -> None:
    svc, fake, _page = docker_service
    sid_box: dict[str, str] = {}

    def kill_then_act(req: Request) -> Reply:
        for c in session_containers(engine, sid_box["sid"]):
            c.kill()
        return reply(text("Taking another look."), tool_use("computer", {"action": "screenshot"}))

    fake.script(reply(text("Let me look."), tool_use("computer", {"action": "screenshot"})), kill_then_act,
                reply(text("unreachable")))
    with svc.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "look twice", "policy": {"preset": "autonomous"}})
        assert r.status_code == 201, r.text
        sid_box["sid"] = sid = r.json()["id"]
    final = wait_status(svc, sid, "succeeded", "failed", "paused", timeout=180)
    assert final["status"] == "failed", final
    assert "desktop was lost" in (final["error"] or ""), final
    evs = events(svc, sid)
    # The transcript says what happened to the container, not just that a socket stopped answering.
    lost = [e["data"]["message"] for e in evs if e["type"] == "error" and e["data"].get("kind") == "desktop_lost"]
    assert len(lost) == 1 and "container" in lost[0] and "exit code 137" in lost[0], lost
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    first = next(e for e in evs if e["type"] == "tool_result")
    assert first["data"]["is_error"] is False and first["image"]
    texts = [e["data"].get("text") for e in evs if e["type"] == "assistant_text"]
    assert "Let me look." in texts and "Taking another look." in texts
    assert len(fake.requests) == 2  # the model was not asked again after the desktop was lost
    wait_for(lambda: not session_containers(engine, sid), timeout=60)


@pytest.fixture
def pooled_service(engine: Any, run_root: Path) -> Iterator[tuple[Service, FakeMessages]]:
    with FakeMessages() as fake:
        svc = start_service(run_root / "data", anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0, desktop_backend="docker", docker_image=IMAGE,
                            docker_network="host", docker_warm_pool=1, desktop_start_timeout_s=90)
        try:
            yield svc, fake
        finally:
            stop_service(svc)
            mine = f"{LABEL_INSTANCE}={instance_id(run_root_of(svc.settings))}"
            for c in engine.containers.list(all=True, filters={"label": mine}):
                c.remove(force=True)


def test_the_next_session_takes_a_prestarted_desktop_from_the_pool(
        pooled_service: tuple[Service, FakeMessages], engine: Any) -> None:
    svc, fake = pooled_service
    sids: list[str] = []
    for i in range(2):
        # The service starts its backend at start-up, so even the first session finds a started desktop in the
        # pool; between sessions the pool holds one again (labelled for no session).
        backend = svc.app.state.runner.backend()
        warm_ids = wait_for(backend.pool_ids, timeout=120)
        warm = pool_containers(engine, svc)
        assert [c.id for c in warm] == warm_ids
        seen: list[str] = []

        def finish(req: Request, i: int = i, seen: list[str] = seen) -> Reply:
            # Asked while the session still holds its desktop: which container is it?
            seen.extend(c.id for c in session_containers(engine, sids[-1]))
            return reply(text(f"run {i} done"))

        fake.script(reply(tool_use("computer", {"action": "screenshot"})), finish)
        with svc.client("alice") as c:
            r = c.post("/api/sessions", json={"task": f"look {i}", "policy": {"preset": "autonomous"}})
            assert r.status_code == 201, r.text
            sids.append(r.json()["id"])
        final = wait_status(svc, sids[-1], "succeeded", "failed", timeout=180)
        assert final["status"] == "succeeded", final.get("error")
        # The pooled container served the session (its name said so), then left with it.
        assert seen == [warm[0].id]
        wait_for(lambda: not session_containers(engine, sids[-1]), timeout=60)
        assert all(c.id != warm[0].id for c in pool_containers(engine, svc))
        with pytest.raises(docker.errors.NotFound):
            engine.containers.get(warm[0].id)
