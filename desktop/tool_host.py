"""The daemon's tool dispatcher: parses calls, builds tools lazily, turns failures into ``ToolResult``s.

The computer tool and the frame grabber live on the daemon's X thread (``run_on_x`` runs a coroutine there);
bash and the editor run on the server's own loop. Calls to one tool are serialised.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from deskpilot.errors import DesktopLostError, ToolError
from deskpilot.settings import Settings
from desktop.sandbox import Sandbox
from desktop.scaling import Scaler
from desktop.settle import SettleRule
from desktop.tools.base import ToolResult
from desktop.windows import ActiveWindow, WindowInfo

log = logging.getLogger(__name__)
T = TypeVar("T")
RunOnX = Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]

COMPUTER_VERSIONS = ("computer_20250124", "computer_20251124")
DEFAULT_VERSION = COMPUTER_VERSIONS[0]
TOOL_NAMES = ("computer", "bash", "str_replace_based_edit_tool")


class Tool(Protocol):
    async def run(self, input: dict[str, Any]) -> ToolResult: ...


class ToolHost:
    """``sandbox``: the identity bash and the editor's file I/O run as (``desktop.sandbox``)."""

    def __init__(self, display: str, run_on_x: RunOnX, sandbox: Sandbox, settings: Settings) -> None:
        self.display = display
        self._run_on_x = run_on_x
        self._sandbox = sandbox
        self._settings = settings
        self._settle = SettleRule.from_settings(settings)
        self._tools: dict[str, Tool] = {}
        self._locks = {name: asyncio.Lock() for name in TOOL_NAMES}
        self._screen: Any = None  # desktop.screen.Screenshotter, created on the X thread
        self._windows: ActiveWindow | None = None  # its own X connection, also only used on the X thread

    @staticmethod
    def knows(name: str) -> bool:
        return name in TOOL_NAMES

    @staticmethod
    def parse_call(body: bytes) -> tuple[dict[str, Any], str] | str:
        """``(input, version)`` from a request body, or the reason it is not ``{"input": {...}, "version"?}``."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return "body is not JSON"
        if not isinstance(data, dict) or not isinstance(data.get("input"), dict):
            return 'body must be a JSON object {"input": {...}, "version": "..."}'
        version = data.get("version", DEFAULT_VERSION)
        if version is None:
            version = DEFAULT_VERSION
        if not isinstance(version, str):
            return "version must be a string"
        extra = set(data) - {"input", "version"}
        if extra:
            return f"unexpected fields: {', '.join(sorted(extra))}"
        return data["input"], version

    @staticmethod
    def model_size(width: int, height: int) -> tuple[int, int]:
        return Scaler.for_screen(width, height).model_size

    async def call(self, name: str, tool_input: dict[str, Any], version: str) -> ToolResult:
        """Run one call; every failure becomes a ``ToolResult`` with ``error`` (never an exception)."""
        on_x = name == "computer"
        async with self._locks[name]:
            try:
                tool = await self._tool(name, version)
                if on_x:
                    result: ToolResult = await self._run_on_x(tool.run(tool_input))
                elif name == "str_replace_based_edit_tool":
                    # The editor has versions of its own; a computer version here just means "the default".
                    editor_version = version if version.startswith("text_editor_") else None
                    result = await tool.run(tool_input, version=editor_version)  # type: ignore[call-arg]
                else:
                    result = await tool.run(tool_input)
                return result
            except ToolError as exc:
                result = ToolResult(error=exc.message)
                return await self._with_screenshot(result) if on_x else result
            except DesktopLostError as exc:
                return ToolResult(error=exc.message)
            except Exception as exc:  # a bug in a tool must not take the daemon down
                log.exception("tool %s failed", name)
                return ToolResult(error=f"internal error: {type(exc).__name__}")

    async def warm_up(self) -> None:
        """Build the default computer tool now, so the model's first call does not pay for it."""
        async with self._locks["computer"]:
            try:
                await self._tool("computer", DEFAULT_VERSION)
            except Exception:  # the first real call will report it
                log.warning("computer tool warm-up failed", exc_info=True)

    async def _tool(self, name: str, version: str) -> Tool:
        if name == "computer":
            if version not in COMPUTER_VERSIONS:
                raise ToolError(f"unknown computer tool version {version!r}; "
                                f"known: {', '.join(COMPUTER_VERSIONS)}")
            key = version
        else:
            key = name
        tool = self._tools.get(key)
        if tool is None:
            if name == "computer":
                tool = await self._run_on_x(self._make_on_x(
                    lambda: make_computer(version, self.display, self._settle)))
            elif name == "bash":
                tool = make_bash(self.display, self._sandbox, self._settings)
            else:
                tool = make_editor(self._sandbox, self._settings)
            self._tools[key] = tool
        return tool

    @staticmethod
    async def _make_on_x(factory: Callable[[], T]) -> T:
        return factory()

    async def _with_screenshot(self, result: ToolResult) -> ToolResult:
        """Attach the screen so the model sees the state its failed action left behind."""
        async def grab() -> bytes:
            return self._screenshotter().screenshot()  # type: ignore[no-any-return]
        try:
            image: bytes = await self._run_on_x(grab())
        except Exception:
            log.warning("no screenshot for a failed computer call", exc_info=True)
            return result
        return ToolResult(output=result.output, error=result.error, image=image, system=result.system,
                          meta=result.meta)

    def _screenshotter(self) -> Any:
        if self._screen is None:
            from desktop.screen import Screenshotter

            self._screen = Screenshotter(self.display, rule=self._settle)
        return self._screen

    async def frame(self, quality: int, max_width: int, if_none_match: str | None) -> tuple[str, bytes | None]:
        """``(etag, jpeg)``; ``jpeg`` is None when ``if_none_match`` still matches."""
        async def grab() -> tuple[str, bytes | None]:
            frame = self._screenshotter().frame_jpeg(quality, max_width, if_none_match)
            return frame.etag, frame.data
        try:
            result: tuple[str, bytes | None] = await self._run_on_x(grab())
        except DesktopLostError:
            raise
        except Exception as exc:  # Xlib/mss errors when the X server is gone
            raise DesktopLostError(f"cannot grab a frame: {type(exc).__name__}") from exc
        return result

    async def active_window(self) -> WindowInfo:
        """The active window's id and title (``DesktopLostError`` when the X server is gone)."""
        async def read() -> WindowInfo:
            if self._windows is None:
                self._windows = ActiveWindow(self.display)
            return self._windows.read()
        info: WindowInfo = await self._run_on_x(read())
        return info

    async def close(self) -> None:
        """Close every tool (X ones on the X thread) and the frame grabber."""
        for key, tool in self._tools.items():
            outcome = _close(tool)
            if outcome is not None:
                await (self._run_on_x(outcome) if key in COMPUTER_VERSIONS else outcome)
        self._tools.clear()
        if self._screen is not None:
            screen, self._screen = self._screen, None
            await self._run_on_x(_closing(screen))
        if self._windows is not None:
            windows, self._windows = self._windows, None
            await self._run_on_x(_closing(windows))


def _close(obj: object) -> Coroutine[Any, Any, None] | None:
    return _closing(obj) if getattr(obj, "close", None) is not None else None


async def _closing(obj: Any) -> None:
    try:
        outcome = obj.close()
        if asyncio.iscoroutine(outcome):
            await outcome
    except Exception:
        log.warning("closing %s failed", type(obj).__name__, exc_info=True)


def make_computer(version: str, display: str, settle: SettleRule) -> Tool:
    module = importlib.import_module("desktop.tools.computer")
    cls = getattr(module, "ComputerTool" + version.rsplit("_", 1)[1])
    return cls(display, settle=settle)  # type: ignore[no-any-return]


def make_bash(display: str, sandbox: Sandbox, settings: Settings) -> Tool:
    from desktop.tools.bash import BashTool

    return BashTool(display, sandbox=sandbox, timeout_s=settings.bash_timeout_s, output_cap=settings.bash_output_cap)


def make_editor(sandbox: Sandbox, settings: Settings) -> Tool:
    from desktop.tools.editor_proc import SandboxedEditor

    return SandboxedEditor(sandbox, view_cap=settings.editor_view_cap)

