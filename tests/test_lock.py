"""The lock files agree with pyproject.toml, with each other, and with how everything installs them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: str) -> dict[str, str]:
    found: dict[str, str] = {}
    text = (ROOT / lock).read_text()
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(r) for r in reqs]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    dev = pins("requirements-dev.lock")
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in dev, f"{req.name} is in pyproject.toml but not in requirements-dev.lock: run scripts/lock"
        assert req.specifier.contains(dev[name], prereleases=True), (
            f"requirements-dev.lock pins {req.name}=={dev[name]}, outside {req}: run scripts/lock")


def test_every_pin_has_hashes_and_the_runtime_lock_matches_the_dev_lock() -> None:
    for lock in ("requirements-dev.lock", "requirements.lock"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
        for entry in entries:
            if _PIN.match(entry):
                assert "--hash=sha256:" in entry, f"{lock}: {entry.splitlines()[0]} has no hash"
    dev, runtime = pins("requirements-dev.lock"), pins("requirements.lock")
    assert runtime, "requirements.lock pins nothing"
    assert {name: dev.get(name) for name in runtime} == runtime


def test_installs_use_the_lock_without_resolving() -> None:
    bootstrap = (ROOT / "scripts/bootstrap").read_text()
    assert "--require-hashes --no-deps -r requirements-dev.lock" in bootstrap
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in dockerfile
    assert (ROOT / ".python-version").read_text().strip() == "3.11"
