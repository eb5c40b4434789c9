"""The express lane (pmcp/server/express.py): the same answers as the SDK's way, for what it takes.

Every request is sent twice over the wire to one real server: once with the lane on, once with it off
(``app.state.express.enabled``), and the two answers must be the same JSON-RPC message; the lane's
counter proves which way each went.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from pmcp import authtokens
from pmcp.authtokens import TokenLimits
from pmcp.server.express import Express
from tests.support.mcp_raw import initialize

from .test_tools import guests_where


def _headers(token: str, version: str, sid: str | None = None) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": version,
    }
    return headers | ({"Mcp-Session-Id": sid} if sid else {})


class Session:
    """One handshake-era session, opened with ``version``, over plain HTTP."""

    def __init__(self, served: Any, version: str, token: str | None = None) -> None:
        self.served, self.version, self.token = served, version, token or served.token
        init = initialize("express")
        init["params"]["protocolVersion"] = version
        r = httpx2.post(served.url, json=init, headers=_headers(self.token, version), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["protocolVersion"] == version
        self.sid = r.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert self.post(note).status_code == 202

    def post(self, body: Any, **headers: str) -> httpx2.Response:
        h = _headers(self.token, self.version, self.sid) | headers
        return httpx2.post(self.served.url, content=json.dumps(body), headers=h, timeout=30)


def both_ways(served: Any, session: Session, body: Any) -> tuple[httpx2.Response, httpx2.Response, int]:
    """The answer with the lane on and with it off, and how many requests the lane served."""
    express: Express = served.app.state.express
    before = express.served
    fast = session.post(body)
    taken = express.served - before
    express.enabled = False
    try:
        slow = session.post(body)
    finally:
        express.enabled = True
    assert express.served - before == taken  # with the lane off nothing went its way
    return fast, slow, taken


def _same(fast: httpx2.Response, slow: httpx2.Response) -> None:
    assert fast.status_code == slow.status_code == 200
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert fast.headers["mcp-session-id"] == slow.headers["mcp-session-id"]
    assert fast.json() == slow.json()


def _call(name: str, arguments: Any, request_id: Any = 9, **extra: Any) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments} | extra
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_what_the_lane_takes_is_answered_as_the_sdk_answers_it(server: Any, sim: Any, version: str) -> None:
    session = Session(server, version)
    stopped = guests_where(sim, type="qemu", status="stopped")[0]
    for body in (
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": "p-2", "method": "ping", "params": {"_meta": {"x": 1}}},
        _call("guest_info", {"vmid": stopped, "show": "config"}),
        _call("guest_info", {"vmid": stopped, "show": "snapshots"}, "s", _meta={"trace": "t"}),
        _call("list_storage", {}),
        _call("guest_info", {"vmid": 99999999}),  # Proxmox says no: an is_error result
        _call("list_guests", {"limit": 0}),  # invalid argument, said in the model's terms
        _call("list_guests", {"no_such_argument": 1}),
    ):
        fast, slow, taken = both_ways(server, session, body)
        _same(fast, slow)
        assert taken == 1, body
    answer = both_ways(server, session, _call("list_guests", {"limit": 0}))[0].json()
    assert answer["result"]["isError"] is True
    assert "invalid argument: limit: must be at least 1" in answer["result"]["content"][0]["text"]


@pytest.mark.parametrize(
    "body",
    [
        _call("capabilities", {}),  # reads the session (can the client be asked?): ToolSpec.session
        _call("delete_guest", {"vmid": 100}),  # a change: SSE, it may wait for a task
        _call("list_guests", {}, _meta={"progressToken": "p"}),  # progress asked for: SSE
        _call("no_such_tool", {}),
        _call("list_guests", None),  # arguments that are not an object
        _call("list_guests", {}, task={"ttl": 1}),  # params the lane does not know
        {"jsonrpc": "2.0", "id": True, "method": "ping"},  # an id that is not a JSON-RPC id
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]},
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "extra": 1},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],  # a batch
    ],
)
def test_everything_else_goes_the_sdks_way(server: Any, body: Any) -> None:
    session = Session(server, "2025-11-25")
    express: Express = server.app.state.express
    before = express.served
    r = session.post(body)
    assert express.served == before, r.text
    assert r.status_code in (200, 202, 400), r.text


def test_a_session_of_an_older_version_goes_the_sdks_way(server: Any) -> None:
    """The SDK shapes answers by the session's version (its per-version sieve); the lane writes the shape
    of 2025-06-18 and 2025-11-25 only, so a session of another version stays out of it."""
    session = Session(server, "2025-03-26")
    fast, slow, taken = both_ways(server, session, _call("list_guests", {"limit": 1}))
    assert taken == 0 and fast.json() == slow.json()


def test_the_gates_before_the_lane_still_hold(server: Any) -> None:
    session = Session(server, "2025-11-25")
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    express: Express = server.app.state.express
    before = express.served
    # the transport's own checks answer as before
    assert session.post(ping, Accept="text/event-stream").status_code == 406
    assert session.post(ping, **{"Content-Type": "text/plain"}).status_code == 400  # transport security
    assert session.post(ping, Host="evil.example.com").status_code == 421  # Host check (DNS rebinding)
    assert session.post(ping, Origin="https://evil.example.com").status_code == 403
    # the session: another token, no token, a session ended by DELETE
    other = Session(server, "2025-11-25")
    other.sid = session.sid
    other.token = authtokens.add(server.config.auth_token_file, f"other{before}")
    assert other.post(ping).status_code == 404
    assert session.post(ping, Authorization="Bearer nope").status_code == 401
    assert session.post(ping).status_code == 200
    headers = _headers(session.token, session.version, session.sid)
    assert httpx2.delete(server.url, headers=headers, timeout=10).status_code == 200
    assert session.post(ping).status_code == 404
    assert express.served == before + 1  # only the one ping in an open session with a clean request


def test_a_scoped_token_sees_only_its_guests_through_the_lane(sim: Any, make_server: Any) -> None:
    """Who is calling reaches the tool through the lane too: a guest outside the token's scope is
    answered like one that does not exist, as the SDK's way answers it."""
    with make_server() as served:
        path: Path = served.config.auth_token_file
        token = authtokens.add(path, "webonly", TokenLimits(tags=("no-such-tag-anywhere",)))
        session = Session(served, "2025-11-25", token)
        vmid = guests_where(sim, type="qemu")[0]
        fast, slow, taken = both_ways(served, session, _call("guest_info", {"vmid": vmid}))
        _same(fast, slow)
        assert taken == 1 and fast.json()["result"]["isError"] is True
        listed = both_ways(served, session, _call("list_guests", {}))
        _same(listed[0], listed[1])
        assert listed[0].json()["result"]["structuredContent"]["total"] == 0


def test_a_fault_in_the_lane_is_a_json_rpc_error_and_the_session_goes_on(server: Any, monkeypatch) -> None:
    """Whatever the lane did not expect is answered as the SDK's POST handler answers it (500, -32603),
    not as a bare traceback page, and the next request is served."""
    session = Session(server, "2025-11-25")
    express: Express = server.app.state.express

    async def broken(message: Any, scope: Any) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(express, "answer", broken)
    r = session.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert r.status_code == 500 and r.json()["error"]["code"] == -32603
    monkeypatch.undo()
    assert session.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}).json()["result"] == {}
