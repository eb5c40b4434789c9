"""The install's target is chosen once: the real node or the simulator, each answering the same questions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pmcp.lifecycle.install import InstallOptions, identity_info, stack_config
from pmcp.lifecycle.target import ProxmoxNode, Simulator, target_for
from pmcp.stack.render import SimService


def test_real_node_uses_the_hosts_pvesh_and_8006(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PMCP_PVESH", raising=False)
    monkeypatch.delenv("PMCP_HOST_API_URL", raising=False)
    opts = InstallOptions(prefix=str(tmp_path), proxmox_ca=str(tmp_path / "missing.pem"))
    target = target_for(opts)
    assert type(target) is ProxmoxNode and not target.simulated
    assert target.pvesh_command() is None  # the host's own pvesh
    assert target.api_url() == "https://127.0.0.1:8006"
    assert target.api_verify() is True  # no CA file on this host: the system store, never verify=False
    monkeypatch.setenv("PMCP_PVESH", "ssh pve pvesh")
    assert target.pvesh_command() == ["ssh", "pve", "pvesh"]


def test_simulator_answers_with_its_own_client_ca_and_service(tmp_path: Path) -> None:
    opts = InstallOptions(prefix=str(tmp_path), sim=SimService(port=18006, guests=3))
    target = target_for(opts)
    assert isinstance(target, Simulator) and target.simulated
    assert target.pvesh_command() == [sys.executable, "-m", "pmcp.sim.pvesh"]  # not frozen: the module alone
    assert target.api_url() == "https://127.0.0.1:18006"
    assert target.pvesh_env()["PMCP_SIM_URL"] == "https://127.0.0.1:18006"
    assert target.api_verify() == target.pvesh_env()["PMCP_SIM_CA_FILE"]
    cfg = stack_config(opts)
    assert cfg.proxmox_url == "https://pve-sim:8006" and cfg.proxmox_ca is None
    assert cfg.public_names == ["localhost", "127.0.0.1"]
    info = identity_info(opts)  # what state.json records so verify/uninstall reach the same target
    assert info["pvesh"] == target.pvesh_command() and info["pvesh_env"] == target.pvesh_env()


def test_simulator_with_acme_style_certificate_names_its_chain(tmp_path: Path) -> None:
    opts = InstallOptions(
        prefix=str(tmp_path), sim=SimService(port=18006, guests=3, custom_cert="pve.example.test")
    )
    env = target_for(opts).pvesh_env()
    assert env["PMCP_SIM_TLS_NAME"] == "pve.example.test"
    assert env["PMCP_SIM_CA_FILE"].endswith("acme-root.pem")
