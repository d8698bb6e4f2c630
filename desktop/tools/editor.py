"""The text editor tool (``str_replace_based_edit_tool``), with the reference tool's semantics and wording.

Versions: ``text_editor_20250124`` (has ``undo_edit``), ``text_editor_20250429`` and ``text_editor_20250728``
(no ``undo_edit``; 20250728 honours the tool definition's ``max_characters`` for ``view``).

Where it differs from the reference demo, on purpose:
- ``create`` refuses an existing path, like the reference, but creates missing parent directories.
- Files are edited byte-faithfully: tabs are never expanded, CRLF files stay CRLF, and ``undo_edit``
  restores the exact previous bytes (undoing a ``create`` removes the file).
- Line numbers follow ``cat -n``: a final newline does not count as an extra empty line.
- ``old_str`` must occur exactly once, overlapping occurrences included; the error lists where it occurs.
- Binary, non-UTF-8, non-regular and huge files get a clear error instead of a traceback or a hang;
  directories are listed in Python (no ``find`` subprocess), hidden entries below the path excluded.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from deskpilot.errors import ToolError, ToolInputError
from desktop.tools.base import ToolResult

VERSIONS = ("text_editor_20250124", "text_editor_20250429", "text_editor_20250728")
_COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")
_FIELDS = frozenset({"command", "path", "file_text", "view_range", "old_str", "new_str", "insert_line"})
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_LISTED_ENTRIES = 1000
_HISTORY_DEPTH = 100
_SNIPPET_LINES = 4


class EditTool:
    """View, create and edit text files for the model. Thread-safe; file I/O runs off the event loop."""

    name = "str_replace_based_edit_tool"

    def __init__(self, version: str = "text_editor_20250728", *, max_characters: int | None = None,
                 view_cap: int) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown text editor version {version!r}")
        self.version = version
        self.max_characters = max_characters
        self.view_cap = view_cap
        # Previous bytes of each edited file, newest last; None = the file did not exist.
        self._history: defaultdict[str, list[bytes | None]] = defaultdict(list)
        self._lock = threading.Lock()

    async def run(self, input: dict[str, Any], *, version: str | None = None) -> ToolResult:
        return await asyncio.to_thread(self.execute, input, version=version)

    def execute(self, input: dict[str, Any], *, version: str | None = None) -> ToolResult:
        version = version or self.version
        if version not in VERSIONS:
            raise ToolInputError(f"unknown text editor version {version!r}; known: {', '.join(VERSIONS)}")
        command, path = self._parse(input, version)
        try:
            return self._execute(command, path, input, version)
        except OSError as exc:  # e.g. a directory on the way the sandbox may not enter
            raise ToolError(f"Could not access {path}: {exc.strerror or exc}") from None

    def _execute(self, command: str, path: Path, input: dict[str, Any], version: str) -> ToolResult:
        with self._lock:
            if command == "view":
                return ToolResult(output=self._view(path, input.get("view_range"), version))
            if command == "create":
                return ToolResult(output=self._create(path, _text_arg(input, "file_text", command)))
            if command == "str_replace":
                new_str = input.get("new_str")
                return ToolResult(output=self._str_replace(
                    path, _text_arg(input, "old_str", command),
                    "" if new_str is None else _text_arg(input, "new_str", command)))
            if command == "insert":
                return ToolResult(output=self._insert(path, _line_arg(input), _text_arg(input, "new_str", command)))
            return ToolResult(output=self._undo(path))

    # --- input -------------------------------------------------------------------------------------------

    def _parse(self, data: Any, version: str) -> tuple[str, Path]:
        if not isinstance(data, dict):
            raise ToolInputError("the editor tool input must be an object with `command` and `path`")
        extra = sorted(str(k) for k in data if k not in _FIELDS)
        if extra:
            raise ToolInputError(f"unexpected field(s) for the {self.name} tool: {', '.join(extra)}")
        allowed = _COMMANDS if version == "text_editor_20250124" else _COMMANDS[:-1]
        command = data.get("command")
        if command not in allowed:
            raise ToolInputError(f"Unrecognized command {command}. The allowed commands for the {self.name} "
                                 f"tool are: {', '.join(allowed)}")
        raw = data.get("path")
        if not isinstance(raw, str) or not raw.strip():
            raise ToolInputError(f"Parameter `path` (a non-empty string) is required for command: {command}")
        if "\x00" in raw:
            raise ToolInputError("Parameter `path` contains a NUL character")
        try:
            os.fsencode(raw)
        except UnicodeEncodeError:
            raise ToolInputError("Parameter `path` is not valid Unicode text (lone surrogate)") from None
        path = Path(raw)
        if not path.is_absolute():
            raise ToolInputError(f"The path {raw} is not an absolute path, it should start with `/`. "
                                 f"Maybe you meant /{raw.lstrip('./')}?")
        return str(command), path

    # --- commands ----------------------------------------------------------------------------------------

    def _view(self, path: Path, view_range: Any, version: str) -> str:
        _require_exists(path)
        if path.is_dir():
            if view_range is not None:
                raise ToolError("The `view_range` parameter is not allowed when `path` points to a directory.")
            return _list_dir(path)
        lines = _lines(_read(path)[0])
        first = 1
        if view_range is not None:
            first, last = _check_range(view_range, len(lines))
            lines = lines[first - 1:] if last == -1 else lines[first - 1:last]
        elif not lines:
            return f"The file {path} is empty."
        cap = self.max_characters if version == "text_editor_20250728" and self.max_characters else self.view_cap
        return _cat_n(lines, str(path), first, cap)

    def _create(self, path: Path, file_text: str) -> str:
        if path.is_dir():
            raise ToolError(f"The path {path} is a directory and only the `view` command can be used on directories")
        if path.exists() or path.is_symlink():
            raise ToolError(f"File already exists at: {path}. Cannot overwrite files using command `create`. "
                            "Edit it with `str_replace` or `insert`, or remove it with bash first.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(file_text.encode())
        except UnicodeEncodeError:
            raise ToolInputError("`file_text` is not valid Unicode text (lone surrogate)") from None
        except OSError as exc:
            raise ToolError(f"Could not create {path}: {exc.strerror or exc}") from None
        self._remember(path, None)
        return f"File created successfully at: {path}"

    def _str_replace(self, path: Path, old_str: str, new_str: str) -> str:
        text, crlf, original = self._read_editable(path)
        if crlf:
            old_str, new_str = old_str.replace("\r\n", "\n"), new_str.replace("\r\n", "\n")
        if not old_str:
            raise ToolInputError("Parameter `old_str` must not be empty for command: str_replace")
        first = text.find(old_str)
        if first < 0:
            raise ToolError(f"No replacement was performed, old_str `{_clip(old_str)}` did not appear verbatim "
                            f"in {path}.{_near_miss_hint(text, old_str)}")
        if text.find(old_str, first + 1) >= 0:
            raise ToolError(f"No replacement was performed. Multiple occurrences of old_str `{_clip(old_str)}` "
                            f"in lines {_occurrence_lines(text, old_str)}. Please ensure it is unique")
        new_text = text[:first] + new_str + text[first + len(old_str):]
        self._write(path, new_text, crlf, original)
        start, snippet = _snippet(new_text, first, max(first, first + len(new_str) - 1))
        return (f"The file {path} has been edited. "
                + _cat_n(snippet, f"a snippet of {path}", start, self.view_cap)
                + "Review the changes and make sure they are as expected. Edit the file again if necessary.")

    def _insert(self, path: Path, insert_line: int, new_str: str) -> str:
        text, crlf, original = self._read_editable(path)
        if crlf:
            new_str = new_str.replace("\r\n", "\n")
        lines = _lines(text)
        if not 0 <= insert_line <= len(lines):
            raise ToolError(f"Invalid `insert_line` parameter: {insert_line}. It should be within the range of "
                            f"lines of the file: {[0, len(lines)]}")
        new_lines = new_str.split("\n")
        if len(new_lines) > 1 and new_lines[-1] == "":
            new_lines.pop()  # a final newline ends the last inserted line; it is not one more line
        ends_with_newline = text.endswith("\n") or not text
        new_text = "\n".join(lines[:insert_line] + new_lines + lines[insert_line:])
        self._write(path, new_text + ("\n" if ends_with_newline else ""), crlf, original)
        snippet = lines[max(0, insert_line - _SNIPPET_LINES):insert_line] + new_lines + \
            lines[insert_line:insert_line + _SNIPPET_LINES]
        return (f"The file {path} has been edited. "
                + _cat_n(snippet, "a snippet of the edited file", max(1, insert_line - _SNIPPET_LINES + 1),
                         self.view_cap)
                + "Review the changes and make sure they are as expected (correct indentation, no duplicate "
                  "lines, etc). Edit the file again if necessary.")

    def _undo(self, path: Path) -> str:
        history = self._history.get(os.path.normpath(path))
        if not history:
            raise ToolError(f"No edit history found for {path}.")
        previous = history[-1]
        try:
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(previous)
        except OSError as exc:
            raise ToolError(f"Could not undo the last edit to {path}: {exc.strerror or exc}") from None
        history.pop()
        if previous is None:
            return f"Last edit to {path} undone successfully: it was created by `create`, so it was removed."
        text = _decode(previous, path)[0]
        return f"Last edit to {path} undone successfully. {_cat_n(_lines(text), str(path), 1, self.view_cap)}"

    # --- file access -------------------------------------------------------------------------------------

    def _read_editable(self, path: Path) -> tuple[str, bool, bytes]:
        _require_exists(path)
        if path.is_dir():
            raise ToolError(f"The path {path} is a directory and only the `view` command can be used on directories")
        return _read(path)

    def _write(self, path: Path, text: str, crlf: bool, original: bytes) -> None:
        try:
            # In place, not via a temporary file: keeps the file's mode, owner and hard links.
            path.write_bytes((text.replace("\n", "\r\n") if crlf else text).encode())
        except UnicodeEncodeError:
            raise ToolInputError("the new text is not valid Unicode text (lone surrogate)") from None
        except OSError as exc:
            raise ToolError(f"Could not write {path}: {exc.strerror or exc}") from None
        self._remember(path, original)

    def _remember(self, path: Path, previous: bytes | None) -> None:
        history = self._history[os.path.normpath(path)]
        history.append(previous)
        del history[:-_HISTORY_DEPTH]


def _text_arg(data: dict[str, Any], name: str, command: str) -> str:
    value = data.get(name)
    if value is None:
        raise ToolInputError(f"Parameter `{name}` is required for command: {command}")
    if not isinstance(value, str):
        raise ToolInputError(f"Parameter `{name}` must be a string, got {type(value).__name__}")
    return value


def _line_arg(data: dict[str, Any]) -> int:
    value = data.get("insert_line")
    if value is None:
        raise ToolInputError("Parameter `insert_line` is required for command: insert")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolInputError(f"Parameter `insert_line` must be an integer, got {type(value).__name__}")
    return value


def _check_range(view_range: Any, n_lines: int) -> tuple[int, int]:
    if (not isinstance(view_range, list) or len(view_range) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in view_range)):
        raise ToolInputError("Invalid `view_range`. It should be a list of two integers.")
    first, last = view_range
    if not n_lines:
        raise ToolError(f"Invalid `view_range`: {view_range}. The file is empty: it has no lines to show.")
    if first < 1 or first > n_lines:
        raise ToolError(f"Invalid `view_range`: {view_range}. Its first element `{first}` should be within the "
                        f"range of lines of the file: {[1, n_lines]}")
    if last > n_lines:
        raise ToolError(f"Invalid `view_range`: {view_range}. Its second element `{last}` should be smaller than "
                        f"the number of lines in the file: `{n_lines}`")
    if last != -1 and last < first:
        raise ToolError(f"Invalid `view_range`: {view_range}. Its second element `{last}` should be larger or "
                        f"equal than its first `{first}`")
    return first, last


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise ToolError(f"The path {path} does not exist. Please provide a valid path.")


def _read(path: Path) -> tuple[str, bool, bytes]:
    """``(text with \\n line ends, was CRLF, original bytes)``; refuses what is not an editable text file."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"The path {path} is not a regular file (device, socket or pipe); "
                            "the editor only handles text files.")
        if info.st_size > MAX_FILE_BYTES:
            raise ToolError(f"The file {path} is {info.st_size} bytes; the editor handles files up to "
                            f"{MAX_FILE_BYTES} bytes. Use bash (`grep -n`, `sed -n 'A,Bp'`) on it instead.")
        data = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"Could not read {path}: {exc.strerror or exc}") from None
    text, crlf = _decode(data, path)
    return text, crlf, data


