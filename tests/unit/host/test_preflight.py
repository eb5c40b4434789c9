"""Preflight facts and failures."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from pmcp.host.preflight import Preflight, PreflightOptions, port_free
from pmcp.host.run import Pvesh
from pmcp.steps import StepError
from tests.unit.host.conftest import RecordingPvesh, assert_calls_in_schema

FAKE_PVESH = """
import json, sys
if sys.argv[1:3] == ["get", "/nodes"]:
    print(json.dumps([{"node": n, "status": "online"} for n in sys.argv[0].split("@")[1].split(",")]))
else:
    print("no such path", file=sys.stderr); sys.exit(2)
"""


def fake_pvesh(tmp_path: Path, nodes: str = "pve1") -> Pvesh:
    script = tmp_path / f"pvesh@{nodes}"
    script.write_text(FAKE_PVESH)
    return Pvesh([sys.executable, str(script)])


def pveversion(text: str) -> list[str]:
    return ["printf", text]


def options(tmp_path: Path, **kw) -> PreflightOptions:
    base = dict(
        require_root=False,
        require_docker=False,
        pvesh=fake_pvesh(tmp_path),
        pveversion_cmd=pveversion("pve-manager/9.1.2/abc (running kernel: 6.14.8-2-pve)\n"),
        ports=[],
        prefix=tmp_path / "opt" / "proxmox-mcp",
        min_free_mb=1,
        sys_class_net=tmp_path / "net",
        iptables_cmd=["false"],
    )
    base.update(kw)
    return PreflightOptions(**base)


def test_facts_on_a_good_host(tmp_path: Path) -> None:
    step = Preflight(options(tmp_path))
    plan = step.check()
    assert not plan.needed
    assert step.facts.pve_version == "9.1.2" and step.facts.pve_major == 9
    assert step.facts.node == "pve1"
    assert step.facts.free_mb > 0
    assert "Proxmox VE 9.1.2" in plan.notes


@pytest.mark.parametrize("text", ["pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-10-pve)\n"])
def test_pve8_is_supported(tmp_path: Path, text: str) -> None:
    step = Preflight(options(tmp_path, pveversion_cmd=pveversion(text)))
    step.check()
    assert step.facts.pve_major == 8


def test_unsupported_and_missing_pve(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"7\.4\.1 is not supported") as err:
        Preflight(options(tmp_path, pveversion_cmd=pveversion("pve-manager/7.4.1/abc\n"))).check()
    assert err.value.fix
    with pytest.raises(StepError, match="not a Proxmox VE host"):
        Preflight(options(tmp_path, pveversion_cmd=["/nonexistent/pveversion"])).check()


def test_node_choice(tmp_path: Path) -> None:
    many = fake_pvesh(tmp_path, "pve1,pve2,pve3")
    step = Preflight(options(tmp_path, pvesh=many, node="pve2"))
    step.check()
    assert step.facts.node == "pve2"
    with pytest.raises(StepError, match="which Proxmox node") as err:
        Preflight(options(tmp_path, pvesh=many)).check()
    assert "--node" in err.value.fix
    with pytest.raises(StepError, match="which Proxmox node"):
        Preflight(options(tmp_path, pvesh=many, node="nope")).check()


def test_busy_port_fails_with_the_owner_hint(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        with pytest.raises(StepError, match=f"port {port} on 127.0.0.1 is already in use") as err:
            Preflight(options(tmp_path, ports=[("127.0.0.1", port)])).check()
        assert f"sport = :{port}" in err.value.fix
    assert port_free("127.0.0.1", port)


def test_every_failure_is_listed_with_its_fix(tmp_path: Path) -> None:
    opts = options(tmp_path, min_free_mb=10**12, pveversion_cmd=pveversion("pve-manager/7.0.1/x"))
    with pytest.raises(StepError, match="2 preflight checks failed") as err:
        Preflight(opts).check()
    lines = err.value.detail.splitlines()
    assert len(lines) == 2 and all("(fix: " in line for line in lines)
    assert "MiB free" in err.value.detail


def test_root_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(StepError, match="must run as root"):
        Preflight(options(tmp_path, require_root=True)).check()


def test_bridges_and_forward_policy_are_reported(tmp_path: Path) -> None:
    (tmp_path / "net" / "vmbr0").mkdir(parents=True)
    (tmp_path / "net" / "eth0").mkdir()
    step = Preflight(options(tmp_path, iptables_cmd=["printf", "-P FORWARD DROP\n-N DOCKER-USER\n"]))
    plan = step.check()
    assert step.facts.bridges == ["vmbr0"] and step.facts.forward_policy == "DROP"
    assert any("vmbr0" in n and "DROP" in n for n in plan.notes)


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


@pytest.mark.docker
def test_docker_and_compose_facts(tmp_path: Path) -> None:
    if not _docker_reachable():
        pytest.skip("no Docker engine reachable (start dockerd)")
    step = Preflight(options(tmp_path, require_docker=True))
    step.check()
    assert step.facts.docker_major >= 20
    assert step.facts.compose_cmd in (["docker", "compose"], ["docker-compose"]), step.facts.compose_cmd
    assert step.facts.compose_version[0].isdigit()


def test_unreachable_docker_is_a_clear_failure(tmp_path: Path) -> None:
    opts = options(tmp_path, require_docker=True, docker_base_url=f"unix://{tmp_path}/nope.sock")
    opts.compose_finder = lambda: (["docker-compose"], "1.29.2")
    with pytest.raises(StepError, match="Docker engine not reachable") as err:
        Preflight(opts).check()
    assert "systemctl enable --now docker" in err.value.fix


def test_compose_finder_failure_is_reported(tmp_path: Path) -> None:
    def missing() -> tuple[list[str], str]:
        raise StepError("docker compose not found", fix="apt-get install docker-compose")

    opts = options(tmp_path, require_docker=True, docker_base_url=f"unix://{tmp_path}/nope.sock")
    opts.compose_finder = missing
    with pytest.raises(StepError) as err:
        Preflight(opts).check()
    assert (
        "docker compose not found" in err.value.detail and "apt-get install docker-compose" in err.value.fix
    )


def test_against_the_simulator_as_demo_runs_it(tmp_path: Path, sim, pvesh) -> None:
    """`pmcp demo --stack` points PMCP_PVESH/PMCP_PVEVERSION at the simulator: preflight must accept it."""
    opts = options(
        tmp_path,
        pvesh=pvesh,
        pveversion_cmd=[sys.executable, "-m", "pmcp", "sim", "pveversion"],
    )
    rec = RecordingPvesh(pvesh)
    opts.pvesh = rec
    step = Preflight(opts)
    step.check()
    assert step.facts.pve_major in (8, 9)
    assert step.facts.node == pvesh.get("/nodes")[0]["node"]
    assert_calls_in_schema(rec.calls)


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="needs root (a directory owned by another uid)")
def test_install_dir_under_a_directory_others_control_is_refused(tmp_path: Path) -> None:
    import os

    home = tmp_path / "agent-home"
    home.mkdir()
    os.chown(home, 12345, 12345)
    with pytest.raises(StepError) as exc:
        Preflight(options(tmp_path, prefix=home / "pmcp")).check()
    assert f"{home} is owned by uid 12345" in exc.value.message
    assert f"chown root:root {home} && chmod go-w {home}" in exc.value.fix
