"""Raw MCP messages for tests and benches that speak HTTP without the SDK client (to time or probe the
server itself)."""

from __future__ import annotations

from typing import Any

HANDSHAKE_VERSION = "2025-11-25"  # the session era Claude Code, mcp-remote and the Inspector speak


def initialize(client: str = "test", request_id: int = 1) -> dict[str, Any]:
    """An ``initialize`` request of the 2025-11 session era, declaring no client capabilities."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": client, "version": "1"},
        },
    }
