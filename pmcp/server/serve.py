"""``pmcp serve``: check the bind address against the auth settings, then run the app under uvicorn."""

from __future__ import annotations

import logging
from typing import Any

from pmcp import authtokens
from pmcp.server.config import ConfigError, ServerConfig, is_loopback


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


def serve(host: str, port: int) -> None:
    import uvicorn

    from pmcp.server.app import create_app
    from pmcp.server.limits import PathOnlyAccessLog

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").addFilter(PathOnlyAccessLog())
    config = ServerConfig.from_env()
    check_bind(host, config)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        server_header=False,
        log_level="info",
        timeout_graceful_shutdown=5,
        **http_options(config),
    )
