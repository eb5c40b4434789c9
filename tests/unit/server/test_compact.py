"""What a model reads of tools/list: no pydantic noise, descriptions where a model looks for them."""

from __future__ import annotations

import json
from typing import Any

import anyio

from pmcp.server.compact import compact

from .conftest import connect


def test_optional_arguments_are_plain_types_with_their_description_on_top() -> None:
    generated = {
        "title": "list_guestsArguments",
        "type": "object",
        "properties": {
            "title": {"title": "Title", "type": "string"},  # a property *named* title stays
            "node": {
                "anyOf": [{"type": "string", "pattern": "^[a-z]+$", "description": "Node"}, {"type": "null"}],
                "default": None,
                "title": "Node",
            },
            "limit": {
                "anyOf": [{"type": "integer"}, {"type": "null"}],
                "default": 5,
                "description": "At most",
            },
        },
        "required": ["title"],
    }
    assert compact(generated) == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "node": {"type": "string", "pattern": "^[a-z]+$", "description": "Node"},
            "limit": {"type": "integer", "default": 5, "description": "At most"},
        },
        "required": ["title"],
    }


def test_the_listing_is_compact_and_the_server_still_accepts_explicit_nulls(server: Any) -> None:
    async def go() -> tuple[Any, Any]:
        async with connect(server) as client:
            tools = (await client.list_tools()).tools
            called = await client.call_tool("list_guests", {"node": None, "status": None, "limit": 3})
            return tools, called

    tools, called = anyio.run(go)
    for t in tools:
        text = json.dumps(t.input_schema) + json.dumps(t.output_schema)
        assert '"title"' not in text.replace('"title": {', ""), t.name
        assert '{"type": "null"}' not in json.dumps(t.input_schema), t.name
        for name, prop in t.input_schema.get("properties", {}).items():
            assert "anyOf" not in prop or all("description" not in o for o in prop["anyOf"]), (t.name, name)
    assert not called.is_error, called.content[0].text


def test_a_definition_used_once_is_put_in_place_and_the_others_stay() -> None:
    from pmcp.server.compact import inline_single_refs

    item = {"type": "object", "properties": {"vmid": {"type": "integer"}}}
    node = {
        "type": "object",
        "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
    }
    schema = {
        "$defs": {"Item": item, "Tag": {"type": "string"}, "Node": node},
        "type": "object",
        "properties": {
            "guests": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "first": {"$ref": "#/$defs/Tag", "description": "The first"},
            "last": {"$ref": "#/$defs/Tag"},
            "tree": {"$ref": "#/$defs/Node"},
        },
    }
    assert inline_single_refs(schema) == {
        "type": "object",
        "properties": {
            "guests": {"type": "array", "items": item},  # once: in place
            "first": {"$ref": "#/$defs/Tag", "description": "The first"},  # twice: stays
            "last": {"$ref": "#/$defs/Tag"},
            "tree": {"$ref": "#/$defs/Node"},  # from here and from itself: stays
        },
        "$defs": {"Tag": {"type": "string"}, "Node": node},
    }
