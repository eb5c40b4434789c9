"""The zero-downtime switch between MCP server containers, without reloading Caddy.

Why not "point Caddy at the new server and `caddy reload`": a reload shuts the old configuration's
HTTP server down, and Go's graceful shutdown closes keep-alive client connections that look idle,
racing with a client that is sending its next request on one of them. Measured here with a client
looping MCP calls: 1-2 failed requests per reload (Caddy 2.6). So Caddy's configuration never
changes during an update; the switch happens in Docker's DNS instead:

- Caddy proxies to ``mcp-server:8080``, resolved on every new upstream connection (no keep-alive to
  the upstream, and dial failures retried for a few seconds: the template ``upstream.caddy``).
- A **candidate** of the new version (``compose run``: the new image and configuration, no network
  alias, so no traffic) is checked first: health, then a real MCP session with a client token. A
  broken version stops here, before anything serving has changed.
- A **standby** clone of the running server (same image id, environment, mounts, hardening; no
  published port, no compose labels) joins the network under the alias ``mcp-server``: Caddy's
  connections now spread over two servers of the old version.
- compose recreates ``mcp-server`` with the new version. The old container gets SIGTERM: it stops
  accepting connections (new ones go to the standby) and finishes what it has. The new container is
  checked; until it listens, connections are refused and go to the standby.
- After a grace period in which the new server must stay healthy, the standby is drained the same
  way and removed. If the new one fails within the grace period,
  it is stopped, the standby (old version) carries the traffic, and the previous version is put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmcp import authtokens
from pmcp.files import atomic_write
from pmcp.host.run import CommandError, run
from pmcp.paths import InstallPaths
from pmcp.stack import engine, render
from pmcp.steps import StepError

SERVICE = "mcp-server"
SERVER_PORT = 8080  # the server's port inside its container (fixed by the compose template)
ROLE_LABEL = "io.pmcp.update-role"  # "standby" or "candidate"; value of PROJECT_LABEL: the project
PROJECT_LABEL = engine.UPDATE_PROJECT_LABEL
COMPOSE_LABEL = "com.docker.compose."
UPSTREAM_FILE = "caddy.d/upstream.caddy"
# A server image that can drain says so in this label (the Dockerfile template): once fenced, the signal
# makes it close its idle GET streams (the clients reconnect them, through Caddy, to the other server,
# which restores their session from the install's sessions/ directory) while calls in flight finish.
# An image without the label is never sent a signal it may not handle.
DRAIN_LABEL = "io.pmcp.drain-signal"
Redact = Callable[[str], str]

# Draining a server: stop sending it new connections BEFORE it gets SIGTERM. A server that closes its
# listening socket resets the connections still in the kernel's accept queue: a request Caddy has
# already sent there fails (measured: about one 502 every three updates). So the server is first
# "fenced": in its own network namespace, new connections to its port are refused (SYN -> RST), which
# Caddy treats as a dial error and retries on the other address of the alias. Once its established
# connections are done (read from /proc/<pid>/net/tcp), it is stopped with nothing in flight.
FENCE_RULE = ["INPUT", "!", "-i", "lo", "-p", "tcp", "--dport", str(SERVER_PORT), "--syn",
              "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip


def _identity(text: str) -> str:
    return text


@dataclass
class Switch:
    """The server containers of one install (one compose project) during an update."""

    paths: InstallPaths
    project: str
    docker: Any
    redact: Redact = _identity
    health_timeout: float = 180.0

    def name(self, role: str) -> str:
        return f"{self.project}-mcp-{role}"

    def server(self) -> Any | None:
        """The compose-managed server container (not a one-off)."""
        found = self.docker.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={SERVICE}",
                ]
            },
        )
        regular = [c for c in found if c.labels.get("com.docker.compose.oneoff", "False") != "True"]
        running = [c for c in regular if c.status == "running"]
        return (running or regular or [None])[0]

    def helper(self, role: str) -> Any | None:
        found = self.docker.containers.list(
            all=True, filters={"label": [f"{ROLE_LABEL}={role}", f"{PROJECT_LABEL}={self.project}"]}
        )
        return found[0] if found else None

    def healthy(self, ctr: Any | None) -> bool:
        if ctr is None:
            return False
        with contextlib.suppress(Exception):
            ctr.reload()
            return engine.state_of(ctr).ready
        return False

    def start_candidate(self, compose: Any) -> Any:
        """The new version from the current compose files, with no alias: checked before any switch."""
        self.remove("candidate", drain=0)
        compose.run(
            "run", "-d", "--no-deps", "--name", self.name("candidate"),
            "-l", f"{ROLE_LABEL}=candidate", "-l", f"{PROJECT_LABEL}={self.project}", SERVICE,
        )  # fmt: skip
        ctr = self.helper("candidate")
        if ctr is None:
            raise StepError("compose did not start the candidate server", fix="pmcp logs")
        return ctr

    def start_standby(self, source: Any) -> Any:
        """Clone ``source`` (the running server) under the alias mcp-server: it shares the traffic."""
        self.remove("standby", drain=0)
        attrs = source.attrs
        cfg, host = attrs["Config"], dict(attrs["HostConfig"])
        for key in ("PortBindings", "Links", "ContainerIDFile"):
            host.pop(key, None)
        host["PublishAllPorts"] = False
        labels = {k: v for k, v in (cfg.get("Labels") or {}).items() if not k.startswith(COMPOSE_LABEL)}
        labels.update({ROLE_LABEL: "standby", PROJECT_LABEL: self.project})
        networks = list((attrs.get("NetworkSettings") or {}).get("Networks") or {})
        primary = host.get("NetworkMode") if host.get("NetworkMode") in networks else networks[0]
        api = self.docker.api
        netcfg = api.create_networking_config({primary: api.create_endpoint_config(aliases=[SERVICE])})
        created = api.create_container(
            image=attrs["Image"],
            command=cfg.get("Cmd"),
            entrypoint=cfg.get("Entrypoint"),
            environment=cfg.get("Env"),
            user=cfg.get("User") or None,
            working_dir=cfg.get("WorkingDir") or None,
            labels=labels,
            healthcheck=cfg.get("Healthcheck"),
            stop_signal=cfg.get("StopSignal"),
            host_config=host,
            networking_config=netcfg,
            name=self.name("standby"),
        )
        for net in networks:
            if net != primary:
                api.connect_container_to_network(created["Id"], net, aliases=[SERVICE])
        api.start(created["Id"])
        return self.docker.containers.get(created["Id"])

    def wait_ready(self, ctr: Any, role: str, timeout: float | None = None) -> None:
        """Poll the container's health (no fixed sleeps); fail fast with its log tail."""
        deadline = time.monotonic() + (timeout or self.health_timeout)
        restarts = None
        while True:
            ctr.reload()
            st = engine.state_of(ctr)
            restarts = st.restarts if restarts is None else restarts
            if st.ready:
                return
            if st.failed or st.restarts > restarts or time.monotonic() >= deadline:
                why = f"{st.status}, health {st.health}" if st.failed else "not healthy in time"
                raise StepError(
                    f"the {role} server ({ctr.name}) failed: {why}",
                    fix=f"read its log lines below (all of them: `docker logs {ctr.name}`)",
                    detail=self.redact(engine.log_tail(ctr)),
                )
            time.sleep(engine.POLL)

    def remove(self, role: str, drain: float = 10.0) -> bool:
        """Drain (when ``drain`` > 0), stop and remove a helper container."""
        ctr = self.helper(role)
        if ctr is None:
            return False
        if drain > 0:
            self.drain(ctr, drain)
        with contextlib.suppress(Exception):
            ctr.stop(timeout=max(int(drain), 1))
        with contextlib.suppress(Exception):
            ctr.remove(force=True)
        return True

    def fence(self, ctr: Any) -> bool:
        """Refuse new connections to this server (its other connections go on); False if not possible."""
        nsenter, iptables = shutil.which("nsenter"), shutil.which("iptables")
        with contextlib.suppress(Exception):
            ctr.reload()
        pid = (ctr.attrs.get("State") or {}).get("Pid") or 0
        if not (nsenter and iptables and pid):
            return False
        try:
            res = run([nsenter, "-t", str(pid), "-n", iptables, "-w", "5", "-I", *FENCE_RULE], timeout=20)
        except CommandError:
            return False
        return res.ok

    def drain(self, ctr: Any, timeout: float) -> str:
        """Fence the server, then wait (bounded) until its established connections are done."""
        if not self.fence(ctr):
            return "not fenced (nsenter/iptables missing): stopped with SIGTERM only"
        signalled = self.signal_drain(ctr)
        pid = (ctr.attrs.get("State") or {}).get("Pid") or 0
        deadline = time.monotonic() + timeout
        while True:
            left = established(pid, SERVER_PORT)
            if left == 0:
                return "fenced and drained" + (" (sessions handed over)" if signalled else "")
            if time.monotonic() >= deadline:
                return f"fenced; {left} connection(s) still open after {timeout:g}s"
            time.sleep(0.05)

    def signal_drain(self, ctr: Any) -> bool:
        """Ask a fenced server to hand its sessions over (only an image that declares it can)."""
        labels = (ctr.attrs.get("Config") or {}).get("Labels") or {}
        sig = labels.get(DRAIN_LABEL)
        if not sig:
            return False
        try:
            ctr.kill(signal=sig)
        except Exception:
            return False
        return True

    def address(self, ctr: Any) -> str:
        """http://IP:8080 of a container on the stack's network (reachable from the host)."""
        ctr.reload()
        for net in (ctr.attrs.get("NetworkSettings") or {}).get("Networks", {}).values():
            if net.get("IPAddress"):
                return f"http://{net['IPAddress']}:{SERVER_PORT}"
        raise StepError(f"container {ctr.name} has no IP address", fix=f"docker inspect {ctr.name}")

    def check(self, ctr: Any, role: str) -> str:
        """Health, then a real MCP session with a client token; returns what was checked."""
        self.wait_ready(ctr, role)
        try:
            return mcp_probe(self.address(ctr) + "/mcp", client_token(self.paths))
        except StepError as exc:
            exc.message = f"the {role} server: {exc.message}"
            exc.detail = self.redact("\n".join(x for x in (exc.detail, engine.log_tail(ctr)) if x))
            raise

    def ensure_upstream(self) -> bool:
        """caddy.d/upstream.caddy as the switch needs it; reloads Caddy only when it had to change."""
        target = self.paths.prefix / UPSTREAM_FILE
        before = target.read_bytes() if target.exists() else None
        wanted = render.upstream_text().encode()
        if before == wanted:
            return False
        atomic_write(target, wanted, 0o644)
        try:
            engine.reload_caddy(self.docker, self.project)
        except StepError:
            if before is None:
                target.unlink(missing_ok=True)
            else:
                atomic_write(target, before, 0o644)
            raise
        return True


