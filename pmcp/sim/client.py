"""The simulator's stdlib client: one API call, as ``pmcp sim pvesh`` and the tests make it.

Kept apart from the simulator's server (pmcp.sim.testing imports it): ``pmcp sim pvesh`` is one process per
call, as the real pvesh, and the installer makes a dozen of them; without the server's modules each costs
about half the CPU time (measured: 0.19 s -> see pvesh.py).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from pmcp import pvetls

DEFAULT_ROOT_TOKEN = "root@pam!pmcp-sim=00000000-0000-4000-8000-000000000000"
ROOT_TOKEN_ENV = "PMCP_SIM_ROOT_TOKEN"


def call(
    api_url: str,
    method: str,
    path: str,
    token: str | None,
    params: dict[str, Any] | None = None,
    ca_file: str | None = None,
    insecure: bool = False,
    timeout: float = 30,
) -> tuple[int, dict[str, Any]]:
    """One API call with the standard library: GET/DELETE in the query, POST/PUT as a form."""
    items: list[tuple[str, str]] = []
    for k, v in (params or {}).items():
        for item in v if isinstance(v, list | tuple) else [v]:
            items.append((k, str(int(item)) if isinstance(item, bool) else str(item)))
    encoded = urlencode(items)
    url = api_url + quote(path, safe="/:@!=,")
    data = None
    if method in ("GET", "DELETE"):
        if encoded:
            url += "?" + encoded
    else:
        data = encoded.encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    if token:
        req.add_header("Authorization", f"PVEAPIToken={token}")
    ctx = None
    if url.startswith("https:"):
        # pvetls: the simulator's CA has no keyUsage, like real hosts', which Python 3.13 refuses by default
        ctx = pvetls.context(ca_file) if not insecure else ssl._create_unverified_context()
        if os.environ.get("PMCP_SIM_TLS_NAME") and not insecure:
            # The simulator serves a custom certificate for another name (--tls-custom-cert): the real
            # pvesh makes no TLS connection at all (it calls the API in-process), so its stand-in checks
            # the chain (PMCP_SIM_CA_FILE: the custom CA) and not the name.
            ctx.check_hostname = False
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        body = e.read()
        if not body:  # a failed login: the message is only the reason phrase
            return e.code, {"data": None, "reason": e.reason}
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, {"data": None, "message": body.decode(errors="replace")}
