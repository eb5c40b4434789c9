"""The systemd runtime's units and configuration, rendered (pure), and the choices install refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pmcp.errors import UsageError
from pmcp.lifecycle.install import InstallOptions
from pmcp.lifecycle.runtime import hardening_problems, refuse_switch
from pmcp.paths import InstallPaths
from pmcp.stack import render
from pmcp.stack import systemd as sd


def _cfg(**kw: object) -> render.StackConfig:
    return render.StackConfig(runtime="systemd", https_port=8443, proxmox_ca="/etc/pve/pve-root-ca.pem", **kw)  # type: ignore[arg-type]


def test_service_unit_is_hardened_and_names_no_secret() -> None:
    paths, names = InstallPaths.at("/opt/pmcp"), sd.Names("pmcp")
    text = sd.service_text(_cfg(), names, paths)
    assert "@{" not in text and "${" not in text
    for line in (
        "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
        "PrivateDevices=yes", "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service\n", "MemoryMax=512M", "User=pmcp\n", "Sockets=pmcp.socket",
        "ReadWritePaths=/opt/pmcp/audit /opt/pmcp/sessions\n",
        "ExecStart=/usr/local/lib/pmcp/pmcp/%i/pmcp serve",
        "PROXMOX_CA_FILE=/opt/pmcp/pve-root-ca.pem", "PMCP_AUDIT_KEY_FILE=/opt/pmcp/secrets/audit-key",
        "PMCP_TLS_CERT_FILE=/opt/pmcp/tls/server.pem PMCP_TLS_KEY_FILE=/opt/pmcp/secrets/server.key",
    ):  # fmt: skip
        assert line in text, line
    assert [ln for ln in text.splitlines() if ln.startswith("ReadWritePaths")] == [
        "ReadWritePaths=/opt/pmcp/audit /opt/pmcp/sessions"
    ]


def test_admin_certificate_is_served_when_given() -> None:
    text = sd.service_text(
        _cfg(tls_cert="/x/c.pem", tls_key="/x/k.pem"), sd.Names("pmcp"), InstallPaths.at("/opt/p")
    )
    assert "PMCP_TLS_CERT_FILE=/opt/p/tls/cert.pem PMCP_TLS_KEY_FILE=/opt/p/tls/key.pem" in text


def test_socket_listens_everywhere_or_ipv4_only_and_names_the_live_slot() -> None:
    names = sd.Names("pmcp")
    text = sd.socket_text(_cfg(), names, Path("/opt/pmcp"), "b")
    assert "ListenStream=8443\n" in text and "Service=pmcp@b.service" in text
    assert "ListenStream=0.0.0.0:8443\n" in sd.socket_text(
        _cfg(ipv4_only=True), names, Path("/opt/pmcp"), "a"
    )


def test_server_env_leaves_secrets_and_paths_to_the_unit() -> None:
    env = sd.server_env(_cfg(mode="operator"))
    keys = {ln.partition("=")[0] for ln in env.splitlines() if ln and not ln.startswith("#")}
    assert "PMCP_MODE" in keys and "PROXMOX_URL" in keys
    assert not keys & set(sd.UNIT_ENV)
    assert (
        "/run/pmcp" not in env and "/var/lib/pmcp" not in env
    )  # no container path reaches the host's server


def test_slots_alternate() -> None:
    assert sd.other("a") == "b" and sd.other("b") == "a"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"monitoring": True}, "--monitoring is not available"),
        ({"prefix": "/root/pmcp"}, "ProtectHome"),
        ({"runtime": "podman"}, "unknown runtime"),
    ],
)
def test_install_refuses_what_the_systemd_runtime_lacks(options: dict[str, object], message: str) -> None:
    opts = InstallOptions(**{"runtime": "systemd", **options})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=message):
        opts.validate()


def test_an_install_keeps_its_runtime(tmp_path: Path) -> None:
    paths = InstallPaths.at(tmp_path)
    (tmp_path / "state.json").write_text('{"schema": 1, "config": {"runtime": "systemd"}}')
    refuse_switch(paths, "systemd")
    with pytest.raises(UsageError, match="runs the server with systemd") as exc:
        refuse_switch(paths, "compose")
    assert "pmcp uninstall" in exc.value.fix


def test_hardening_is_read_from_the_kernel() -> None:
    problems = hardening_problems(str(os.getpid()))  # this test process: no sandbox at all
    assert "no seccomp filter" in problems or os.geteuid() != 0
    assert hardening_problems("0") == ["the server is not running"]
