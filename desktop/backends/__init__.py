"""Desktop backends: ``local`` (subprocesses on this host), ``docker`` (one container per session),
``swarm`` (one Docker Swarm service per session) and ``kubernetes`` (one Pod or agent-sandbox claim per session).

``get_backend()`` builds the one chosen by ``DESKPILOT_DESKTOP_BACKEND``.
"""

from __future__ import annotations

from deskpilot.settings import Settings
from desktop.backends.base import DesktopBackend, DesktopHandle


def get_backend(settings: Settings) -> DesktopBackend:
    if settings.desktop_backend == "docker":
        from desktop.backends.docker import DockerBackend  # type: ignore[import-not-found,unused-ignore]

        return DockerBackend(settings)  # type: ignore[no-any-return,unused-ignore]
    if settings.desktop_backend == "swarm":
        from desktop.backends.swarm import SwarmBackend

        return SwarmBackend(settings)
    if settings.desktop_backend == "kubernetes":
        from desktop.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    from desktop.backends.local import LocalBackend

    return LocalBackend(settings)


__all__ = ["DesktopBackend", "DesktopHandle", "get_backend"]
