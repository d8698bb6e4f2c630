"""The service fixtures of tests/web (a real uvicorn + SQLite + local desktops + the fake Messages API)."""

from tests.web.conftest import agent_service  # noqa: F401  (a fixture, used by name)
