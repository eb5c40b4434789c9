"""pmcp: a least-privilege MCP server for Proxmox VE, and the one-file tool that installs it."""

__version__ = "0.1.0"
DEFAULT_PREFIX = "/opt/proxmox-mcp"  # the install dir; the one place it is spelled (pmcp.paths re-exports)
