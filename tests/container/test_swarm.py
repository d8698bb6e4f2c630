"""The swarm desktop backend on a real single-node swarm: a Swarm service per desktop on an encrypted,
attachable overlay network the backend creates, its daemon reached over authenticated TCP on that network
and never published; a screenshot, a bash command and the VNC view; release and close leave nothing behind.

Only members of the overlay network reach the daemons, so the client (``tests/container/swarm_probe.py``)
runs in a container of the service image with this checkout mounted, started on a bridge network this test
creates; the backend connects it to the overlay network, as it would the service's own container. The
swarm is initialised on loopback only (``127.0.0.1``) and left again when this test initialised it.

End to end, the compose stack (``tests/container/stack.py``) runs with the swarm backend: the service
connects its own container to the overlay network, runs a task against the fake Messages API on a swarm
desktop, and ``down -v`` leaves no service, secret, container or network.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest
from click.testing import CliRunner

from deskpilot.errors import ConfigError
from deskpilot.settings import Settings
from desktop.backends.docker import DAEMON_CAPS
from desktop.backends.swarm import SwarmBackend
from desktop.daemon import desktopd_command
from desktop.sandbox import UID_BASE
from tests.container.conftest import IMAGE, unavailable
from tests.container.stack import PROJECT_LABEL, compose_stack, first_token, healthy, networks_named, run_task
from tests.container.test_images import ROOT, SERVICE_IMAGE
from tests.support.fake_messages import Reply, Request, reply, text, tool_use
from tests.web.conftest import wait_for

SWARM_LABEL = "deskpilot.backend=swarm"
GWBRIDGE = "docker_gwbridge"  # the bridge a swarm gives its containers for egress, created on first use


@pytest.fixture
def swarm(engine: Any) -> Iterator[None]:
    for image in (SERVICE_IMAGE, IMAGE):
        try:
            engine.images.get(image)
        except docker.errors.ImageNotFound:
            unavailable(f"the image {image} is not built")
    state = engine.info()["Swarm"]
    created = state["LocalNodeState"] == "inactive"
    had_gwbridge = bool(networks_named(engine, GWBRIDGE))
    if created:
        engine.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377", data_path_addr="127.0.0.1")
    elif not state.get("ControlAvailable"):
        unavailable("this engine is in a swarm but is not a manager")
    try:
        yield
    finally:
        if created:
            engine.swarm.leave(force=True)
            if not had_gwbridge:
                # Its last endpoint (the swarm's ingress sandbox) goes shortly after the swarm is left.
                wait_for(lambda: _remove_all(networks_named(engine, GWBRIDGE)), timeout=30, interval=0.5)


def _remove_all(networks: list[Any]) -> bool:
    """True once every network given is removed."""
    for network in networks:
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            return False
    return True


@pytest.mark.docker
def test_swarm_backend_serves_a_desktop_over_its_overlay_network_and_leaves_nothing(
        swarm: None, engine: Any) -> None:
    tag = f"dps-{secrets.token_hex(4)}"
    overlay, probe_name = f"{tag}-desktops", f"{tag}-probe"
    client_net = engine.networks.create(f"{tag}-client", driver="bridge", internal=True)
    probe = None
    try:
        probe = engine.containers.run(
            SERVICE_IMAGE, name=probe_name, detach=True, network=client_net.name, working_dir="/tmp",
            entrypoint=["/opt/deskpilot/bin/python", "/src/tests/container/swarm_probe.py"],
            environment={"PYTHONPATH": "/src", "DESKPILOT_DATA_DIR": "/tmp/deskpilot",
                         "DESKPILOT_DESKTOP_BACKEND": "swarm", "DESKPILOT_DOCKER_IMAGE": IMAGE,
                         "DESKPILOT_SWARM_NETWORK": overlay, "DESKPILOT_SWARM_ATTACH_CONTAINER": probe_name,
                         "DESKPILOT_SWARM_CONSTRAINTS": '["node.role==manager"]',
                         "DESKPILOT_SWARM_CPU_RESERVATION": "0.25", "DESKPILOT_SWARM_MEMORY_RESERVATION": "256m",
                         "DESKPILOT_DESKTOP_START_TIMEOUT_S": "90"},
            volumes={str(ROOT): {"bind": "/src", "mode": "ro"},
                     "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
            user="deskpilot", group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
            read_only=True, tmpfs={"/tmp": "rw,size=64m,mode=1777", "/data": "rw,size=16m,mode=1777"}, cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"], labels={"deskpilot.test": "swarm-probe"})
        exit_code = probe.wait(timeout=300)["StatusCode"]
        logs = probe.logs().decode(errors="replace")
        lines = [line for line in logs.splitlines() if line.startswith("PROBE ")]
        assert exit_code == 0 and lines, logs[-3000:]
        report: dict[str, Any] = json.loads(lines[-1][len("PROBE "):])
        assert "error" not in report, report["error"]

        assert report["backend"] == "SwarmBackend"
        # The overlay network the backend created: encrypted and attachable.
        network = report["network"]
        assert network["Driver"] == "overlay" and network["Attachable"] is True
        assert "encrypted" in network["Options"]
        # One replicated service per desktop, reached by name on the overlay, nothing published.
        service = report["service"]
        spec, task = service["spec"], service["spec"]["TaskTemplate"]
        assert report["base_url"] == f"http://{spec['Name']}:7000"
        assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
        assert spec["EndpointSpec"]["Mode"] == "dnsrr" and not spec["EndpointSpec"].get("Ports")
        assert not service["endpoint"].get("Ports") and not service["endpoint"].get("VirtualIPs")
        assert [n["Target"] for n in task["Networks"]] == [network["Id"]]
        # The Docker backend's hardening, as far as Swarm carries it.
        container = task["ContainerSpec"]
        # Root with only the daemon's three capabilities: it keeps the secret; the model's programs run as
        # a sandbox uid with none (desktop/sandbox.py).
        assert container["User"] == "0:0" and container["ReadOnly"] is True
        assert container["CapabilityDrop"] == ["ALL"] and sorted(container["CapabilityAdd"]) == sorted(DAEMON_CAPS)
        assert {m["Target"] for m in container["Mounts"] if m["Type"] == "tmpfs"} >= {"/tmp", "/dev/shm"}
        assert [s["File"]["Name"] for s in container["Secrets"]] == ["deskpilot-token"]
        assert not any("TOKEN" in e for e in container.get("Env", []))
        assert task["RestartPolicy"]["Condition"] == "none"
        assert task["Placement"]["Constraints"] == ["node.role==manager"]
        limits, reservations = task["Resources"]["Limits"], task["Resources"]["Reservations"]
        assert limits["NanoCPUs"] == 10**9 and limits["MemoryBytes"] == 2 * 1024**3 and limits["Pids"] == 512
        assert reservations == {"NanoCPUs": 250_000_000, "MemoryBytes": 256 * 1024**2}
        task_container = report["container"]
        assert task_container["HostConfig"]["ReadonlyRootfs"] is True
        assert not task_container["HostConfig"]["PortBindings"]
        # The desktop worked over TCP; the model's shell is a sandbox uid with no capabilities that can read
        # neither the token secret nor the daemon's environment; a wrong token is refused.
        assert report["screenshot"][0] > 0 and report["screenshot"][1] > 0
        uid, capeff = report["bash"].split("\n")[:2]
        assert int(uid) >= UID_BASE and capeff.split() == ["CapEff:", "0000000000000000"]
        assert "TOKEN-READ" not in report["bash"] and "ENVIRON-READ" not in report["bash"], report["bash"]
        assert report["vnc_greeting"].startswith("RFB 003.")
        assert "rejected the token" in report["wrong_token"]
        assert report["services_after_release"] == 0

        # Nothing left: services, secrets, the desktops' containers, the overlay network.
        assert engine.services.list(filters={"label": SWARM_LABEL}) == []
        assert engine.secrets.list(filters={"label": SWARM_LABEL}) == []
        assert engine.containers.list(all=True, filters={"label": "deskpilot.session=sess-swarm"}) == []
        assert networks_named(engine, overlay) == []
    finally:
        if probe is not None:
            with contextlib.suppress(docker.errors.NotFound):
                probe.remove(force=True, v=True)
        _remove_leftovers(engine, overlay)
        with contextlib.suppress(docker.errors.APIError):
            client_net.remove()


@pytest.mark.docker
def test_a_task_runs_end_to_end_on_a_swarm_desktop_from_the_composed_service(swarm: None, engine: Any) -> None:
    # The compose stack, with the swarm backend: the service connects its own container to the overlay network.
    env = {"DESKPILOT_DESKTOP_BACKEND": "swarm", "DESKPILOT_SWARM_NETWORK": "{project}-desktops",
           "DESKPILOT_SWARM_ATTACH_CONTAINER": "{project}_deskpilot_1"}
    with compose_stack(engine, env) as stack:
        overlay = f"{stack.project}-desktops"
        try:
            up = stack.run("up", "-d", "--no-build")
            assert up.returncode == 0, up.stderr[-3000:]
            service = engine.containers.get(stack.service_container)
            assert healthy(stack.url)["tasks_can_run"] is True
            token = first_token(service)
            seen: list[Any] = []

            def seen_it(request: Request) -> Reply:
                seen.extend(engine.services.list(filters={"label": SWARM_LABEL}))
                return reply(text("Seen it."))

            stack.fake.script(reply(text("Looking."), tool_use("computer", {"action": "screenshot"})), seen_it)
            with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                final = run_task(c, "look")
            assert final["status"] == "succeeded", final.get("error")
            assert len(stack.fake.requests[1].images) == 1  # the screenshot came from the swarm desktop
            assert len(seen) == 1 and [n["Target"] for n in seen[0].attrs["Spec"]["TaskTemplate"]["Networks"]] \
                == [networks_named(engine, overlay)[0].id]
            service.reload()
            assert set(service.attrs["NetworkSettings"]["Networks"]) == {stack.network, overlay}
            # Released at the task's end: its service, then its secret.
            wait_for(lambda: not engine.services.list(filters={"label": SWARM_LABEL})
                     and not engine.secrets.list(filters={"label": SWARM_LABEL}), timeout=60, interval=0.2)

            down = stack.run("down", "-v", "--timeout", "20")
            assert down.returncode == 0, down.stderr[-3000:]
            assert engine.services.list(filters={"label": SWARM_LABEL}) == []
            assert engine.secrets.list(filters={"label": SWARM_LABEL}) == []
            assert engine.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={stack.project}"}) == []
            assert networks_named(engine, overlay) == [] and networks_named(engine, stack.network) == []
        finally:
            _remove_leftovers(engine, overlay)


def _remove_leftovers(engine: Any, overlay: str) -> None:
    """After a failed test: the desktop services, their secrets and the overlay network."""
    for service in engine.services.list(filters={"label": SWARM_LABEL}):
        service.remove()
    for secret in engine.secrets.list(filters={"label": SWARM_LABEL}):
        with contextlib.suppress(docker.errors.APIError):
            secret.remove()
    for network in networks_named(engine, overlay):
        with contextlib.suppress(docker.errors.APIError):
            network.remove()


def test_desktopd_listens_beyond_loopback_only_when_told_it_is_on_a_private_network(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 32)
    refused = CliRunner().invoke(desktopd_command, ["--host", "0.0.0.0", "--port", "7000", "--token-file", str(token)])
    assert refused.exit_code == 2 and "--private-network" in refused.output


@pytest.mark.docker
async def test_swarm_backend_on_an_engine_outside_a_swarm_says_how_to_fix_it(engine: Any, tmp_path: Path) -> None:
    if engine.info()["Swarm"]["LocalNodeState"] != "inactive":
        pytest.skip("this engine is in a swarm")
    backend = SwarmBackend(Settings(data_dir=tmp_path, desktop_backend="swarm"), engine=engine)
    with pytest.raises(ConfigError, match="swarm manager"):
        await backend.start()
    await backend.aclose()
