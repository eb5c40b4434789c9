"""``pmcp demo``: the real server against the built-in simulator, on loopback, until Ctrl-C.

Everything lives in a private temporary directory (token file, Proxmox secret, audit log) that is
removed on exit. The demo proves itself with one real MCP call before it prints "ready".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmcp import authtokens
from pmcp.files import atomic_write
from pmcp.server.config import Approval, ConfigError, Mode, ServerConfig


@dataclass
class DemoInfo:
    url: str
    token: str
    sim_url: str
    audit_log: str
    proof: str
    # the simulator itself, for a caller in this process (`on_ready`): the tests check the world behind
    # every answer an agent gets from the demo
    sim: Any = field(default=None, repr=False, compare=False)

    @property
    def claude_line(self) -> str:
        return (
            f'claude mcp add --transport http pmcp {self.url} --header "Authorization: Bearer {self.token}"'
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_thread(app: object, host: str, port: int, **options: Any) -> Iterator[int]:
    """Serve ``app`` in a background thread; yields the bound port once it accepts connections.
    ``options`` go to uvicorn (``pmcp.server.serve.http_options``: read deadlines)."""
    import uvicorn

    # A client's open GET stream would keep uvicorn's graceful shutdown waiting for ever; its loop's
    # worker threads (anyio's are not daemon threads) then keep the process from exiting after Ctrl-C
    # (seen once in CI: `pmcp demo` still running 30 s after SIGINT). Streams get 3 s, as a server's do.
    options.setdefault("timeout_graceful_shutdown", 3)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", server_header=False, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="pmcp-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the server did not start on {host}:{port}; is the port taken? Try --port")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield bound
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def prove(url: str, token: str) -> str:
    """One real MCP call with the SDK client, as an agent would make it."""
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool("cluster_overview", {})
    if result.is_error:
        raise ConfigError(f"the proof call failed: {result.content[0].text if result.content else '?'}")
    return result.content[0].text.splitlines()[0]


def run_demo(
    port: int,
    mode: str,
    guests: int,
    json_info: str | None,
    echo: Callable[[str], None],
    wait: Callable[[], None] | None = None,
    on_ready: Callable[[DemoInfo], None] | None = None,
    approval: str = "confirm",
) -> None:
    import secrets as _secrets

    import anyio

    from pmcp.server.app import create_app
    from pmcp.server.serve import http_options
    from pmcp.sim.testing import running_sim

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="pmcp-demo-"))
    os.chmod(workdir, 0o700)
    try:
        with running_sim(nodes=3, guests=guests, seed=1, task_seconds=1.0, tls=False) as sim:
            secret = workdir / "proxmox-token"
            secret.write_text(sim.root_token_secret + "\n")
            secret.chmod(0o600)
            tokens = workdir / "client-tokens"
            token = authtokens.add(tokens, "demo")
            config = ServerConfig(
                proxmox_url=sim.url,
                proxmox_token_id=sim.root_token_id,
                proxmox_token_secret=sim.root_token_secret,
                auth_token_file=tokens,
                allowed_hosts=("localhost",),
                mode=Mode(mode),
                approval=Approval(approval),
                audit_log=workdir / "audit.jsonl",
                audit_key=_secrets.token_hex(32).encode(),  # the demo's log goes with its directory
            )
            with uvicorn_thread(create_app(config), "127.0.0.1", port, **http_options(config)) as bound:
                url = f"http://127.0.0.1:{bound}/mcp"
                proof = anyio.run(prove, url, token)
                info = DemoInfo(url, token, sim.url, str(config.audit_log), proof, sim)
                if json_info:
                    _write_private(Path(json_info), json.dumps({"url": url, "token": token}) + "\n")
                echo(
                    f"pmcp demo: the real MCP server, a simulated {guests}-guest Proxmox cluster, {mode} mode"
                )
                echo(f"  MCP URL:   {url}")
                echo(f"  token:     {token}")
                echo(f"  audit log: {info.audit_log}")
                echo(f"  proof:     cluster_overview -> {proof}")
                echo("Connect Claude Code:")
                echo(f"  {info.claude_line}")
                echo("Serving until Ctrl-C.")
                if on_ready:
                    on_ready(info)
                (wait or _wait_for_signal)()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_signal() -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_private(path: Path, text: str) -> None:
    """Like every secret file: a fresh 0600 file renamed into place, so a symlink or an existing file at
    ``path`` is replaced, never followed or written through (and never keeps its old mode)."""
    if path.is_dir():
        raise ConfigError(f"--json-info {path} is a directory; give a file name")
    atomic_write(path, text, 0o600)
