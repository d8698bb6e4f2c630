"""The text editor tool on real files: every command, every error, undo chains, ranges, directories."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from deskpilot.errors import ToolError, ToolInputError
from desktop.tools.editor import MAX_FILE_BYTES, MAX_LISTED_ENTRIES, EditTool

OLD = "text_editor_20250124"
NEW = "text_editor_20250728"
SAMPLE = "def f():\n    return 1\n\ndef g():\n    return 1\n"


@pytest.fixture
def tool() -> EditTool:
    return EditTool(OLD, view_cap=16_000)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    return path


async def ok(tool: EditTool, **input: Any) -> str:
    result = await tool.run(input)
    assert not result.is_error
    return result.output


async def fails(tool: EditTool, error: type[ToolError] = ToolError, **input: Any) -> str:
    with pytest.raises(error) as info:
        await tool.run(input)
    return info.value.message


def numbered(*pairs: tuple[int, str]) -> str:
    return "".join(f"{n:6}\t{line}\n" for n, line in pairs)


# --- view ------------------------------------------------------------------------------------------------

async def test_view_file_is_cat_n(tool: EditTool, sample: Path) -> None:
    assert await ok(tool, command="view", path=str(sample)) == (
        f"Here's the result of running `cat -n` on {sample}:\n"
        + numbered((1, "def f():"), (2, "    return 1"), (3, ""), (4, "def g():"), (5, "    return 1")))


async def test_view_ranges(tool: EditTool, sample: Path) -> None:
    header = f"Here's the result of running `cat -n` on {sample}:\n"
    assert await ok(tool, command="view", path=str(sample), view_range=[2, 3]) == \
        header + numbered((2, "    return 1"), (3, ""))
    assert await ok(tool, command="view", path=str(sample), view_range=[4, -1]) == \
        header + numbered((4, "def g():"), (5, "    return 1"))
    assert await ok(tool, command="view", path=str(sample), view_range=[5, 5]) == header + numbered((5, "    return 1"))


@pytest.mark.parametrize(("view_range", "error", "message"), [
    ([0, 2], ToolError, "Its first element `0` should be within the range of lines of the file: [1, 5]"),
    ([6, -1], ToolError, "Its first element `6` should be within the range of lines of the file: [1, 5]"),
    ([1, 6], ToolError, "Its second element `6` should be smaller than the number of lines in the file: `5`"),
    ([3, 2], ToolError, "Its second element `2` should be larger or equal than its first `3`"),
    ([1], ToolInputError, "It should be a list of two integers"),
    ([1, 2, 3], ToolInputError, "It should be a list of two integers"),
    (["1", "2"], ToolInputError, "It should be a list of two integers"),
    ([True, 2], ToolInputError, "It should be a list of two integers"),
    ("1-2", ToolInputError, "It should be a list of two integers"),
])
async def test_invalid_view_ranges(tool: EditTool, sample: Path, view_range: Any, error: type[ToolError],
                                   message: str) -> None:
    assert message in await fails(tool, error, command="view", path=str(sample), view_range=view_range)


async def test_view_empty_file_and_file_without_final_newline(tool: EditTool, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    assert await ok(tool, command="view", path=str(tmp_path / "empty")) == f"The file {tmp_path / 'empty'} is empty."
    assert "The file is empty" in await fails(tool, command="view", path=str(tmp_path / "empty"), view_range=[1, -1])
    (tmp_path / "nonl").write_text("a\nb")
    assert (await ok(tool, command="view", path=str(tmp_path / "nonl"))).endswith(numbered((1, "a"), (2, "b")))


async def test_view_keeps_tabs_and_unicode(tool: EditTool, tmp_path: Path) -> None:
    path = tmp_path / "Makefile"
    path.write_text("all:\n\techo 'héllo 世界'\n")
    assert (await ok(tool, command="view", path=str(path))).endswith(numbered((1, "all:"), (2, "\techo 'héllo 世界'")))


async def test_view_is_capped_at_a_line_boundary(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("".join(f"line {i}\n" for i in range(1, 1001)))
    output = await ok(EditTool(OLD, view_cap=200), command="view", path=str(path))
    body = output.split("\n", 1)[1]
    shown = [line for line in body.splitlines() if line.startswith(" ")]
    assert shown == [f"{i:6}\tline {i}" for i in range(1, len(shown) + 1)] and 10 < len(shown) < 20
    assert f"lines 1–{len(shown)} of the 1000 requested" in body and "<response clipped>" in body


async def test_max_characters_applies_to_the_20250728_version_only(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("x" * 5000 + "\n")
    new = await ok(EditTool(NEW, max_characters=100, view_cap=16_000), command="view", path=str(path))
    assert "x" * 93 in new and "x" * 94 not in new and "<response clipped>" in new  # 7 chars of numbering
    old = await ok(EditTool(OLD, max_characters=100, view_cap=16_000), command="view", path=str(path))
    assert "x" * 5000 in old


async def test_view_directory_two_levels_without_hidden(tool: EditTool, tmp_path: Path) -> None:
    root = tmp_path / ".hidden-parent" / "project"  # a hidden ancestor must not hide everything
    (root / "src" / "pkg" / "deep").mkdir(parents=True)
    (root / "src" / "main.py").write_text("")
    (root / "src" / "pkg" / "mod.py").write_text("")
    (root / "README").write_text("")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("")
    (root / "src" / ".env").write_text("")
    assert await ok(tool, command="view", path=str(root)) == (
        f"Here's the files and directories up to 2 levels deep in {root}, excluding hidden items:\n{root}\n"
        f"{root}/README\n{root}/src/\n{root}/src/main.py\n{root}/src/pkg/\n")
    assert "not allowed" in await fails(tool, command="view", path=str(root), view_range=[1, 2])


async def test_view_directory_listing_is_capped(tool: EditTool, tmp_path: Path) -> None:
    for i in range(MAX_LISTED_ENTRIES + 5):
        (tmp_path / f"f{i:05}").write_text("")
    output = await ok(tool, command="view", path=str(tmp_path))
    assert output.count(f"{tmp_path}/f") == MAX_LISTED_ENTRIES
    assert "[… 5 more entries not shown" in output


# --- create ----------------------------------------------------------------------------------------------

async def test_create_writes_exact_text_and_parents(tool: EditTool, tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "file.txt"
    text = "tab\there\r\nwindows line\nno final newline ✓"
    assert await ok(tool, command="create", path=str(path), file_text=text) == \
        f"File created successfully at: {path}"
    assert path.read_bytes() == text.encode()


async def test_create_refuses_to_overwrite(tool: EditTool, sample: Path, tmp_path: Path) -> None:
    message = await fails(tool, command="create", path=str(sample), file_text="new")
    assert message.startswith(f"File already exists at: {sample}. Cannot overwrite files using command `create`.")
    assert sample.read_text() == SAMPLE
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "missing-target")
    assert "already exists" in await fails(tool, command="create", path=str(dangling), file_text="x")
    assert "is a directory" in await fails(tool, command="create", path=str(tmp_path), file_text="x")


async def test_create_errors(tool: EditTool, tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    assert "`file_text` is required" in await fails(tool, ToolInputError, command="create", path=path)
    assert "must be a string, got int" in await fails(tool, ToolInputError, command="create", path=path, file_text=3)
    (tmp_path / "plainfile").write_text("")
    assert "Could not create" in await fails(tool, command="create", path=str(tmp_path / "plainfile" / "x"),
                                             file_text="x")


# --- str_replace -----------------------------------------------------------------------------------------

async def test_str_replace_unique_with_snippet(tool: EditTool, sample: Path) -> None:
    output = await ok(tool, command="str_replace", path=str(sample), old_str="def g():\n    return 1",
                      new_str="def g():\n    return 2")
    assert sample.read_text() == SAMPLE.replace("def g():\n    return 1", "def g():\n    return 2")
    assert output == (f"The file {sample} has been edited. Here's the result of running `cat -n` on a snippet of "
                      f"{sample}:\n" + numbered((1, "def f():"), (2, "    return 1"), (3, ""), (4, "def g():"),
                                                (5, "    return 2"))
                      + "Review the changes and make sure they are as expected. Edit the file again if necessary.")


@pytest.mark.parametrize(("old", "new", "lines"), [
    # Four lines of context on each side of the lines the new text occupies.
    ("10\n", "ten\n", [(6, "6"), (7, "7"), (8, "8"), (9, "9"), (10, "ten"), (11, "11"), (12, "12"), (13, "13"),
                       (14, "14")]),
    ("\n10\n", "\n10a\n10b\n", [(5, "5"), (6, "6"), (7, "7"), (8, "8"), (9, "9"), (10, "10a"), (11, "10b"),
                                 (12, "11"), (13, "12"), (14, "13"), (15, "14")]),
    ("1\n2\n", "", [(1, "3"), (2, "4"), (3, "5"), (4, "6"), (5, "7")]),
    ("19\n20", "last", [(15, "15"), (16, "16"), (17, "17"), (18, "18"), (19, "last")]),
])
async def test_str_replace_snippet_is_the_edit_with_context(tool: EditTool, tmp_path: Path, old: str, new: str,
                                                            lines: list[tuple[int, str]]) -> None:
    path = tmp_path / "n.txt"
    path.write_text("".join(f"{i}\n" for i in range(1, 21)))
    output = await ok(tool, command="str_replace", path=str(path), old_str=old, new_str=new)
    assert output.split(":\n", 1)[1].split("Review the changes")[0] == numbered(*lines)


async def test_str_replace_without_new_str_deletes(tool: EditTool, sample: Path) -> None:
    await ok(tool, command="str_replace", path=str(sample), old_str="\ndef g():\n    return 1\n")
    assert sample.read_text() == "def f():\n    return 1\n"


async def test_str_replace_zero_occurrences(tool: EditTool, sample: Path) -> None:
    message = await fails(tool, command="str_replace", path=str(sample), old_str="return 9", new_str="x")
    assert message == f"No replacement was performed, old_str `return 9` did not appear verbatim in {sample}."
    message = await fails(tool, command="str_replace", path=str(sample), old_str="  def g():  ", new_str="x")
    assert "without its leading/trailing whitespace" in message
    assert sample.read_text() == SAMPLE


async def test_str_replace_multiple_occurrences_lists_lines(tool: EditTool, sample: Path) -> None:
    message = await fails(tool, command="str_replace", path=str(sample), old_str="return 1", new_str="x")
    assert message == ("No replacement was performed. Multiple occurrences of old_str `return 1` in lines [2, 5]. "
                       "Please ensure it is unique")
    # A multi-line old_str is located by where it starts (the reference reports no lines at all).
    sample.write_text("a\nb\na\nb\n")
    assert "in lines [1, 3]" in await fails(tool, command="str_replace", path=str(sample), old_str="a\nb")
    # Overlapping occurrences count too.
    sample.write_text("xaaay\n")
    assert "Multiple occurrences" in await fails(tool, command="str_replace", path=str(sample), old_str="aa")
    sample.write_text("z\n" * 200)
    assert "and more" in await fails(tool, command="str_replace", path=str(sample), old_str="z")


async def test_str_replace_keeps_tabs_and_crlf(tool: EditTool, tmp_path: Path) -> None:
    make = tmp_path / "Makefile"
    make.write_text("all:\n\techo one\n\techo two\n")
    await ok(tool, command="str_replace", path=str(make), old_str="\techo one", new_str="\techo 1")
    assert make.read_text() == "all:\n\techo 1\n\techo two\n"  # the other tab is not expanded
    assert "tab characters" in await fails(tool, command="str_replace", path=str(make), old_str="        echo two")
    dos = tmp_path / "dos.txt"
    dos.write_bytes(b"one\r\ntwo\r\nthree\r\n")
    await ok(tool, command="str_replace", path=str(dos), old_str="one\ntwo", new_str="1\n2\n2.5")
    assert dos.read_bytes() == b"1\r\n2\r\n2.5\r\nthree\r\n"


async def test_str_replace_errors(tool: EditTool, sample: Path) -> None:
    path = str(sample)
    assert "`old_str` is required" in await fails(tool, ToolInputError, command="str_replace", path=path)
    assert "must not be empty" in await fails(tool, ToolInputError, command="str_replace", path=path, old_str="")
    assert "`new_str` must be a string" in await fails(tool, ToolInputError, command="str_replace", path=path,
                                                       old_str="def f", new_str=["x"])
    assert "lone surrogate" in await fails(tool, ToolInputError, command="str_replace", path=path,
                                           old_str="def f", new_str="\ud800")
    assert sample.read_text() == SAMPLE


# --- insert ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "new_str", "expected"), [
    (0, "# top", "# top\n" + SAMPLE),
    (2, "    # after return\n", SAMPLE.replace("return 1\n", "return 1\n    # after return\n", 1)),
    (5, "# end\n# really", SAMPLE + "# end\n# really\n"),
    (3, "", "def f():\n    return 1\n\n\ndef g():\n    return 1\n"),
])
async def test_insert(tool: EditTool, sample: Path, line: int, new_str: str, expected: str) -> None:
    output = await ok(tool, command="insert", path=str(sample), insert_line=line, new_str=new_str)
    assert sample.read_text() == expected
    assert output.startswith(f"The file {sample} has been edited. Here's the result of running `cat -n` on a "
                             "snippet of the edited file:\n")
    assert output.endswith("Review the changes and make sure they are as expected (correct indentation, no "
                           "duplicate lines, etc). Edit the file again if necessary.")


async def test_insert_snippet_numbers(tool: EditTool, tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("".join(f"{i}\n" for i in range(1, 21)))
    output = await ok(tool, command="insert", path=str(path), insert_line=10, new_str="new")
    assert output.split(":\n", 1)[1].startswith(numbered((7, "7"), (8, "8"), (9, "9"), (10, "10"), (11, "new"),
                                                         (12, "11")))


async def test_insert_into_empty_and_unterminated_files(tool: EditTool, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    await ok(tool, command="insert", path=str(empty), insert_line=0, new_str="first")
    assert empty.read_text() == "first\n"
    nonl = tmp_path / "nonl"
    nonl.write_text("a\nb")
    await ok(tool, command="insert", path=str(nonl), insert_line=1, new_str="mid")
    assert nonl.read_text() == "a\nmid\nb"


async def test_insert_errors(tool: EditTool, sample: Path) -> None:
    path = str(sample)
    message = await fails(tool, command="insert", path=path, insert_line=6, new_str="x")
    assert message == ("Invalid `insert_line` parameter: 6. It should be within the range of lines of the file: "
                       "[0, 5]")
    assert "[0, 5]" in await fails(tool, command="insert", path=path, insert_line=-1, new_str="x")
    assert "`insert_line` is required" in await fails(tool, ToolInputError, command="insert", path=path,
                                                      new_str="x")
    assert "must be an integer, got str" in await fails(tool, ToolInputError, command="insert", path=path,
                                                        insert_line="2", new_str="x")
    assert "must be an integer, got bool" in await fails(tool, ToolInputError, command="insert", path=path,
                                                         insert_line=True, new_str="x")
    assert "`new_str` is required" in await fails(tool, ToolInputError, command="insert", path=path, insert_line=1)
    assert sample.read_text() == SAMPLE


# --- undo_edit -------------------------------------------------------------------------------------------

async def test_undo_chain_restores_every_step_exactly(tool: EditTool, tmp_path: Path) -> None:
    path = tmp_path / "chain.txt"
    await ok(tool, command="create", path=str(path), file_text="v1\r\n")
    states = [path.read_bytes()]
    await ok(tool, command="str_replace", path=str(path), old_str="v1", new_str="v2")
    states.append(path.read_bytes())
    await ok(tool, command="insert", path=str(path), insert_line=1, new_str="v3")
    states.append(path.read_bytes())
    await ok(tool, command="str_replace", path=str(path), old_str="v2\nv3", new_str="v4")
    assert path.read_bytes() == b"v4\r\n"
    for expected in reversed(states):
        output = await ok(tool, command="undo_edit", path=str(path))
        assert output.startswith(f"Last edit to {path} undone successfully. ")
        assert path.read_bytes() == expected
    assert "it was created by `create`, so it was removed" in await ok(tool, command="undo_edit", path=str(path))
    assert not path.exists()
    assert await fails(tool, command="undo_edit", path=str(path)) == f"No edit history found for {path}."


async def test_undo_history_is_per_file(tool: EditTool, sample: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("o\n")
    await ok(tool, command="str_replace", path=str(sample), old_str="def f", new_str="def F")
    await ok(tool, command="str_replace", path=str(other), old_str="o", new_str="O")
    await ok(tool, command="undo_edit", path=str(tmp_path / "." / "sample.py"))  # same file, other spelling
    assert sample.read_text() == SAMPLE and other.read_text() == "O\n"
    assert "No edit history" in await fails(tool, command="undo_edit", path=str(sample))


async def test_failed_edits_leave_no_history(tool: EditTool, sample: Path) -> None:
    await fails(tool, command="str_replace", path=str(sample), old_str="missing", new_str="x")
    await fails(tool, command="insert", path=str(sample), insert_line=99, new_str="x")
    assert "No edit history" in await fails(tool, command="undo_edit", path=str(sample))


async def test_undo_is_not_in_the_newer_versions(sample: Path) -> None:
    for version in ("text_editor_20250429", NEW):
        message = await fails(EditTool(version, view_cap=100), ToolInputError, command="undo_edit", path=str(sample))
        assert message == ("Unrecognized command undo_edit. The allowed commands for the str_replace_based_edit_tool "
                           "tool are: view, create, str_replace, insert")
    tool = EditTool(NEW, view_cap=16_000)
    await ok(tool, command="str_replace", path=str(sample), old_str="def f", new_str="def F")
    assert not tool.execute({"command": "undo_edit", "path": str(sample)}, version=OLD).is_error
    assert sample.read_text() == SAMPLE


# --- paths and files the editor refuses ------------------------------------------------------------------

async def test_paths_must_be_absolute_and_exist(tool: EditTool, tmp_path: Path) -> None:
    message = await fails(tool, ToolInputError, command="view", path="src/main.py")
    assert message == ("The path src/main.py is not an absolute path, it should start with `/`. "
                       "Maybe you meant /src/main.py?")
    missing = tmp_path / "missing.txt"
    for command in ("view", "str_replace", "insert"):
        assert await fails(tool, command=command, path=str(missing), old_str="a", new_str="b", insert_line=0) == \
            f"The path {missing} does not exist. Please provide a valid path."


async def test_directory_where_a_file_is_expected(tool: EditTool, tmp_path: Path) -> None:
    for command in ("str_replace", "insert"):
        assert await fails(tool, command=command, path=str(tmp_path), old_str="a", new_str="b", insert_line=0) == \
            f"The path {tmp_path} is a directory and only the `view` command can be used on directories"


async def test_binary_non_utf8_huge_and_special_files(tool: EditTool, tmp_path: Path) -> None:
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "not UTF-8 text (it looks binary)" in await fails(tool, command="view", path=str(binary))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café".encode("latin-1"))
    assert "not UTF-8 text" in await fails(tool, command="str_replace", path=str(latin), old_str="caf", new_str="x")
    assert latin.read_bytes() == "café".encode("latin-1")
    huge = tmp_path / "huge.log"
    with huge.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    assert f"handles files up to {MAX_FILE_BYTES} bytes" in await fails(tool, command="view", path=str(huge))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block forever
    assert "not a regular file" in await fails(tool, command="view", path=str(fifo))
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert "not a regular file" in await fails(tool, command="insert", path=str(sock_path), insert_line=0,
                                                   new_str="x")


async def test_read_errors_are_tool_errors(tool: EditTool) -> None:
    # A regular file whose read fails (EIO) even for root.
    assert await fails(tool, command="view", path="/proc/self/mem") == \
        "Could not read /proc/self/mem: Input/output error"


# --- malformed input -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "message"), [
    ("view /etc", "must be an object"),
    ({"path": "/tmp"}, "Unrecognized command None"),
    ({"command": "delete", "path": "/tmp"}, "Unrecognized command delete. The allowed commands"),
    ({"command": ["view"], "path": "/tmp"}, "Unrecognized command"),
    ({"command": "view"}, "Parameter `path` (a non-empty string) is required for command: view"),
    ({"command": "view", "path": 5}, "Parameter `path` (a non-empty string) is required"),
    ({"command": "view", "path": ""}, "Parameter `path` (a non-empty string) is required"),
    ({"command": "view", "path": "/tmp\x00/x"}, "NUL"),
    ({"command": "view", "path": "/tmp/\ud800"}, "lone surrogate"),
    ({"command": "view", "path": "/tmp", "mode": "fast"}, "unexpected field(s) for the str_replace_based_edit_tool"),
])
async def test_malformed_input(tool: EditTool, data: Any, message: str) -> None:
    with pytest.raises(ToolInputError) as info:
        await tool.run(data)
    assert message in info.value.message


def test_constructor_checks_version() -> None:
    with pytest.raises(ValueError, match="unknown text editor version"):
        EditTool("text_editor_19990101", view_cap=10)
    tool = EditTool(view_cap=10)
    assert (tool.view_cap, tool.version) == (10, NEW)
