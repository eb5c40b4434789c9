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
        "NonBlocking=yes\n",  # else the next instance's start blocks the live one's accept (issue 13)
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
    assert "PMCP_SECRETS_WAIT" not in keys  # a missing credential fails at once, not at systemd's timeout
    assert (
        "/run/pmcp" not in env and "/var/lib/pmcp" not in env
    )  # no container path reaches the host's server


def test_slots_alternate() -> None:
    assert sd.other("a") == "b" and sd.other("b") == "a"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"monitoring": True}, "--monitoring is not available"),
        ({"domain": "pmcp.example", "http_port": 0}, "needs --http-port"),
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


def test_domain_gets_its_certificate_from_acme_and_renews_with_30_days_left(tmp_path: Path) -> None:
    """--domain under the systemd runtime: the certificate step orders from the ACME CA (Pebble here, with
    real http-01 validation), files the pair where the unit reads it, and asks again once fewer than 30
    days are left, which is what makes `pmcp update` (the auto-update timer) renew it."""
    import socket

    from tests.support import pebble
    from tests.support.certs import handshake
    from tests.support.ports import free_port

    http_port = free_port()
    # Pebble issues for 20 days: already inside the renewal window, so every check asks for a new one
    ca = pebble.start(tmp_path / "pebble", http_port=http_port, tls_port=free_port(), listen_port=free_port(),
                      management_port=free_port(), host="127.0.0.1", validity_seconds=20 * 86400)  # fmt: skip
    try:
        prefix = tmp_path / "inst"
        (prefix / "tls").mkdir(parents=True)
        # --acme-ca-root, as the files step copies it: one file for Pebble's two roots (step-ca has one)
        (prefix / render.ACME_ROOT).write_bytes(ca.listener_ca.read_bytes() + ca.issuing_root.read_bytes())
        domain = socket.gethostname()
        cfg = _cfg(domain=domain, acme_ca=ca.directory, http_port=http_port, gid=os.getgid())
        step = sd.CertificateStep(InstallPaths.at(prefix), cfg)
        want = f"get a certificate for {domain} from {ca.directory} (ACME http-01: port {http_port} answers"
        assert step.check().changes == [f"{want} while the CA checks)"]
        step.apply()
        cert, key = prefix / sd.SERVER_CERT, prefix / sd.SERVER_KEY
        assert sd.tls_files(cfg, InstallPaths.at(prefix)) == (cert, key)
        assert (prefix / sd.ACME_ACCOUNT_KEY).stat().st_mode & 0o777 == 0o600
        assert key.stat().st_mode & 0o077 in (0, 0o040)  # the server's group may read it, nobody else
        assert not (prefix / sd.CA_CERT).exists()  # no private CA: clients trust the ACME chain
        first = cert.read_bytes()
        assert step.check().changes  # 20 days left: due again
        step.apply()
        assert cert.read_bytes() != first and (prefix / sd.ACME_ACCOUNT_KEY).exists()
        # what health checks the served pair with: the ACME chain, to the given root, for the domain
        handshake(cert, key, sd.ssl_context(InstallPaths.at(prefix), cfg), domain)
        step.undo()
        assert not cert.exists() and not key.exists()
    finally:
        ca.stop()

    long_lived = _cfg(domain="pmcp.example", acme_ca="https://acme.example/dir", gid=os.getgid())
    prefix2 = tmp_path / "inst2"
    (prefix2 / "tls").mkdir(parents=True)
    (prefix2 / "secrets").mkdir()
    from pmcp.certs import issue

    issue(prefix2 / sd.SERVER_KEY, prefix2 / sd.SERVER_CERT, None, None, [("CN", "pmcp.example")],
          ["pmcp.example"], key_usage=True)  # fmt: skip
    assert sd.CertificateStep(InstallPaths.at(prefix2), long_lived).check().changes == []  # 730 days: kept
