"""The output schemas kept in pmcp/server/tool_outputs.json are the ones the MCP SDK derives itself."""

from __future__ import annotations

from typing import Any

from pmcp.server import outputs
from pmcp.server.registry import declared, make_handler

FIX = "refresh it: .venv/bin/python -m pmcp.server.outputs"


def test_the_kept_output_schemas_are_what_the_sdk_derives() -> None:
    from mcp.server.mcpserver import MCPServer

    sdk = MCPServer(name="derive")
    derived: dict[str, Any] = {}
    for name, spec in declared().items():
        # what app.ensure_tools did before the file: the SDK derives the schema from the handler's
        # return annotation when the tool is added
        sdk.add_tool(make_handler(spec, None), name=name, structured_output=True)  # type: ignore[arg-type]
        tool = sdk._tool_manager.get_tool(name)
        assert tool is not None
        derived[name] = tool.output_schema
    kept = outputs.kept()
    assert sorted(kept) == sorted(derived), f"tools added or gone since tool_outputs.json was written; {FIX}"
    for name in derived:
        assert kept[name] == derived[name], f"{name}'s output model changed; {FIX}"


def test_a_served_tool_publishes_the_kept_schema(server: Any) -> None:
    import anyio

    from .conftest import connect

    async def listed() -> dict[str, Any]:
        async with connect(server) as client:
            return {t.name: t.output_schema for t in (await client.list_tools()).tools}

    published = anyio.run(listed)
    assert published and all(published[name] for name in published)
    # published after compaction (compact.py), so compare what compaction keeps: the listed properties
    for name, schema in published.items():
        assert set(schema.get("properties", {})) == set(outputs.kept()[name].get("properties", {})), name
