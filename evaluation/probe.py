"""The harness's hands on a task's desktop: setup steps before the agent starts, getters after it finished.

Both go straight to the desktop daemon (its bearer token is the harness's, never the model's): browser
state through the daemon's DevTools pipe (``desktop.browser_query``), files and commands through the desktop's
shell, wrapped so nothing the agent left in that shell (aliases, functions, a changed PATH or directory)
changes what a getter reads.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shlex
from typing import Any

from deskpilot.errors import ConfigError, DesktopError
from desktop.browser_query import open_url, query_browser, set_download_dir
from desktop.client import DesktopClient

FILE_CAP = 10_000  # bytes a file getter reads (the shell's output is capped; base64 grows it by a third)
_CLEAN = "command env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=\"$HOME\" DISPLAY=\"$DISPLAY\" " \
         "XAUTHORITY=\"$XAUTHORITY\" /bin/bash --noprofile --norc -c "

# getter type -> browser query; OSWorld's names for the same reads are accepted too.
BROWSER_GETTERS = {
    "active_url": "url", "active_tab_url": "url", "active_url_from_accessTree": "url", "url": "url",
    "active_title": "title", "page_title": "title", "selector_text": "text", "selector_texts": "texts",
    "selector_html": "html", "selector_count": "count", "form_value": "value", "form_values": "form",
    "local_storage": "local_storage", "cookies": "cookies", "tabs": "tabs", "open_tabs": "tabs",
    "clipboard": "clipboard", "scroll_y": "scroll_y",
}
OTHER_GETTERS = ("file", "vm_file", "command", "vm_command_line", "agent_answer", "constant")


async def shell(client: DesktopClient, command: str, timeout_s: float = 60.0) -> tuple[str, str]:
    """``(stdout, error)`` of ``command`` in a clean bash on the desktop; ``error`` is empty when it exited 0,
    else its exit code and stderr."""
    result = await asyncio.wait_for(client.tool("bash", {"command": _CLEAN + shlex.quote(command)}), timeout_s)
    if result.error:
        return "", result.error
    code = int(result.meta.get("exit_code", 0) or 0)
    # The bash tool returns stdout, then "[stderr]" and stderr, then "[exit code N]" when not 0.
    text = re.sub(r"\n?\[exit code -?\d+\]$", "", result.output)
    out, err = text, ""
    if text.startswith("[stderr]\n"):
        out, err = "", text[len("[stderr]\n"):]
    elif "\n[stderr]\n" in text:
        out, _, err = text.rpartition("\n[stderr]\n")
    return out, "" if code == 0 else f"exit code {code}: {err.strip()[-500:]}"


async def setup(client: DesktopClient, step: dict[str, Any]) -> None:
    """One ``config`` step (placeholders already filled). ``DesktopError`` when it cannot be done."""
    kind, params = step["type"], step.get("parameters", {})
    if kind == "open_url":
        await open_url(client, str(params["url"]), new_tab=bool(params.get("new_tab")))
    elif kind == "chrome_open_tabs":  # OSWorld: one tab per URL, the last one on screen
        for i, url in enumerate(params.get("urls_to_open", [])):
            await open_url(client, str(url), new_tab=i > 0)
    elif kind == "download_dir":
        await set_download_dir(client, str(params["path"]))
    elif kind == "create_file":
        path, content = str(params["path"]), params.get("content", "")
        data = base64.b64encode(content.encode() if isinstance(content, str) else bytes(content)).decode()
        mode = f" && chmod {int(params['mode']):o} {shlex.quote(path)}" if "mode" in params else ""
        _, error = await shell(client, f"mkdir -p -- \"$(dirname -- {shlex.quote(path)})\" && "
                                       f"printf %s {data} | base64 -d > {shlex.quote(path)}{mode}")
        if error:
            raise DesktopError(f"setup create_file {path}: {error}")
    elif kind in ("execute", "command"):
        command = params.get("command")
        text = shlex.join(map(str, command)) if isinstance(command, list) else str(command)
        _, error = await shell(client, text, float(params.get("timeout_s", 60)))
        if error and not params.get("ignore_errors"):
            raise DesktopError(f"setup command failed: {error}")
    elif kind == "sleep":
        await asyncio.sleep(float(params.get("seconds", 1)))
    # "screen" is applied when the desktop is made


async def get(client: DesktopClient, getter: dict[str, Any], answer: str | None) -> Any:
    """What ``getter`` reads on the desktop now (``answer``: the agent's last words, for ``agent_answer``)."""
    kind = getter["type"]
    if kind in BROWSER_GETTERS:
        return await query_browser(client, BROWSER_GETTERS[kind], getter.get("selector"), getter.get("key"))
    if kind in ("file", "vm_file"):
        path = shlex.quote(str(getter["path"]))
        out, error = await shell(client, f"test -f {path} && head -c {FILE_CAP} -- {path} | base64 -w0 "
                                         f"|| echo MISSING")
        if error:
            raise DesktopError(f"file getter: {error}")
        return None if out.strip() == "MISSING" else base64.b64decode(out.strip()).decode(errors="replace")
    if kind in ("command", "vm_command_line"):
        command = getter["command"]
        text = shlex.join(map(str, command)) if isinstance(command, list) else str(command)
        out, _error = await shell(client, text, float(getter.get("timeout_s", 60)))
        return out  # stdout, whatever the exit code: a checker may look for a failure's output
    if kind == "agent_answer":
        return answer or ""
    if kind == "constant":
        return getter.get("value")
    raise ConfigError(f"unknown getter {kind!r}; known: {', '.join([*BROWSER_GETTERS, *OTHER_GETTERS])}")
