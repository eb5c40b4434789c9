"""Run the simulator in-process for tests: ``with running_sim(...) as sim:``.

``sim.url`` (``http://127.0.0.1:PORT``; the API is at ``sim.url + "/api2/json"``),
``sim.root_token_id`` / ``sim.root_token_secret`` (a root@pam token, not privilege-separated),
``sim.ca_file`` (with ``tls=True``), ``sim.state`` (a :class:`~pmcp.sim.state.SimState`: ``fail_next``,
``inject_latency``, ``inject_errors``, ``requests``), ``sim.env()`` (variables for ``pmcp sim pvesh``)
and ``sim.request(...)`` (a tiny stdlib client for assertions).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmcp.sim.client import call
from pmcp.sim.server import make_server, start_ticker
from pmcp.sim.state import SimState


@dataclass
class RunningSim:
    url: str
    host: str
    port: int
    state: SimState
    ca_file: str | None

    @property
    def api_url(self) -> str:
        return self.url + "/api2/json"

    @property
    def root_token_id(self) -> str:
        return f"{self.state.root_userid}!{self.state.root_tokenid}"

    @property
    def root_token_secret(self) -> str:
        return self.state.root_secret

    @property
    def root_token(self) -> str:
        """``root@pam!ID=SECRET``: the value for ``PMCP_SIM_ROOT_TOKEN``."""
        return self.state.root_token

    def env(self) -> dict[str, str]:
        """Environment for a ``pmcp sim pvesh`` / ``pveversion`` subprocess talking to this sim."""
        env = {"PMCP_SIM_URL": self.url, "PMCP_SIM_ROOT_TOKEN": self.root_token}
        if self.ca_file:
            env["PMCP_SIM_CA_FILE"] = self.ca_file
        return env

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Call the API as ``token`` (``USER@REALM!ID=SECRET``; default root); returns (status, body)."""
        return call(self.api_url, method, path, token or self.root_token, params, self.ca_file)


@contextmanager
def running_sim(
    nodes: int = 3,
    guests: int = 50,
    seed: int = 1,
    task_seconds: float = 0.2,
    tls: bool = False,
    state_file: str | os.PathLike[str] | None = None,
    root_token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    pve_version: int = 9,
    ca_key_usage: bool = False,
    custom_cert_name: str | None = None,
    lo: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
) -> Iterator[RunningSim]:
    """Start the simulator on a free port in a background thread; stop it on exit.

    ``pve_version=8`` pretends to be Proxmox VE 8.4 (42 privileges, ``VM.Monitor``).
    ``lo``: the source networks the modelled host firewall counts as the node itself (pmcp.sim.hostfw);
    e.g. ``("127.0.0.1/32",)`` makes a client bound to 127.0.0.2 an outside source.
    """
    state = SimState(
        nodes,
        guests,
        seed,
        task_seconds,
        root_token=root_token,
        state_file=state_file,
        pve_version=pve_version,
    )
    server = make_server(state, host, port, lo=lo)
    ca_file = None
    tmp = None
    if tls:
        from pmcp.sim.tls import default_names, make_certs, server_context

        tmp = tempfile.TemporaryDirectory(prefix="pmcp-sim-tls-")
        files = make_certs(Path(tmp.name), default_names(host), ca_key_usage, custom_cert_name)
        server.tls_context = server_context(files)
        ca_file = str(files.ca_file)
    real_port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{real_port}"
    stop = threading.Event()
    start_ticker(state, stop)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield RunningSim(url, host, real_port, state, ca_file)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        state.save()
        if tmp is not None:
            tmp.cleanup()
