"""Desktop backends: ``local`` (subprocesses on this host) and ``docker`` (one container per session).

``get_backend()`` builds the one chosen by ``DESKPILOT_DESKTOP_BACKEND``.
"""

from __future__ import annotations

from deskpilot.settings import Settings, get_settings
from desktop.backends.base import DesktopBackend, DesktopHandle


def get_backend(settings: Settings | None = None) -> DesktopBackend:
    settings = settings or get_settings()
    if settings.desktop_backend == "docker":
        from desktop.backends.docker import DockerBackend  # type: ignore[import-not-found,unused-ignore]

        return DockerBackend(settings)  # type: ignore[no-any-return,unused-ignore]
    from desktop.backends.local import LocalBackend

    return LocalBackend(settings)


__all__ = ["DesktopBackend", "DesktopHandle", "get_backend"]