def _decode(data: bytes, path: Path) -> tuple[str, bool]:
    try:
        if b"\x00" in data:
            raise UnicodeError
        text = data.decode()
    except UnicodeError:
        raise ToolError(f"The file {path} is not UTF-8 text (it looks binary); the editor only handles text "
                        "files. Inspect it with bash (`file`, `xxd | head`).") from None
    crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")  # every line ends in CRLF
    return (text.replace("\r\n", "\n") if crlf else text), crlf


def _lines(text: str) -> list[str]:
    """Lines as ``cat -n`` counts them: a final newline ends the last line, it does not start another."""
    return (text[:-1] if text.endswith("\n") else text).split("\n") if text else []


def _snippet(text: str, first: int, last: int) -> tuple[int, list[str]]:
    """The lines holding ``text[first:last + 1]`` with some context, and the number of the first one.

    Found by scanning around the edit, so a small edit in a big file does not split the whole file.
    """
    lo = first
    for _ in range(_SNIPPET_LINES + 1):
        lo = text.rfind("\n", 0, lo)
        if lo < 0:
            break
    lo += 1
    hi = last
    for _ in range(_SNIPPET_LINES + 1):
        hi = text.find("\n", hi) + 1
        if hi == 0:
            hi = len(text)
            break
    return text.count("\n", 0, lo) + 1, _lines(text[lo:hi])


