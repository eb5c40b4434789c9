"""An installed server warms up before it takes connections: during an update the old one answers
meanwhile, and the first clients of the new one must not wait for its tools and its Proxmox session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.server.app import create_app
from pmcp.server.config import Mode, ServerConfig


def _config(sim: Any, tmp_path: Path, **extra: Any) -> ServerConfig:
    return ServerConfig(
        proxmox_url=sim.url,
        proxmox_token_id=sim.root_token_id,
        proxmox_token_secret=sim.root_token_secret,
        allowed_hosts=("localhost",),
        mode=Mode.READ_ONLY,
        **extra,
    )


def _started(config: ServerConfig) -> tuple[bool, bool]:
    """(tools built, Proxmox session open) once the app's startup is done, before any request."""
    app = create_app(config)

    async def start() -> tuple[bool, bool]:
        async with app.router.lifespan_context(app):
            mcp, proxmox = app.state.mcp, app.state.runtime.proxmox
            return mcp._rt is None, proxmox._http is not None

    return anyio.run(start)


@pytest.mark.parametrize("installed", [True, False])
def test_an_installed_server_is_warm_before_its_first_client(sim: Any, tmp_path: Path, installed: bool):
    extra = {"session_dir": tmp_path / "sessions"} if installed else {}
    tools_built, proxmox_open = _started(_config(sim, tmp_path, **extra))
    # installed: everything ready; a bare `pmcp serve` (a client spawned it) answers initialize first
    assert tools_built is installed and proxmox_open is installed
