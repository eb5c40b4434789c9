"""The images of the stack. Production defaults are the public images; tests override them."""

from __future__ import annotations

from pmcp import __version__

PYTHON_BASE = "python:3.11-slim"
CADDY = "caddy:2.10-alpine"
PROMETHEUS = "prom/prometheus:v3.5.0"
MCP_REPO = "pmcp/mcp-server"


def mcp_image(version: str = __version__) -> str:
    """The MCP server image: a Python base plus this very pmcp file, built locally."""
    return f"{MCP_REPO}:{version}"
