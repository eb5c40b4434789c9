"""JSON or SSE per request (pmcp/server/framing.py), as a 2025-11 client sees it on the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pmcp.server.framing import answer_as_json, parse

from .test_protocol import INIT, _post, _rpc


def _session(server: Any) -> str:
    r = _post(server, INIT)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.headers
    session = r.headers["mcp-session-id"]
    assert (
        _post(server, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session).status_code == 202
    )
    return session


def _call(server: Any, session: str, name: str, arguments: dict[str, Any], meta: dict | None = None):
    params: dict[str, Any] = {"name": name, "arguments": arguments} | ({"_meta": meta} if meta else {})
    return _post(server, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}, session)


def test_a_read_call_without_a_progress_token_is_one_json_body(server: Any) -> None:
    session = _session(server)
    r = _call(server, session, "list_guests", {"limit": 2})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["mcp-session-id"] == session
    answer = json.loads(r.text)
    assert answer["id"] == 7 and answer["result"]["structuredContent"]["returned"] == 2


def test_a_call_that_asked_for_progress_or_may_wait_for_a_task_stays_sse(server: Any) -> None:
    session = _session(server)
    r = _call(server, session, "list_guests", {"limit": 2}, {"progressToken": "p1"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert _rpc(r)["result"]["structuredContent"]["returned"] == 2
    vmid = _rpc(_call(server, session, "list_guests", {"limit": 1}))["result"]["structuredContent"]["guests"][
        0
    ]
    r = _call(server, session, "delete_guest", {"vmid": vmid["vmid"]})  # refused (running, no confirm)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert _rpc(r)["result"]["isError"] is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, True),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "guest_info"}}, True),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "guest_power"}}, False),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "no_such_tool"}}, False),
        ({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": {"progressToken": 0}}}, False),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, False),
        ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], False),
    ],
)
def test_which_requests_are_answered_as_json(body: Any, expected: bool) -> None:
    assert answer_as_json(parse(json.dumps(body).encode())) is expected
    assert answer_as_json(parse(b"{not json")) is False
