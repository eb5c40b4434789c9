"""A Proxmox VE 9 host as shipped, end to end through Caddy: the server on Python 3.13 (Debian 13's), the
Proxmox root CA without keyUsage, the Proxmox firewall ON, an ACME-style certificate on 8006 (pveproxy
serves pveproxy-ssl.pem when present: pve-manager PVE/Service/pveproxy.pm), naming only the FQDN and
issued by a CA the host's pve-root-ca.pem is not.

With the firewall on, PVEFW-HOST-IN (pve-firewall Firewall.pm, enable_host_firewall) accepts 8006 only
from lo and the management ipset: the simulator drops the server's network like that. Install must add
the node rule for the server's network (and uninstall remove it); verify must name the firewall when
the rule is missing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import demo_opts, project_containers, step_statuses

pytestmark = [pytest.mark.docker, pytest.mark.dist, pytest.mark.slow]


@pytest.fixture
def trixie_base(stack_env: dict[str, str]) -> Iterator[str]:
    """The server (and the simulator, same image) on Debian 13's python3 3.13, as on a PVE 9 host."""
    from tests.support import images

    base = images.python_base_image("trixie")
    saved = os.environ.get("PMCP_PYTHON_BASE_IMAGE")
    os.environ["PMCP_PYTHON_BASE_IMAGE"] = base
    try:
        yield base
    finally:
        os.environ["PMCP_PYTHON_BASE_IMAGE"] = saved or stack_env["PMCP_PYTHON_BASE_IMAGE"]


def _pvesh(prefix: Path) -> Any:
    from pmcp import record as statefile
    from pmcp.host.run import Pvesh
    from pmcp.paths import InstallPaths

    ident = statefile.load(InstallPaths.at(prefix))["identity"]
    return Pvesh(ident["pvesh"], env={**os.environ, **ident["pvesh_env"]})


def _api_rules(prefix: Path) -> list[dict[str, Any]]:
    pvesh = _pvesh(prefix)
    node = pvesh.get("/nodes")[0]["node"]
    return [r for r in pvesh.get(f"/nodes/{node}/firewall/rules") if r.get("comment") == "pmcp-proxmox-api"]


@pytest.mark.parametrize("port_cert", ["pve-ssl", "acme"])
def test_pve9_as_shipped_installs_verifies_and_uninstalls(
    trixie_base: str, tmp_path: Path, port_cert: str
) -> None:
    """``pve-ssl``: 8006 serves the node certificate of the CA without keyUsage, which the server (Python
    3.13) verifies; ``acme``: an ACME-style certificate, which install pins (its issuing CA) by name."""
    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall
    from pmcp.lifecycle.verify import run_verify

    prefix = tmp_path / "pve9"
    opts = demo_opts(prefix, guests=4)
    opts.sim.firewall = True
    opts.sim.custom_cert = "pve.example.test" if port_cert == "acme" else None
    try:
        res = install(opts, kind="demo")
        assert res.ok, "\n".join(f"{s.name}: {s.error}\n{s.detail}" for s in res.run.steps if s.error)
        st = step_statuses(res)
        assert st["api firewall"] == "changed", st
        tls_step = next(s for s in res.run.steps if s.name == "proxmox tls")
        if port_cert == "acme":
            assert any("pinned its issuing CA" in n for n in tls_step.notes), tls_step.notes
            assert any("checking the name pve.example.test" in n for n in tls_step.notes), tls_step.notes
            assert "PROXMOX_TLS_NAME=pve.example.test" in (prefix / ".env").read_text()
        else:
            assert any("the server trusts it with the host's CA" in n for n in tls_step.notes), tls_step.notes
            assert "PROXMOX_TLS_NAME" not in (prefix / ".env").read_text()
        checks = {r["check"]: r for r in res.verify}
        for name in ("mcp session", "server reaches proxmox", "proxmox token", "root@pam protected", "tls"):
            assert checks[name]["result"] == "pass", (name, res.verify)
        expected = {
            "acme": "as pve.example.test verified with the certificate install pinned",
            "pve-ssl": "verified with the simulator's CA",
        }[port_cert]
        assert expected in checks["proxmox tls"]["detail"], checks["proxmox tls"]
        py = subprocess.run(
            ["docker", "exec", _container(prefix, "mcp-server"), "python3", "-c",
             "import sys; print(sys.version_info[:2])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert py == "(3, 13)"
        rules = _api_rules(prefix)
        assert len(rules) == 1 and rules[0]["dport"] == "8006" and "/" in rules[0]["source"]

        # the rule gone (an admin's cleanup): verify names the Proxmox firewall as the cause
        pvesh = _pvesh(prefix)
        node = pvesh.get("/nodes")[0]["node"]
        pvesh.delete(f"/nodes/{node}/firewall/rules/{rules[0]['pos']}")
        # conntrack keeps an established connection (PVEFW-HOST-IN accepts ESTABLISHED first): the server's
        # new connections are the ones dropped, as after a restart of the server
        _restart_and_wait(prefix, "mcp-server")
        report = {r.check: r for r in run_verify(prefix).rows}
        row = report["server reaches proxmox"]
        assert row.result == "fail", row
        assert "Proxmox firewall is on" in row.detail and "management" in row.detail, row
        assert "pmcp install" in row.fix and "--dport 8006" in row.fix
        again = install(opts, kind="demo")
        assert again.ok and step_statuses(again)["api firewall"] == "changed"
        assert {r.check: r.result for r in run_verify(prefix).rows}["server reaches proxmox"] == "pass"

        seen: list[list[dict[str, Any]]] = []

        def on_step(r: Any) -> None:
            if r.name == "api firewall" and r.status == "undone":
                seen.append(_api_rules(prefix))

        down = uninstall(prefix, purge=True, report=on_step)
        assert down.ok, down.to_dict()
        assert seen == [[]], seen  # uninstall removed the rule (while the simulator still ran)
    finally:
        with contextlib.suppress(Exception):
            uninstall(prefix, purge=True)
        for cid in project_containers(prefix):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def _container(prefix: Path, service: str) -> str:
    from pmcp.stack import engine
    from pmcp.stack.compose import project_name

    return str(engine.project_containers(engine.client(), project_name(prefix))[service].id)


def _restart_and_wait(prefix: Path, service: str) -> None:
    from pmcp.paths import InstallPaths
    from pmcp.stack import engine
    from pmcp.stack.compose import Compose, project_name
    from pmcp.steps import StepError

    # a new container of the server: new connections (established ones would pass, as through conntrack)
    Compose(InstallPaths.at(prefix), project_name(prefix), []).up(service, recreate=True)
    try:
        engine.wait_healthy(engine.client(), project_name(prefix), [service], 120, lambda text: text)
    except StepError as exc:
        raise AssertionError(f"{exc.message}\n{exc.detail}") from exc
