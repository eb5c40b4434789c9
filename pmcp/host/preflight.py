"""Facts about the host before install changes anything.

``Preflight`` changes nothing: its check() gathers ``HostFacts`` and raises one ``StepError`` listing every
blocking failure (each one line with its fix), so an admin fixes them all in one go instead of one per run.

Interfaces (stable, used by pmcp.lifecycle):
    PreflightOptions(require_root=True, require_pve=True, require_docker=True, node=None,
                     ports=DEFAULT_PORTS, prefix=Path("/opt/proxmox-mcp"), min_free_mb=1024,
                     compose_project=None, pvesh=None, pveversion_cmd=None, docker_base_url=None,
                     compose_finder=None, sys_class_net=Path("/sys/class/net"), iptables_cmd=("iptables",))
    HostFacts(pve_version, pve_major, node, docker_version, docker_major, compose_cmd, compose_version,
              bridges, forward_policy, free_mb, docker_root, ports_in_use_by_stack)
    Preflight(options).check() -> Plan (no changes; notes = facts); .facts: HostFacts after check()
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmcp.errors import NotReady
from pmcp.files import path_fix, unsafe_path
from pmcp.host.dockeruser import forward_policy, major_version, vm_bridges
from pmcp.host.run import CommandError, Pvesh, PveshError, parse_pveversion, pveversion
from pmcp.paths import DEFAULT_PREFIX
from pmcp.steps import Plan, StepError

DEFAULT_PORTS: tuple[tuple[str, int], ...] = (("0.0.0.0", 443), ("0.0.0.0", 80), ("127.0.0.1", 8080))
SUPPORTED_PVE = (8, 9)


@dataclass
class PreflightOptions:
    require_root: bool = True
    require_pve: bool = True
    require_docker: bool = True
    node: str | None = None
    ports: Sequence[tuple[str, int]] = DEFAULT_PORTS
    prefix: Path = Path(DEFAULT_PREFIX)
    min_free_mb: int = 1024
    compose_project: str | None = None
    pvesh: Pvesh | None = None
    pveversion_cmd: Sequence[str] | None = None
    docker_base_url: str | None = None
    compose_finder: Callable[[], tuple[list[str], str]] | None = None
    sys_class_net: Path = Path("/sys/class/net")
    iptables_cmd: Sequence[str] = ("iptables",)


@dataclass
class HostFacts:
    pve_version: str = ""
    pve_major: int = 0
    node: str = ""
    docker_version: str = ""
    docker_major: int = 0
    compose_cmd: list[str] = field(default_factory=list)
    compose_version: str = ""
    bridges: list[str] = field(default_factory=list)
    forward_policy: str | None = None
    free_mb: int = 0
    docker_root: str = ""
    ports_in_use_by_stack: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _default_compose_finder() -> tuple[list[str], str]:
    from pmcp.stack.compose import find_compose

    found = find_compose()  # a compose run of this process (the demo's simulator) already probed it
    return list(found.argv), ".".join(map(str, found.version))


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (binding is the only reliable test, and changes nothing)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


class Preflight:
    """Step: checks the host can take the stack; changes nothing."""

    name = "preflight"

    def __init__(self, options: PreflightOptions | None = None) -> None:
        self.options = options or PreflightOptions()
        self.facts = HostFacts()
        self.failures: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def _fail(self, message: str, fix: str) -> None:
        self.failures.append((message, fix))

    def check(self) -> Plan:
        self.facts = HostFacts()
        self.failures = []
        self.notes = []
        o = self.options
        if o.require_root and os.geteuid() != 0:
            self._fail("pmcp install must run as root", "sudo pmcp install ...")
        # pveversion, pvesh, compose's version and iptables are each a process (a real pvesh is a Perl
        # one): they run side by side with the engine's checks; notes and failures keep this order
        slow = [
            *([Preflight._check_pve] if o.require_pve else []),
            Preflight._check_node,
            *([Preflight._check_compose] if o.require_docker else []),
            Preflight._check_forwarding,
        ]
        with ThreadPoolExecutor(max_workers=len(slow)) as pool:
            running = [(check, pool.submit(self._apart, check)) for check in slow]
            client = self._check_docker() if o.require_docker else None
            found = {check: f.result() for check, f in running}
        for check in slow[:-1]:
            self._merge(found[check])
        self._check_ports(client)
        self._check_disk()
        self._check_prefix()
        self._merge(found[Preflight._check_forwarding])
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self.failures:
            lines = [f"{m} (fix: {f})" for m, f in self.failures]
            message = self.failures[0][0] if len(lines) == 1 else f"{len(lines)} preflight checks failed"
            raise NotReady(message, fix=" ; ".join(f for _, f in self.failures), detail="\n".join(lines))
        return Plan(notes=self.notes)

    def _apart(self, check: Callable[[Preflight], None]) -> Preflight:
        """Run one check with notes and failures of its own (facts are shared: each sets its own)."""
        sub = Preflight(self.options)
        sub.facts = self.facts
        check(sub)
        return sub

    def _merge(self, sub: Preflight) -> None:
        self.notes += sub.notes
        self.failures += sub.failures

    def apply(self) -> None:
        """Nothing to change: preflight only looks."""

    def undo(self) -> None:
        """Nothing was changed."""

    # -- individual checks -------------------------------------------------------------------------------

    def _check_pve(self) -> None:
        try:
            out = pveversion(self.options.pveversion_cmd)
            major, version = parse_pveversion(out)
        except (CommandError, ValueError) as exc:
            self._fail(f"not a Proxmox VE host: {exc}", "run pmcp on a Proxmox VE 8 or 9 node")
            return
        self.facts.pve_version, self.facts.pve_major = version, major
        if major not in SUPPORTED_PVE:
            self._fail(
                f"Proxmox VE {version} is not supported (8 or 9 is)",
                "upgrade Proxmox VE: https://pve.proxmox.com/wiki/Upgrade_from_8_to_9",
            )
        else:
            self.notes.append(f"Proxmox VE {version}")

    def _check_node(self) -> None:
        o = self.options
        pvesh = o.pvesh or Pvesh()
        with ThreadPoolExecutor(max_workers=1) as pool:
            # which node is local: asked beside /nodes (two pvesh processes at once)
            cluster = pool.submit(pvesh.get, "/cluster/status") if o.node is None else None
            return self._judge_node(pvesh, cluster)

    def _judge_node(self, pvesh: Pvesh, cluster: Any) -> None:
        o = self.options
        try:
            nodes = [n["node"] for n in pvesh.get("/nodes") or []]
        except PveshError as exc:
            if o.require_pve or o.node is None:
                self._fail(
                    f"cannot list Proxmox nodes through pvesh: {exc.message}", "systemctl status pveproxy"
                )
            else:
                self.facts.node = o.node
            return
        node = o.node
        if node is None:
            with contextlib.suppress(PveshError, TypeError, KeyError):
                status = cluster.result() or []
                local = [e["name"] for e in status if e.get("type") == "node" and e.get("local")]
                node = local[0] if local else None
        if node is None:
            host = socket.gethostname().split(".")[0]
            node = host if host in nodes else (nodes[0] if len(nodes) == 1 else None)
        if node is None or node not in nodes:
            self._fail(
                f"cannot tell which Proxmox node this is ({node or socket.gethostname()} is not one of: "
                f"{', '.join(nodes) or 'none'})",
                "pass the node name explicitly (pmcp install --node NAME)",
            )
            return
        self.facts.node = node
        self.notes.append(f"node {node}")

    def _check_docker(self) -> Any:
        try:
            import docker
        except ImportError:
            self._fail(
                "the docker Python SDK is missing from this pmcp build", "use the released dist/pmcp file"
            )
            return None
        try:
            client = (
                docker.DockerClient(base_url=self.options.docker_base_url, timeout=20)
                if self.options.docker_base_url
                else docker.from_env(timeout=20)
            )
            version = client.version()
            info = client.info()
        except Exception as exc:
            self._fail(
                f"Docker engine not reachable: {str(exc).splitlines()[0][:200]}",
                "apt-get install docker.io && systemctl enable --now docker",
            )
            return None
        self.facts.docker_version = str(version.get("Version", ""))
        self.facts.docker_major = major_version(self.facts.docker_version)
        self.facts.docker_root = str(info.get("DockerRootDir", ""))
        self.notes.append(f"Docker {self.facts.docker_version}")
        return client

    def _check_compose(self) -> None:
        finder = self.options.compose_finder or _default_compose_finder
        try:
            cmd, version = finder()
        except StepError as exc:
            self._fail(exc.message, exc.fix)
            return
        self.facts.compose_cmd, self.facts.compose_version = list(cmd), version
        self.notes.append(f"compose: {' '.join(cmd)} {version}")

    def _own_ports(self, client: Any) -> set[int]:
        project = self.options.compose_project
        if client is None or not project:
            return set()
        ports: set[int] = set()
        with contextlib.suppress(Exception):
            for c in client.containers.list(filters={"label": f"com.docker.compose.project={project}"}):
                for bindings in (c.ports or {}).values():
                    for b in bindings or []:
                        with contextlib.suppress(KeyError, ValueError, TypeError):
                            ports.add(int(b["HostPort"]))
        return ports

    def _check_ports(self, client: Any) -> None:
        own = self._own_ports(client)
        for host, port in self.options.ports:
            try:
                free = port_free(host, port)
            except OSError as exc:
                self._fail(f"cannot test port {host}:{port}: {exc.strerror}", "choose another port")
                continue
            if free:
                continue
            if port in own:
                self.facts.ports_in_use_by_stack.append(port)
                continue
            self._fail(
                f"port {port} on {host} is already in use",
                f"find the owner with `ss -ltnp 'sport = :{port}'` and stop it, or choose another port",
            )

    def _check_disk(self) -> None:
        o = self.options
        places = [_existing_parent(o.prefix)]
        if self.facts.docker_root and Path(self.facts.docker_root).exists():
            places.append(Path(self.facts.docker_root))
        free = []
        for place in places:
            mb = shutil.disk_usage(place).free // (1024 * 1024)
            free.append(mb)
            if mb < o.min_free_mb:
                self._fail(
                    f"only {mb} MiB free under {place} (need {o.min_free_mb} MiB)",
                    f"free space under {place} (docker system prune; apt-get clean)",
                )
        self.facts.free_mb = min(free)

    def _check_prefix(self) -> None:
        """Root runs compose, reads state and builds images from the install dir: nobody else may be able
        to change it, or what is in it, or any directory above it."""
        if os.geteuid() != 0:
            return
        problem = unsafe_path(self.options.prefix)
        if problem:
            self._fail(
                f"the install dir {self.options.prefix} is not safe for root: {problem}",
                f"{path_fix(self.options.prefix)}, or choose a --prefix under root-owned directories",
            )

    def _check_forwarding(self) -> None:
        o = self.options
        self.facts.bridges = vm_bridges(o.sys_class_net)
        self.facts.forward_policy = forward_policy(o.iptables_cmd)
        if self.facts.bridges:
            self.notes.append(
                f"VM bridges {', '.join(self.facts.bridges)}; iptables FORWARD policy "
                f"{self.facts.forward_policy or 'unknown'}"
            )
