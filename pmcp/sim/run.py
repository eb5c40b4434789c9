"""``pmcp sim serve``: run the simulator in the foreground until interrupted."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TextIO

from pmcp.sim.hostfw import LOOPBACK
from pmcp.sim.server import default_gateway, make_server, start_ticker
from pmcp.sim.state import DEFAULT_ROOT_TOKEN, ROOT_TOKEN_ENV, SimState


def serve(
    host: str = "127.0.0.1",
    port: int = 8006,
    nodes: int = 3,
    guests: int = 50,
    seed: int = 1,
    task_seconds: float = 1.0,
    tls: bool = False,
    state_file: str | None = None,
    tls_dir: str | None = None,
    tls_names: tuple[str, ...] = (),
    verbose: bool = False,
    pve_version: int = 9,
    out: TextIO = sys.stdout,
    tls_ca_key_usage: bool = False,
    tls_custom_name: str | None = None,
    local_addrs: tuple[str, ...] = (),
    firewall: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM; with ``state_file`` the world is saved on every change and on exit.

    ``firewall``: a fresh world starts with the cluster firewall on (policy_in DROP), as a host whose
    admin enabled it. ``local_addrs``: sources that count as the node itself (``-i lo``); ``gateway``
    is this machine's default gateway (the host, when the simulator runs in a container).
    """
    state = SimState(nodes, guests, seed, task_seconds, state_file=state_file, pve_version=pve_version)
    if firewall and not (state_file and Path(state_file).exists() and Path(state_file).stat().st_size):
        state.world["firewall"]["cluster"]["options"]["enable"] = 1
    state.save()  # fail now, with the reason, when the state file cannot be written
    addrs = tuple(a for a in ((default_gateway() or "") if a == "gateway" else a for a in local_addrs) if a)
    server = make_server(state, host, port, verbose=verbose, lo=(*LOOPBACK, *addrs))
    scheme = "http"
    ca_line = ""
    if tls:
        from pmcp.sim.tls import default_names, make_certs, server_context

        directory = (
            Path(tls_dir)
            if tls_dir
            else (
                Path(state_file).resolve().parent / "sim-tls"
                if state_file
                else Path(tempfile.mkdtemp(prefix="pmcp-sim-tls-"))
            )
        )
        files = make_certs(directory, default_names(host, tls_names), tls_ca_key_usage, tls_custom_name)
        server.tls_context = server_context(files)
        scheme = "https"
        ca_line = f"  CA file:  {files.ca_file}  (clients verify with it; PMCP_SIM_CA_FILE for pvesh)\n"
        if tls_custom_name:
            ca_line += f"  Port cert: {directory / 'pveproxy-ssl.pem'} (custom, for {tls_custom_name} only)\n"
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if state.root_token == DEFAULT_ROOT_TOKEN:
        shown_token = f"{DEFAULT_ROOT_TOKEN}  (the well-known dev credential)"
    else:
        shown_token = f"{state.root_userid}!{state.root_tokenid}=<secret from {ROOT_TOKEN_ENV}>"
    print(
        f"Proxmox VE {state.world.get('pve_version')} simulator ({len(state.world['nodes'])} nodes, "
        f"{len(state.world['guests'])} guests, seed {state.world.get('seed')})\n"
        f"  API:      {scheme}://{shown}:{server.server_address[1]}/api2/json\n"
        f"{ca_line}"
        f"  Auth:     Authorization: PVEAPIToken={shown_token}\n"
        f"            (root, not privilege-separated; `pmcp sim pvesh get /version` uses it)\n"
        f"  State:    {state_file or 'in memory'}",
        file=out,
        flush=True,
    )
    stop = threading.Event()
    start_ticker(state, stop)

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        state.save()