def established(pid: int, port: int) -> int:
    """Established TCP connections on a local port in the network namespace of ``pid``."""
    count = 0
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def client_token(paths: InstallPaths) -> str:
    """The token the checks use: "default" (install's first client) or the first one."""
    try:
        tokens = authtokens.load(paths.client_tokens)
    except (OSError, authtokens.TokenFileError) as exc:
        raise StepError(
            f"cannot read the client tokens ({paths.client_tokens}): {exc}",
            fix="run as root; add a token with `pmcp client-config --new-token NAME`",
        ) from exc
    if not tokens:
        raise StepError("no client token to check the server with", fix="pmcp client-config --new-token NAME")
    return tokens.get("default") or tokens[sorted(tokens)[0]]


def mcp_probe(url: str, token: str, host: str = "localhost", timeout: float = 30.0) -> str:
    """A real MCP session with the SDK client: initialize, tools/list, one read tool (reaches Proxmox)."""
    try:
        return asyncio.run(asyncio.wait_for(_probe(url, token, host), timeout))
    except StepError:
        raise
    except Exception as exc:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        raise StepError(
            f"MCP call to {url} failed: {type(exc).__name__}: {exc}"[:400],
            fix="read the server's log lines below",
        ) from exc


async def _probe(url: str, token: str, host: str) -> str:
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    from pmcp.lifecycle.verify import _pick_read_tool

    headers = {"Authorization": f"Bearer {token}", "Host": host}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(15.0)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        tools = (await client.list_tools()).tools
        if not tools:
            raise StepError(f"the MCP server at {url} lists no tools", fix="read its log lines below")
        pick = _pick_read_tool(tools)
        if pick is None:
            return f"initialize, tools/list ({len(tools)} tools)"
        result = await client.call_tool(pick, {})
        if getattr(result, "is_error", False) or getattr(result, "isError", False):
            text = " ".join(getattr(c, "text", "") for c in result.content)[:300]
            raise StepError(f"tool {pick} returned an error: {text}", fix="read the server's log lines below")
    return f"initialize, tools/list ({len(tools)} tools), {pick}"
