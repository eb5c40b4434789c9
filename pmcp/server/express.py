"""The express lane: the calls an agent makes most, answered without the SDK's dispatcher.

Why: in a handshake-era session (Claude Code, Cursor, VS Code, mcp-remote, the Inspector) a read is
most of what an agent sends, and the SDK carries each one through its transport, three memory
streams and the tasks between them, its dispatcher and runner, a pydantic validation of the JSON-RPC
envelope and of the result against the protocol version's surface. Measured at 50 guests with a plain
client (bench_peers.py): a JSON-RPC ``ping`` cost 2.0 ms through that path, more than the direct
Proxmox call the agent asked for (1.8 ms); see BENCHMARKS.md for the figures with this lane.

What it serves, and only when everything about the request is ordinary: in a session that
``initialize`` opened with protocol version 2025-06-18 or 2025-11-25 (``EXPRESS_VERSIONS``: a
CallToolResult has the same fields in both, so the SDK's per-version sieve would change nothing), a
single POSTed request that framing.py answers as one JSON body anyway (no ``progressToken``, not a
change tool): ``ping``, and ``tools/call`` of a read tool whose body does not read the MCP session
(``ToolSpec.session``). The message must be one the SDK would accept as it is (``takes``); anything
else — a batch, another method, extra or malformed params, a change, a 2026-07 request (those never
reach a session transport) — goes the SDK's way, which answers or refuses it as before.

What it keeps: everything before the transport's POST handler has run (auth, client limits, the
Host/Origin check, the session lookup and its token binding, restore after an update, the idle
timeout's accounting, a terminated session's 404), and so has the transport's own Accept,
Content-Type and session-header checks (framing.AdaptiveTransport). The call itself goes through
``MCPServer.call_tool`` as before (argument validation, policy, scope, audit, metrics, the error
texts); only the envelope is written here. tests/unit/server/test_express.py sends the same requests
both ways and compares the answers.

What it gives up: a ``notifications/cancelled`` for an express request finds nothing to cancel (a read
lasts milliseconds, and its answer is then simply not read).
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from pydantic_core import to_json

from pmcp.server.registry import DirectContext, declared

log = logging.getLogger("pmcp.express")

EXPRESS_VERSIONS = frozenset({"2025-06-18", "2025-11-25"})
_MESSAGE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_CALL_KEYS = frozenset({"name", "arguments", "_meta"})


class Express:
    """Serves ``takes(message)`` requests of one app; ``enabled`` False sends everything the SDK's way."""

    def __init__(self, mcp: Any, *, enabled: bool = True) -> None:
        self.mcp = mcp  # the app's PolicyFilteredServer
        self.enabled = enabled
        self.served = 0

    def takes(self, message: Any, version: str | None) -> bool:
        """True for a ping or a read tool call, in a message the SDK would accept unchanged.

        ``message`` is one framing.answer_as_json accepted (its one caller, AdaptiveTransport, asks only
        then): a single request without a progress token, and no change tool. What is checked here is
        what the lane needs besides: the session's version, a message the SDK takes as it is, and a
        tool that does not read the session."""
        if not self.enabled or version not in EXPRESS_VERSIONS or not isinstance(message, dict):
            return False
        if message.get("jsonrpc") != "2.0" or not message.keys() <= _MESSAGE_KEYS:
            return False
        rid = message.get("id")
        if isinstance(rid, bool) or not isinstance(rid, int | str):
            return False
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            return False
        if not isinstance((params or {}).get("_meta", {}), dict):
            return False
        method = message.get("method")
        if method == "ping":
            return params is None or params.keys() <= {"_meta"}
        if method != "tools/call" or params is None or not params.keys() <= _CALL_KEYS:
            return False
        name, arguments = params.get("name"), params.get("arguments", {})
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return False
        spec = declared().get(name)
        return spec is not None and not spec.session

    async def answer(self, message: dict[str, Any], scope: dict[str, Any]) -> bytes:
        """The JSON-RPC answer to a message ``takes`` accepted, as the SDK would write it."""
        rid = message["id"]
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if message["method"] == "ping":
            answer["result"] = {}
        else:
            params = message["params"]
            try:
                answer["result"] = await self._call(params["name"], params.get("arguments", {}), scope)
            except MCPError as exc:  # the SDK answers these as a JSON-RPC error, not a tool result
                answer["error"] = exc.error.model_dump(by_alias=True, mode="json", exclude_none=True)
        self.served += 1
        # compact UTF-8, as the SDK writes it: 17 against 67 us with json.dumps (a 40-guest page)
        return to_json(answer)

    async def _call(self, name: str, arguments: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        """``tools/call`` as MCPServer._handle_call_tool does it, with the request scope for context."""
        try:
            result = await self.mcp.call_tool(name, arguments, DirectContext(scope))
        except MCPError:
            raise
        except Exception as exc:  # the SDK's own rule: a tool's failure is an is_error result
            if isinstance(exc, ToolError) and not isinstance(exc, UnexpectedToolError):
                log.info("Tool %r failed: %r", name, str(exc))
            else:
                log.exception("Tool %r raised an unexpected exception", name)
            result = CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        # the SDK's sieve for a handshake version drops the 2026-07 field (mcp_types serialize_server_result)
        dumped.pop("resultType", None)
        return dumped
