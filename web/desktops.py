"""The desktop backend chosen by ``DESKPILOT_DESKTOP_BACKEND`` (imported lazily: Docker SDK, X libraries)."""

from __future__ import annotations

import importlib
from typing import Any

from deskpilot.errors import ConfigError
from deskpilot.settings import Settings

BACKENDS = {"local": "desktop.backends.local:LocalBackend", "docker": "desktop.backends.docker:DockerBackend",
            "swarm": "desktop.backends.swarm:SwarmBackend"}


def make_backend(settings: Settings) -> Any:
    target = BACKENDS.get(settings.desktop_backend)
    if target is None:
        raise ConfigError(f"unknown desktop backend {settings.desktop_backend!r}")
    module_name, attr = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"desktop backend {settings.desktop_backend!r} is not available: {exc}") from exc
    return cls(settings)
