"""What the install points at: this host's Proxmox VE node, or the built-in simulator (`pmcp demo --stack`).

Chosen once, by ``target_for(opts)``; everything that differs between the two (how the installer runs
pvesh and reaches the API, the URL the server uses, the names clients may use, the certificate 8006
serves) is asked of the target, so the install's steps never test "is this the demo?" themselves.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmcp.paths import InstallPaths
from pmcp.stack import render

if TYPE_CHECKING:
    from pmcp.host.run import Pvesh
    from pmcp.lifecycle.install import InstallOptions


class ProxmoxNode:
    """This host's own Proxmox VE: the real pvesh, the API on 8006, pveproxy's certificate."""

    simulated = False

    def __init__(self, opts: InstallOptions) -> None:
        self.opts = opts

    def pvesh_command(self) -> list[str] | None:
        """None = the host's `pvesh`; `$PMCP_PVESH` lets tests and odd hosts name another one."""
        if self.opts.pvesh:
            return list(self.opts.pvesh)
        if os.environ.get("PMCP_PVESH"):
            return shlex.split(os.environ["PMCP_PVESH"])
        return None

    def pvesh_env(self) -> dict[str, str]:
        """Environment pvesh needs beyond the caller's (recorded in state.json: no secret)."""
        return {}

    def pvesh(self) -> Pvesh:
        from pmcp.host.run import Pvesh

        extra = self.pvesh_env()
        return Pvesh(self.pvesh_command(), env={**os.environ, **extra} if extra else None)

    def api_url(self) -> str:
        """The API as the installer (on the host) reaches it, to test the token."""
        return os.environ.get("PMCP_HOST_API_URL") or "https://127.0.0.1:8006"

    def api_verify(self) -> bool | str:
        ca = self.opts.proxmox_ca
        if not ca:
            return True
        return ca if Path(ca).exists() else True

    def server_url(self) -> str:
        """The API as the server's container reaches it: the node's own address, which pve-ssl.pem names."""
        if self.opts.proxmox_url:
            return self.opts.proxmox_url
        if os.environ.get("PMCP_PROXMOX_URL"):
            return os.environ["PMCP_PROXMOX_URL"]
        try:
            addr = socket.gethostbyname(socket.gethostname())
        except OSError:
            addr = "127.0.0.1"
        return f"https://{addr}:8006"

    def server_ca(self, prior: dict[str, Any]) -> str | None:
        """The CA file mounted into the server (the trust chosen earlier stays until install looks again)."""
        return prior.get("proxmox_ca", self.opts.proxmox_ca)

    def public_names(self) -> list[str]:
        return self.opts.public_names or host_names()

    def served_certificate(self) -> tuple[Path | None, Path | None]:
        """(CA that signs pve-ssl.pem, the custom chain pveproxy prefers when present)."""
        from pmcp.host import pvecert

        ca = Path(self.opts.proxmox_ca) if self.opts.proxmox_ca else None
        return ca, pvecert.PVEPROXY_CUSTOM


class Simulator(ProxmoxNode):
    """`pmcp sim` as one more service of the stack: its pvesh client, its CA, 127.0.0.1:<port>."""

    simulated = True

    def __init__(self, opts: InstallOptions) -> None:
        super().__init__(opts)
        assert opts.sim is not None
        self.sim = opts.sim

    def pvesh_command(self) -> list[str] | None:
        if self.opts.pvesh:
            return list(self.opts.pvesh)
        import zipfile

        argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
        frozen = argv0 is not None and argv0.is_file() and zipfile.is_zipfile(argv0)
        if frozen and argv0:
            return [str(argv0.resolve()), "sim", "pvesh"]
        # one process per API call, as the real pvesh: the module alone skips the CLI's imports (measured
        # 0.17 -> 0.09 CPU s per call; identity makes about a dozen)
        return [sys.executable, "-m", "pmcp.sim.pvesh"]

    def ca_file(self) -> str:
        return str(InstallPaths.at(self.opts.prefix).prefix / render.SIM_CA)

    def pvesh_env(self) -> dict[str, str]:
        env = {"PMCP_SIM_URL": self.api_url(), "PMCP_SIM_CA_FILE": self.ca_file()}
        if self.sim.custom_cert:  # the simulator's 8006 serves an ACME-style certificate (see pmcp.sim.tls)
            env["PMCP_SIM_CA_FILE"] = str(Path(self.ca_file()).parent / "acme-root.pem")
            env["PMCP_SIM_TLS_NAME"] = self.sim.custom_cert
        return env

    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.sim.port}"

    def api_verify(self) -> bool | str:
        return self.ca_file()

    def server_url(self) -> str:
        if self.opts.runtime == "systemd":  # the server runs on the host, as the installer does
            return self.api_url()
        return "https://pve-sim:8006"  # the simulator's service name on the stack's network

    def server_ca(self, prior: dict[str, Any]) -> str | None:
        return None  # the stack mounts the simulator's CA itself

    def public_names(self) -> list[str]:
        return self.opts.public_names or ["localhost", "127.0.0.1"]

    def served_certificate(self) -> tuple[Path | None, Path | None]:
        ca = Path(self.ca_file())
        return ca, ca.parent / "pveproxy-ssl.pem"


def target_for(opts: InstallOptions) -> ProxmoxNode:
    """The one place that decides: a simulator service in the options makes it the demo. ProxmoxNode is
    the interface the install asks; Simulator answers every question of it for the demo."""
    return Simulator(opts) if opts.sim else ProxmoxNode(opts)


def host_names() -> list[str]:
    """Names and addresses clients may use for this host (Caddy's certificate, allowed Host headers)."""
    names: list[str] = []
    fqdn, short = socket.getfqdn(), socket.gethostname()
    for n in (fqdn, short):
        if n and n not in names and n != "localhost":
            names.append(n)
    try:
        addr = socket.gethostbyname(short)
        if not addr.startswith("127."):
            names.append(addr)
    except OSError:
        pass
    return [*names, "localhost", "127.0.0.1"]
