"""The MCP server (``pmcp serve``): authenticated Streamable HTTP, curated Proxmox tools, policy, audit.

``config`` (one validated object from the environment) -> ``app.create_app(config)`` (ASGI: auth
outermost, /health, /metrics, /mcp) -> ``registry`` (risk-declared tools, the call wrapper) ->
``tools/*`` (one module per domain) -> ``proxmox`` (API client, task outcomes) with ``validate``,
``policy`` and ``audit`` beside them. Nothing here is imported by ``pmcp --help``.
"""
