"""pmcp.pvetls and the simulator's certificates: Proxmox's CA as hosts have it, verified everywhere.

Python 3.11 does not set VERIFY_X509_STRICT by default; 3.13 does. ``strict_default`` makes this
interpreter's ``ssl.create_default_context`` behave as 3.13's (the flag is OpenSSL's, so the refusal is
real); the same paths run on a real 3.13 in tests/e2e/test_pve9_tls.py.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pmcp import certs, pvetls
from pmcp.sim import tls as simtls
from pmcp.sim.testing import running_sim

STRICT_MESSAGE = "CA cert does not include key usage extension"


@pytest.fixture
def strict_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """ssl.create_default_context as on Python 3.13: VERIFY_X509_STRICT and PARTIAL_CHAIN set."""
    real = ssl.create_default_context

    def as_313(*args: object, **kwargs: object) -> ssl.SSLContext:
        ctx = real(*args, **kwargs)  # type: ignore[arg-type]
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    monkeypatch.setattr(ssl, "create_default_context", as_313)


def _text(pem: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(pem)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("maker", ["openssl", "cryptography"])
def test_simulator_ca_is_made_like_pve_cluster_makes_it(
    maker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if maker == "cryptography":
        monkeypatch.setattr(certs.shutil, "which", lambda name: None)
    old = simtls.make_certs(tmp_path / "old", ["pve1.example.test", "127.0.0.1"])
    new = simtls.make_certs(tmp_path / "new", ["pve1.example.test"], ca_key_usage=True)
    ca = _text(old.ca_file)
    assert "O = PVE Cluster Manager CA" in ca and "CN = Proxmox Virtual Environment" in ca
    assert "CA:TRUE" in ca and "Subject Key Identifier" in ca and "Key Usage" not in ca
    assert pvetls.lacks_key_usage(old.ca_file.read_bytes())
    assert "Certificate Sign, CRL Sign" in _text(new.ca_file)
    assert not pvetls.lacks_key_usage(new.ca_file.read_bytes())
    leaf = _text(old.cert_file)
    assert "OU = PVE Cluster Node" in leaf and "TLS Web Server Authentication" in leaf
    assert "CA:FALSE" in leaf and "DNS:pve1.example.test, IP Address:127.0.0.1" in leaf
    proc = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(old.ca_file), str(old.cert_file)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and STRICT_MESSAGE in proc.stdout + proc.stderr
    assert oct(old.key_file.stat().st_mode & 0o777) == "0o600"


@pytest.fixture(scope="module")
def legacy_sim() -> Iterator[object]:
    with running_sim(nodes=1, guests=2, tls=True) as sim:
        yield sim


def test_strict_default_refuses_the_hosts_ca_and_pvetls_verifies_it(strict_default: None, legacy_sim) -> None:  # type: ignore[no-untyped-def]
    plain = ssl.create_default_context(cafile=legacy_sim.ca_file)
    assert STRICT_MESSAGE in pvetls.handshake_error(plain, "127.0.0.1", legacy_sim.port, "127.0.0.1")
    ctx = pvetls.context(legacy_sim.ca_file)
    assert not ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert pvetls.handshake_error(ctx, "127.0.0.1", legacy_sim.port, "127.0.0.1") == ""
    # still verified: the hostname, and the CA
    assert "Hostname mismatch" in pvetls.handshake_error(ctx, "127.0.0.1", legacy_sim.port, "other.example")
    with running_sim(nodes=1, guests=1, tls=True) as other:
        err = pvetls.handshake_error(pvetls.context(other.ca_file), "127.0.0.1", legacy_sim.port, "127.0.0.1")
        assert "unable to get local issuer certificate" in err


def test_a_ca_with_key_usage_keeps_the_strict_default(strict_default: None) -> None:
    with running_sim(nodes=1, guests=1, tls=True, ca_key_usage=True) as sim:
        ctx = pvetls.context(sim.ca_file)
        assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
        assert pvetls.handshake_error(ctx, "127.0.0.1", sim.port, "127.0.0.1") == ""


def test_requests_session_and_server_client_verify_with_the_relaxed_context(
    strict_default: None,
    legacy_sim,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from pmcp.server.config import ServerConfig
    from pmcp.server.proxmox import ProxmoxClient, ProxmoxError

    s = pvetls.session(legacy_sim.ca_file)
    headers = {"Authorization": f"PVEAPIToken={legacy_sim.root_token}"}
    assert s.get(legacy_sim.api_url + "/version", headers=headers, timeout=10).status_code == 200
    secret = tmp_path / "secret"
    secret.write_text(legacy_sim.root_token_secret)
    env = {
        "PROXMOX_URL": legacy_sim.url,
        "PROXMOX_TOKEN_ID": legacy_sim.root_token_id,
        "PROXMOX_TOKEN_SECRET_FILE": str(secret),
        "PROXMOX_CA_FILE": legacy_sim.ca_file,
    }
    client = ProxmoxClient(ServerConfig.from_env(env))
    assert anyio.run(client.call, "GET", "/version")["version"].startswith("9.")
    wrong = ProxmoxClient(ServerConfig.from_env({**env, "PROXMOX_TLS_NAME": "not-the-node.example"}))
    with pytest.raises(ProxmoxError, match="TLS verification"):
        anyio.run(wrong.call, "GET", "/version")


def test_pinned_leaf_and_server_name_for_a_custom_certificate(legacy_sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with running_sim(nodes=1, guests=1, tls=True, custom_cert_name="pve.example.test") as sim:
        der = pvetls.peer_certificate("127.0.0.1", sim.port)
        pin = tmp_path / "pin.pem"
        pin.write_text(ssl.DER_cert_to_PEM_cert(der))
        ctx = pvetls.context(pin)
        assert pvetls.handshake_error(ctx, "127.0.0.1", sim.port, "pve.example.test") == ""
        assert "mismatch" in pvetls.handshake_error(ctx, "127.0.0.1", sim.port, "127.0.0.1")
        # the cluster CA does not sign what pveproxy now serves
        assert pvetls.handshake_error(pvetls.context(sim.ca_file), "127.0.0.1", sim.port, "pve.example.test")
        s = pvetls.session(str(pin), "pve.example.test")
        assert s.get(sim.api_url + "/version", timeout=10).status_code == 401
        assert pvetls.fingerprint(der).count(":") == 31


def test_a_missing_trust_file_is_a_clear_failure_not_a_traceback(legacy_sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pmcp.host.pve import verify_identity

    secret = tmp_path / "secret"
    secret.write_text(legacy_sim.root_token_secret)
    checks = verify_identity(
        legacy_sim.url, legacy_sim.root_token_id, secret, verify=str(tmp_path / "gone.pem")
    )
    assert not checks[-1].ok and "cannot use" in checks[-1].detail and "gone.pem" in checks[-1].detail
