"""The one error hierarchy of deskpilot.

DeskpilotError
 ├── ConfigError            bad or missing settings (e.g. no API key)
 │    └── PolicyError       an approval policy (preset, rule, pattern) is invalid; the API answers 422
 ├── ToolError              a tool call the model made cannot run; becomes an ``is_error`` tool result
 │    └── ToolInputError    the input itself is malformed (missing field, bad coordinate, unknown key)
 ├── DesktopError           the desktop itself is broken
 │    ├── DesktopStartError a component did not come up
 │    └── DesktopLostError  a component (Xvfb, browser, daemon, container) died
 ├── AgentError             the model loop
 │    ├── ModelAuthError    the API rejected the key or the request (400/401/403): do not retry
 │    └── ModelUnavailable  retries ran out: the session pauses, it is not failed
 └── ServiceError           the web service; ``status`` is the HTTP code it maps to
      ├── NotFound (404), Conflict (409), Unauthorized (401), Forbidden (403), BadRequest (400)
      ├── Unprocessable (422): well-formed, but not something this service can do (e.g. an unknown provider)
      └── PayloadTooLarge (413), TooManyRequests (429), ServiceUnavailable (503)
"""

from __future__ import annotations


class DeskpilotError(Exception):
    """Base of every error deskpilot raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(DeskpilotError):
    pass


class PolicyError(ConfigError, ValueError):
    """An invalid approval policy. Also a ``ValueError``, so callers that validate input keep catching it."""


class ToolError(DeskpilotError):
    """A tool call that cannot run. The loop turns it into an ``is_error`` result for the model."""


class ToolInputError(ToolError):
    """The model's tool input is malformed."""


class DesktopError(DeskpilotError):
    pass


class DesktopStartError(DesktopError):
    pass


class DesktopLostError(DesktopError):
    pass


class AgentError(DeskpilotError):
    pass


class ModelAuthError(AgentError):
    pass


class ModelUnavailable(AgentError):
    pass


class ServiceError(DeskpilotError):
    status: int = 500


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Unprocessable(ServiceError):
    status = 422


class PayloadTooLarge(ServiceError):
    status = 413


class TooManyRequests(ServiceError):
    status = 429

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds; sent as the Retry-After header


class ServiceUnavailable(ServiceError):
    status = 503
