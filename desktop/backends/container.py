"""The one definition of a desktop's container, shared by every backend that runs the desktop image.

The Docker backend runs it as is; the cluster engines (Swarm, Kubernetes) translate it into their own specs,
so a hardening change here reaches all of them. Labels name what owns a desktop, so a restarted service
removes its orphans before it starts new desktops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deskpilot.settings import Settings

LABEL_MANAGED = "deskpilot.managed"
LABEL_INSTANCE = "deskpilot.instance"
LABEL_DESKTOP = "deskpilot.desktop"
LABEL_SESSION = "deskpilot.session"
CONTAINER_RUN_DIR = "/run/deskpilot"
EGRESS_SOCKET = "egress.sock"  # the desktop's only way out: its egress proxy, in the bind-mounted run dir
IMAGE_UID = 1000  # the desktop image's user (deskpilot)
# What the daemon keeps after becoming the run directory's owner: start and signal the sandbox's processes.
DAEMON_CAPS = ["SETUID", "SETGID", "KILL"]
# Paths inside the container: the root is read-only, so these are the only writable places (and /dev/shm).
WRITABLE_DIRS = {"/tmp": "rw,nosuid,nodev,size=1g,mode=1777",  # noqa: S108
                 "/home/deskpilot": "rw,nosuid,nodev,size=256m,mode=1777"}


def desktop_command(width: int, height: int, start_url: str, *, kiosk: bool) -> list[str]:
    """The daemon's arguments that say what desktop to run (its transport is the backend's)."""
    return ["--width", str(width), "--height", str(height), "--start-url", start_url,
            *(["--kiosk"] if kiosk else [])]


def container_args(settings: Settings, *, instance: str, name: str, key: str, run_dir: Path, width: int,
                   height: int, session_id: str, start_url: str, kiosk: bool) -> dict[str, Any]:
    """``docker run`` arguments (the Docker SDK's names) of one desktop container."""
    s = settings
    return {
        "image": s.docker_image,
        "command": [*desktop_command(width, height, start_url, kiosk=kiosk),
                    "--proxy-uds", f"{CONTAINER_RUN_DIR}/{EGRESS_SOCKET}"],
        "name": name,
        "detach": True,
        "labels": {LABEL_MANAGED: "1", LABEL_INSTANCE: instance, LABEL_DESKTOP: key, LABEL_SESSION: session_id},
        # Only what the desktop needs: nothing inherited from this process (the model key stays here).
        "environment": {"DESKPILOT_RUN_DIR": CONTAINER_RUN_DIR, "DESKPILOT_SCREEN_WIDTH": str(width),
                        "DESKPILOT_SCREEN_HEIGHT": str(height), "DESKPILOT_LOG_FORMAT": "json"},
        "volumes": {str(run_dir): {"bind": CONTAINER_RUN_DIR, "mode": "rw"}},
        # Root only until the daemon becomes the run directory's owner (--as-owner-of in the entrypoint).
        "user": "0:0",
        "network_mode": s.docker_network,
        "cap_drop": ["ALL"],
        "cap_add": DAEMON_CAPS,
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "pids_limit": s.docker_pids_limit,
        "mem_limit": s.docker_memory,
        "memswap_limit": s.docker_memory,
        "nano_cpus": int(s.docker_cpus * 1e9),
        "shm_size": s.docker_shm_size,
        "read_only": True,
        "tmpfs": dict(WRITABLE_DIRS),
        "restart_policy": {"Name": "no"},
    }
