"""Suite-wide hooks: the test tiers, and failures reported even through a CPython AST bug.

The tiers. ``desktop``: needs a real Xvfb / Chromium; ``docker``: a Docker engine and the desktop image;
``postgres``: the throwaway PostgreSQL cluster; ``service``: starts the whole service as a real process
(``deskpilot serve``: its start, its first token, its signals); ``fuzz``: the wide API fuzz. The fast tier is
``scripts/test-fast`` (``-m "not desktop and not docker and not postgres and not service and not fuzz"``); the
full suite runs everything.

Marks follow from the fixtures a test uses, so a new test cannot forget them; a test that starts a desktop
by itself carries ``pytest.mark.desktop``, one that reaches the cluster dynamically (``getfixturevalue``) a
``postgres`` mark on its parameter. One that forgets fails loudly instead of slowing the fast tier down: an
unmarked test finds an ``Xvfb`` on its PATH that refuses to start (as do the processes it spawns), and a
cluster that refuses to create its database; a fast-tier test that starts the service as a process
(``ServerProcess``) is refused too.
"""

from __future__ import annotations

import os
import stat
import sys
from collections import Counter
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.web.pg import PgCluster

SLOW_TIERS = ("desktop", "docker", "postgres", "service", "fuzz")
MARKED_BY_FIXTURE = {
    "desktop": frozenset({"make_desktop", "bare_display", "agent_service"}),
    "docker": frozenset({"engine"}),
    "postgres": frozenset({"pg_cluster"}),
}
REFUSING_XVFB = """#!/bin/sh
echo "deskpilot tests: a test not marked 'desktop' tried to start Xvfb; mark it (pytest.mark.desktop) \
or use a desktop fixture, so that the fast tier stays fast" >&2
exit 97
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _unique_node_ids(items)
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in MARKED_BY_FIXTURE.items():
            if used & fixtures and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


def _unique_node_ids(items: list[pytest.Item]) -> None:
    """schemathesis (4.32) names each operation's test ``test_x[GET /path]``, but pytest 9.2 builds a test's id
    from its original name and parameters only: all of them got one id, and pytest-xdist, which schedules by
    id, ran one operation of 23. Each gets the id its name says (pytest's own NodeId, private in 9.2)."""
    count = Counter(item.nodeid for item in items)
    for item in items:
        if count[item.nodeid] > 1 and isinstance(item, pytest.Function) and item.name.startswith(
                f"{item.originalname}[") and isinstance(item.parent, pytest.Module):
            params = item.name[len(item.originalname) + 1:-1]
            item._id = item.parent.id.child(item.originalname).with_params(params)  # type: ignore[attr-defined]
    if any(n > 1 for n in Counter(item.nodeid for item in items).values()):
        raise pytest.UsageError("tests with the same node id: pytest-xdist would run only one of each")


@pytest.fixture(scope="session")
def refusing_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refusing-bin")
    xvfb = path / "Xvfb"
    xvfb.write_text(REFUSING_XVFB)
    xvfb.chmod(xvfb.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(autouse=True)
def _tiers_are_honest(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("postgres") is None:
        monkeypatch.setattr(PgCluster, "create_database", _refuse_database)
    # Tests import ServerProcess at module level; looked up, not imported, so a worker without them stays light.
    procs = sys.modules.get("tests.web.procs")
    if procs is not None and not any(request.node.get_closest_marker(tier) for tier in SLOW_TIERS):
        monkeypatch.setattr(procs.ServerProcess, "start", _refuse_service)
    if request.node.get_closest_marker("desktop") or request.node.get_closest_marker("docker"):
        return
    refusing: Path = request.getfixturevalue("refusing_bin")
    monkeypatch.setenv("PATH", f"{refusing}{os.pathsep}{os.environ.get('PATH', '')}")


def _refuse_database(self: PgCluster) -> str:
    raise RuntimeError("deskpilot tests: a test not marked 'postgres' asked for a PostgreSQL database; mark it "
                       "(pytest.mark.postgres, or on its parameter), so that the fast tier stays fast")


def _refuse_service(self: object) -> None:
    raise RuntimeError("deskpilot tests: a fast-tier test started the service as a process; mark it "
                       "(pytest.mark.service), or test in-process (the app, or tests/support/cli.py)")


# CPython before 3.11.8 / 3.12.1 (gh-106905) can raise "SystemError: AST constructor recursion depth
# mismatch" from ast.parse after an error during an earlier AST conversion. pytest calls ast.parse to
# show a failing test's source, so a failure could end the whole run as an INTERNALERROR (the
# hypothesis plugin's hook wrapper turns it into a PluggyTeardownRaisedWarning, an error under
# filterwarnings=error) instead of being reported. Our Pythons are 3.11.7 (pyenv) and Debian's 3.11.2.
_AST_BUG = "AST constructor recursion depth mismatch"


@pytest.hookimpl(wrapper=True, trylast=True)  # innermost: before any plugin's wrapper sees the error
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    try:
        return (yield)
    except SystemError as exc:
        if _AST_BUG not in str(exc):
            raise
        # Report the failure with the plain Python traceback, which needs no ast.parse.
        option = item.config.option
        style = option.tbstyle
        option.tbstyle = "native"
        try:
            return pytest.TestReport.from_item_and_call(item, call)
        finally:
            option.tbstyle = style
