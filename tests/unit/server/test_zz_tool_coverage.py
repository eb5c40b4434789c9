"""Last module of the server tests (pytest runs them in file order): every tool was called by a test of
this package, through the SDK client (conftest.connect records each call), and answered at least once
without an error. A tool that is only ever refused, or never called, is not tested.

Run with the whole package (`pytest tests/unit/server`): alone, it sees no calls and says so.
"""

from __future__ import annotations

import pmcp.server.tools  # noqa: F401  (declares the tools)
from pmcp.server.registry import TOOLS

from .conftest import CALLS


def test_every_tool_was_called_and_answered() -> None:
    assert CALLS, "no tool calls were recorded: run this module with the whole tests/unit/server package"
    never = sorted(set(TOOLS) - set(CALLS))
    only_errors = sorted(n for n, oks in CALLS.items() if n in TOOLS and not any(oks))
    assert not never, f"never called by a test: {never}"
    assert not only_errors, f"only ever answered with an error: {only_errors}"