def _cat_n(lines: list[str], descriptor: str, first: int, cap: int) -> str:
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        numbered = f"{i + first:6}\t{line}"
        if used + len(numbered) > cap:
            if not out:
                out.append(numbered[:cap])
            shown = first + len(out) - 1
            out.append(f"<response clipped><NOTE>Only part of this file was shown to save context: lines {first}"
                       f"–{shown} of the {first + len(lines) - 1} requested, {cap} characters at most. View the rest "
                       "with `view_range`, or find line numbers with `grep -n` in bash.</NOTE>")
            break
        out.append(numbered)
        used += len(numbered) + 1
    return f"Here's the result of running `cat -n` on {descriptor}:\n" + "\n".join(out) + "\n"


def _list_dir(root: Path) -> str:
    entries: list[str] = []
    total = 0

    def walk(directory: Path, depth: int) -> None:
        nonlocal total
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            entries.append(f"{directory}/ ({exc.strerror or 'unreadable'})")
            return
        for child in children:
            if child.name.startswith("."):
                continue
            total += 1
            is_dir = child.is_dir()
            if len(entries) < MAX_LISTED_ENTRIES:
                entries.append(f"{child.path}/" if is_dir else child.path)
            if is_dir and depth < 2 and not child.is_symlink():
                walk(Path(child.path), depth + 1)

    walk(root, 1)
    more = total - len(entries)
    tail = f"\n[… {more} more entries not shown; list them with bash (`ls`, `find`) …]" if more > 0 else ""
    return (f"Here's the files and directories up to 2 levels deep in {root}, excluding hidden items:\n"
            f"{root}\n" + "\n".join(entries) + tail + "\n")


def _occurrence_lines(text: str, old_str: str, limit: int = 50) -> str:
    lines: list[int] = []
    pos = text.find(old_str)
    while pos >= 0 and len(lines) < limit:
        line = text.count("\n", 0, pos) + 1
        if not lines or lines[-1] != line:
            lines.append(line)
        pos = text.find(old_str, pos + 1)
    return str(lines) + (" and more" if pos >= 0 else "")


def _near_miss_hint(text: str, old_str: str) -> str:
    if "\t" in text and "\t" not in old_str and old_str in text.expandtabs():
        return " The file indents with tab characters; `old_str` must use the same tabs."
    stripped = old_str.strip()
    if stripped and stripped != old_str and stripped in text:
        return " It does appear without its leading/trailing whitespace: check indentation and blank lines."
    return ""


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


EditorTool = EditTool  # the name desktop/tool_host.py builds
