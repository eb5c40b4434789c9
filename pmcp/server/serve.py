"""``pmcp serve``: check the bind address against the auth settings, then run the app under uvicorn.

Under systemd (``pmcp install --runtime systemd``) the listening socket comes from the socket unit
(``LISTEN_FDS``, sd_listen_fds(3)): it stays open while one server hands over to the next, so a client's
connection waits in its backlog instead of being refused. TLS is then terminated here (``PMCP_TLS_CERT_FILE``
/ ``PMCP_TLS_KEY_FILE``) and readiness is told to systemd (``READY=1``, sd_notify(3)) once uvicorn accepts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from typing import Any

from pmcp import authtokens
from pmcp.server.config import ConfigError, ServerConfig, is_loopback, wait_for_start_files


def check_bind(host: str, config: ServerConfig) -> None:
    """Refuse a non-loopback address unless clients must present a token from a usable token file."""
    if is_loopback(host):
        if config.auth_token_file is None:
            logging.getLogger("pmcp.server").warning(
                "no PMCP_AUTH_TOKEN_FILE: clients are not authenticated (allowed on loopback only)"
            )
        return
    if config.auth_token_file is None:
        raise ConfigError(
            f"refusing to listen on {host} without client authentication: set PMCP_AUTH_TOKEN_FILE to a "
            "NAME:TOKEN file (mode 0600), or listen on 127.0.0.1"
        )
    try:
        tokens = authtokens.load(config.auth_token_file)
    except (OSError, authtokens.TokenFileError) as exc:
        raise ConfigError(f"PMCP_AUTH_TOKEN_FILE={config.auth_token_file} is not usable: {exc}") from None
    if not tokens:
        raise ConfigError(f"PMCP_AUTH_TOKEN_FILE={config.auth_token_file} holds no token; add one first")


def http_options(config: ServerConfig) -> dict[str, Any]:
    """uvicorn settings every way of serving shares: a read deadline per request (a client that sends
    half a request and stalls gets 408 and loses its socket) and no proxy headers (the server itself
    decides whose X-Forwarded-For to believe, see pmcp.server.limits)."""
    from pmcp.server.limits import guarded_protocol

    return {
        "http": guarded_protocol(config.header_timeout, config.body_timeout),
        "proxy_headers": False,
    }


SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first passed descriptor
# How long a server handing over waits for its last connection: idle keep-alive ones close after uvicorn's
# keep-alive timeout (5 s), calls in flight after their Proxmox task (bounded by PMCP_TASK_TIMEOUT).
HAND_OVER_SECONDS = 150.0


def listen_fd() -> int | None:
    """The socket systemd passed to this process (socket activation), else None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    return SD_LISTEN_FDS_START if count >= 1 else None


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) this server's state; nothing when not run by systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(path)
        sock.sendall(state.encode())


def tls_options() -> dict[str, Any]:
    """uvicorn's TLS settings from PMCP_TLS_CERT_FILE / PMCP_TLS_KEY_FILE (both or neither)."""
    cert, key = os.environ.get("PMCP_TLS_CERT_FILE", ""), os.environ.get("PMCP_TLS_KEY_FILE", "")
    if bool(cert) != bool(key):
        raise ConfigError("PMCP_TLS_CERT_FILE and PMCP_TLS_KEY_FILE go together: set both, or neither")
    return {"ssl_certfile": cert, "ssl_keyfile": key} if cert else {}


def serve(host: str, port: int) -> None:
    # No cyclic garbage collection while the server starts: importing the MCP SDK and building the tools
    # make hundreds of thousands of objects and no garbage, and the collector ran over them again and
    # again (measured: 0.72 -> 0.67 s for these imports, median of 6). Once serving, what the start made
    # is frozen (gc.freeze: never scanned again, so a later full collection is short) and collection is on.
    gc.disable()
    import uvicorn

    from pmcp.server.app import create_app
    from pmcp.server.limits import PathOnlyAccessLog
    from pmcp.server.sessions import DRAIN_SIGNAL

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").addFilter(PathOnlyAccessLog())
    # imported by now: what an install's early start overlaps with the Proxmox token's making
    wait_for_start_files(log=logging.getLogger("pmcp.server").info)
    config = ServerConfig.from_env()
    fd = listen_fd()
    # a passed socket listens where the socket unit says: treat it as public (a token file is required)
    check_bind("0.0.0.0" if fd is not None else host, config)
    where: dict[str, Any] = {"fd": fd} if fd is not None else {"host": host, "port": port}

    app = create_app(config)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)  # the app's lifespan (warm-up included), then the sockets
            gc.freeze()
            gc.enable()
            if self.started:
                sd_notify("READY=1")
                if fd is not None:  # replaces the session layer's drain handler; hand_over drains too
                    asyncio.get_running_loop().add_signal_handler(DRAIN_SIGNAL, self.hand_over)

        def hand_over(self) -> None:
            """SIGUSR1 under systemd's socket: stop taking connections (the next server, started beside
            this one, takes them from the same socket), hand the sessions over, and exit once the last
            connection is done: calls in flight finish here, none is cut by a stop."""
            sd_notify("STOPPING=1")
            for server in self.servers:
                server.close()  # this process's copy of the socket: systemd's stays open
            sessions = getattr(app.state, "sessions", None)
            if sessions is not None:
                sessions.drain()
            self._idle_exit = asyncio.get_running_loop().create_task(self._exit_when_idle())

        async def _exit_when_idle(self) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + HAND_OVER_SECONDS
            while self.server_state.connections and loop.time() < deadline:
                await asyncio.sleep(0.05)
            self.should_exit = True

        async def shutdown(self, sockets: Any = None) -> None:
            sd_notify("STOPPING=1")
            await super().shutdown(sockets)

    uconfig = uvicorn.Config(
        app,
        **where,
        server_header=False,
        log_level="info",
        timeout_graceful_shutdown=5,
        **tls_options(),
        **http_options(config),
    )
    uconfig.load_app()
    server = Server(uconfig)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits
