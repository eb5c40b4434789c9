"""Protocol hygiene a client sees: only served capabilities are advertised; unserved methods are proper
JSON-RPC errors (method not found), in both protocol eras."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
import pytest

from tests.support.mcp_raw import initialize

from .conftest import connect


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_only_tools_are_advertised(server: Any, mode: str) -> None:
    async def go() -> Any:
        async with connect(server, mode=mode) as client:
            return client.server_capabilities

    caps = anyio.run(go)
    assert caps.tools is not None
    assert caps.prompts is None and caps.resources is None


def _post(server: Any, body: dict[str, Any], session: str | None = None) -> httpx2.Response:
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    if session:
        headers["Mcp-Session-Id"] = session
    return httpx2.post(server.url, content=json.dumps(body), headers=headers, timeout=30)


def _rpc(response: httpx2.Response) -> dict[str, Any]:
    text = response.text
    if "text/event-stream" in response.headers.get("content-type", ""):
        data = [
            line[5:].strip() for line in text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        return json.loads(data[-1])
    return json.loads(text)


INIT = initialize("t")


def test_an_unknown_prompt_is_method_not_found(server: Any) -> None:
    r = _post(server, INIT)
    assert r.status_code == 200
    session = r.headers.get("mcp-session-id")
    _post(server, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    for method, params in (
        ("prompts/get", {"name": "nope"}),
        ("resources/read", {"uri": "file:///etc/passwd"}),
    ):
        answer = _rpc(_post(server, {"jsonrpc": "2.0", "id": 2, "method": method, "params": params}, session))
        assert answer["error"]["code"] == -32601, answer
