"""Suite-wide hooks."""

from __future__ import annotations

from collections.abc import Generator

import pytest

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
