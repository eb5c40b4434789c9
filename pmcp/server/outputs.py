"""The tools' output schemas, derived when the tools change (tool_outputs.json), not at every start.

Why: the MCP SDK derives a tool's output schema from its pydantic model when the tool is added
(pydantic's JSON-schema generation, pure Python), which was about half of building the 19 tools: 0.033
of 0.075 s (medians of 3), paid by an installed server before it accepts (app.warm_up), on top of
importing the SDK. The schemas only change when a tool's output model does, so they are derived here,
with the SDK's own code, and kept in tool_outputs.json beside this file; app.ensure_tools hands each
tool its schema (the SDK's FuncMetadata reads ``output_schema`` live, and derives nothing when it is
given). tests/unit/server/test_outputs.py derives them again and fails, with the command that
refreshes the file, when one differs:

    .venv/bin/python -m pmcp.server.outputs
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PATH = Path(__file__).with_name("tool_outputs.json")


def derive(output: type[BaseModel]) -> dict[str, Any]:
    """The output schema the SDK publishes for a tool returning ``output`` (its own derivation)."""
    from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata

    schema = FuncMetadata(arg_model=ArgModelBase, output_model=output).output_schema
    assert schema is not None
    return schema


def derive_all() -> dict[str, dict[str, Any]]:
    from pmcp.server.registry import declared

    return {name: derive(spec.output) for name, spec in sorted(declared().items())}


@cache
def kept() -> dict[str, dict[str, Any]]:
    """The schemas in tool_outputs.json ({} when the file is missing: every tool derives its own)."""
    try:
        return json.loads(PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write() -> None:
    PATH.write_text(json.dumps(derive_all(), indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write()
    print(f"wrote {PATH}")
