"""The desktop backend chosen by ``DESKPILOT_DESKTOP_BACKEND`` (imported lazily: Docker SDK, X libraries)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deskpilot.errors import ConfigError
from deskpilot.settings import Settings
from desktop.backends.base import DesktopBackend

if TYPE_CHECKING:  # mypy checks here that every backend implements the protocol
    from desktop.backends.docker import DockerBackend
    from desktop.backends.kubernetes import KubernetesBackend
    from desktop.backends.local import LocalBackend
    from desktop.backends.swarm import SwarmBackend

    _IMPLEMENTATIONS: tuple[type[DesktopBackend], ...] = (LocalBackend, DockerBackend, SwarmBackend,
                                                          KubernetesBackend)

BACKENDS = {"local": "desktop.backends.local:LocalBackend", "docker": "desktop.backends.docker:DockerBackend",
            "swarm": "desktop.backends.swarm:SwarmBackend",
            "kubernetes": "desktop.backends.kubernetes:KubernetesBackend"}


def make_backend(settings: Settings) -> DesktopBackend:
    target = BACKENDS.get(settings.desktop_backend)
    if target is None:
        raise ConfigError(f"unknown desktop backend {settings.desktop_backend!r}")
    module_name, attr = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"desktop backend {settings.desktop_backend!r} is not available: {exc}") from exc
    backend: DesktopBackend = cls(settings)
    return backend
