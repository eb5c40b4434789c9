"""How install trusts what port 8006 serves (pmcp.host.pvecert), against the simulator's certificates:
the cluster CA's pve-ssl.pem, or a custom/ACME pveproxy-ssl.pem (pve-manager PVE/Service/pveproxy.pm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmcp import pvetls
from pmcp.host import pvecert
from pmcp.sim.testing import running_sim
from pmcp.steps import StepError

NAME = "pve.example.test"


def test_the_cluster_certificate_is_trusted_with_the_hosts_ca() -> None:
    with running_sim(nodes=1, guests=1, tls=True) as sim:
        t = pvecert.choose("127.0.0.1", sim.port, "127.0.0.1", Path(sim.ca_file), None)
        assert t.mode == "pve-ca" and t.server_name is None and t.pem == Path(sim.ca_file).read_bytes()
        with pytest.raises(StepError, match="cannot be verified"):
            pvecert.choose("127.0.0.1", sim.port, "127.0.0.1", Path(sim.ca_file), None, want="system")


def test_a_custom_certificate_from_a_private_ca_pins_its_issuing_ca() -> None:
    with running_sim(nodes=1, guests=1, tls=True, custom_cert_name=NAME) as sim:
        tls_dir = Path(sim.ca_file).parent
        chain = tls_dir / "pveproxy-ssl.pem"
        t = pvecert.choose("127.0.0.1", sim.port, "10.0.0.11", Path(sim.ca_file), chain)
        assert t.mode == "pin" and t.server_name == NAME, t
        assert "issuing CA" in t.detail
        pinned = pvetls.pem_certificates(t.pem)  # type: ignore[arg-type]
        assert len(pinned) == 1 and pvetls.is_ca(pinned[0])  # the intermediate: survives a renewal
        assert pinned[0] == pvetls.pem_certificates(chain.read_bytes())[1]
        ctx = pvetls.context(cadata=t.pem)
        assert pvetls.handshake_error(ctx, "127.0.0.1", sim.port, NAME) == ""
        assert "mismatch" in pvetls.handshake_error(ctx, "127.0.0.1", sim.port, "10.0.0.11")
        # without the chain file (another host layout): the certificate itself
        leaf = pvecert.choose("127.0.0.1", sim.port, "10.0.0.11", Path(sim.ca_file), None, want="pin")
        assert leaf.mode == "pin" and "certificate itself" in leaf.detail
        with pytest.raises(StepError, match="pve-ca"):
            pvecert.choose("127.0.0.1", sim.port, "10.0.0.11", Path(sim.ca_file), chain, want="pve-ca")


def test_a_publicly_chained_certificate_uses_the_system_store(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_sim(nodes=1, guests=1, tls=True, custom_cert_name=NAME) as sim:
        tls_dir = Path(sim.ca_file).parent
        monkeypatch.setenv("SSL_CERT_FILE", str(tls_dir / "acme-root.pem"))  # "public" for this test
        t = pvecert.choose(
            "127.0.0.1", sim.port, "10.0.0.11", Path(sim.ca_file), tls_dir / "pveproxy-ssl.pem"
        )
        assert t.mode == "system" and t.pem is None and t.server_name == NAME, t
        s = pvetls.session(True, t.server_name)
        assert s.get(sim.api_url + "/version", timeout=10).status_code == 401  # TLS passed, no token
