"""One client cannot lock out the others (issue 11, item 6), over real sockets and the SDK client.

Reproduced before the fix: with the SDK's global session cap, one token that opened sessions without
closing them got every other handshake-era client answered 503; a request that sent half its headers
(or half its body) kept its socket open for as long as it liked.
"""

from __future__ import annotations

import json
import socket
import time

import anyio
import httpx2
import pytest

from pmcp import authtokens

from .conftest import connect
from .test_http_security import INIT, MCP_HEADERS

PING = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def _init(served, token: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    h = MCP_HEADERS | {"Authorization": f"Bearer {token}"} | (headers or {})
    return httpx2.post(served.url, content=json.dumps(INIT), headers=h, timeout=30)


def _in_session(served, token: str, session: str, body: dict) -> httpx2.Response:
    h = MCP_HEADERS | {
        "Authorization": f"Bearer {token}",
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": "2025-06-18",
    }
    return httpx2.post(served.url, json=body, headers=h, timeout=30)


def _list_tools_as(served, token: str, mode: str) -> list[str]:
    async def go():
        async with connect(served, mode=mode, token=token) as client:
            return [t.name for t in (await client.list_tools()).tools]

    return anyio.run(go)


def test_one_token_opening_sessions_cannot_lock_out_another(make_server):
    with make_server(sessions_per_token=4, max_sessions=10) as served:
        other = authtokens.add(served.config.auth_token_file, "cursor")
        opened = []
        for _ in range(25):  # more than the whole server's cap: before the fix, 503 for everyone after 10
            r = _init(served, served.token)
            assert r.status_code == 200, r.text
            opened.append(r.headers["mcp-session-id"])
        # the handshake-era client of another token gets in (Claude Code, mcp-remote)
        assert "list_guests" in _list_tools_as(served, other, "legacy")
        # the flooding token keeps only its 4 most recent sessions: the SDK released the others
        alive = [_in_session(served, served.token, s, PING).status_code for s in opened]
        assert alive == [404] * 21 + [200] * 4


def test_busy_sessions_at_the_cap_get_429_with_retry_after(make_server):
    async def go(served):
        headers = {"Authorization": f"Bearer {served.token}", "Accept": "text/event-stream"}
        async with httpx2.AsyncClient(timeout=30) as http:
            streams = []
            for _ in range(2):
                r = await http.post(
                    served.url,
                    content=json.dumps(INIT),
                    headers=MCP_HEADERS | {"Authorization": f"Bearer {served.token}"},
                )
                sid = r.headers["mcp-session-id"]
                h = headers | {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
                await http.post(
                    served.url, json=INITIALIZED, headers=MCP_HEADERS | h | {"Accept": MCP_HEADERS["Accept"]}
                )
                stream = http.stream("GET", served.url, headers=h)  # the open GET stream: busy
                response = await stream.__aenter__()
                assert response.status_code == 200
                streams.append(stream)
            third = await http.post(
                served.url,
                content=json.dumps(INIT),
                headers=MCP_HEADERS | {"Authorization": f"Bearer {served.token}"},
            )
            for s in streams:
                await s.__aexit__(None, None, None)
            return third

    with make_server(sessions_per_token=2) as served:
        third = anyio.run(go, served)
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) >= 1
    assert "PMCP_SESSIONS_PER_TOKEN" in third.text


def test_initialize_and_tool_call_rates_are_per_token(make_server, sim):
    with make_server(rate_initialize=4, rate_tool_calls=8, rate_changes=4) as served:
        other = authtokens.add(served.config.auth_token_file, "cursor")
        assert [_init(served, served.token).status_code for _ in range(2)] == [200, 200]  # burst: 4/2
        limited = _init(served, served.token)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 15
        assert _init(served, other).status_code == 200  # the other token is untouched
        assert [_init(served, other).status_code for _ in range(2)] == [200, 429]  # and has its own budget

    with make_server(rate_tool_calls=8) as served:  # burst 4
        session = _init(served, served.token).headers["mcp-session-id"]
        _in_session(served, served.token, session, INITIALIZED)
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "capabilities"}}
        codes = [_in_session(served, served.token, session, call).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 200, 429]
        assert _in_session(served, served.token, session, PING).status_code == 200  # not a tool call

    vmid = next(int(v) for v, g in sorted(sim.state.world["guests"].items()) if g["type"] == "qemu")
    with make_server(rate_changes=2) as served:  # burst 1: one audited call, then 429
        session = _init(served, served.token).headers["mcp-session-id"]
        _in_session(served, served.token, session, INITIALIZED)
        change = {
            "jsonrpc": "2.0",
            "id": 8,
            "method": "tools/call",
            "params": {"name": "set_guest_config", "arguments": {"vmid": vmid, "description": "rate"}},
        }
        read = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "list_guests"}}
        assert _in_session(served, served.token, session, change).status_code == 200
        assert _in_session(served, served.token, session, change).status_code == 429
        assert _in_session(served, served.token, session, read).status_code == 200


def _raw(served, data: bytes) -> tuple[bytes, float]:
    """Send ``data`` and wait: what the server answers, and how long until it closed the socket."""
    host, port = served.base.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    return got, time.monotonic() - started


@pytest.mark.parametrize(
    "data",
    [
        b"",  # connects and says nothing
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthor",  # half its headers
        b'POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{"jsonrpc"',  # half a body
    ],
    ids=["silent", "partial-headers", "partial-body"],
)
def test_a_stalled_request_loses_its_socket(make_server, data):
    with make_server(header_timeout=1.0, body_timeout=1.0) as served:
        got, took = _raw(served, data)
        assert took < 5, took  # before: still open after 30 s and more
        # 408 for a request that never arrived; a half-sent body of an unauthenticated request was
        # already answered 401, and the socket is closed all the same
        assert got.startswith(b"HTTP/1.1 401" if b"Content-Length" in data else b"HTTP/1.1 408"), got
        assert "list_guests" in _list_tools_as(served, served.token, "auto")  # the server still serves


def test_a_stalled_authenticated_body_gets_408(make_server):
    with make_server(header_timeout=5.0, body_timeout=1.0) as served:
        head = (
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\n"
            b"Authorization: Bearer " + served.token.encode() + b"\r\nContent-Length: 900\r\n\r\n{"
        )
        got, took = _raw(served, head)
        assert got.startswith(b"HTTP/1.1 408") and took < 5


def test_chunked_body_over_the_limit_is_413(server):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = httpx2.post(
        server.url,
        content=chunks(),
        headers=MCP_HEADERS | {"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert r.status_code == 413
