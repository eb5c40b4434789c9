"""pmcp.acme against Pebble (Let's Encrypt's test CA, Debian's package) running on this machine: a real
order with a real http-01 validation, the account reused, and each failure a user can meet answered
with its fix."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmcp import acme
from tests.support import pebble
from tests.support.certs import handshake
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pebble.Pebble, int]]:
    http_port = free_port()
    p = pebble.start(
        tmp_path_factory.mktemp("pebble"),
        http_port=http_port,
        tls_port=free_port(),
        listen_port=free_port(),
        management_port=free_port(),
        host="127.0.0.1",
    )
    try:
        yield p, http_port
    finally:
        p.stop()


def _leaf(chain: bytes) -> object:
    from cryptography import x509

    return x509.load_pem_x509_certificates(chain)[0]


def test_orders_a_certificate_the_ca_validated_and_reuses_the_account(
    ca: tuple[pebble.Pebble, int], tmp_path: Path
) -> None:
    from cryptography import x509

    p, http_port = ca
    domain = socket.gethostname()  # resolves to this machine, where the challenge listener runs
    account = tmp_path / "secrets" / "acme-account.key"
    issued = acme.order(p.directory, domain, account, http_port=http_port, ctx=acme.trust(p.listener_ca))
    assert account.stat().st_mode & 0o777 == 0o600
    leaf = _leaf(issued.chain_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value  # type: ignore[attr-defined]
    assert san.get_values_for_type(x509.DNSName) == [domain]
    assert b"PRIVATE KEY" in issued.key_pem
    # the chain verifies to the CA's issuing root, for that name, as a client will check it
    (tmp_path / "chain.pem").write_bytes(issued.chain_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    client = ssl.create_default_context(cafile=str(p.issuing_root))
    handshake(tmp_path / "chain.pem", tmp_path / "key.pem", client, domain)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path / "chain.pem", tmp_path / "key.pem", client, "other.example")
    assert "set VALID by completed challenge" in p.log.read_text(), p.log_tail()

    before = account.read_bytes()
    again = acme.order(p.directory, domain, account, http_port=http_port, ctx=acme.trust(p.listener_ca))
    assert (
        account.read_bytes() == before and _leaf(again.chain_pem) != leaf
    )  # same account, a new certificate


def test_an_unreachable_challenge_names_the_port_and_dns(
    ca: tuple[pebble.Pebble, int], tmp_path: Path
) -> None:
    p, _ = ca
    # the CA validates on its configured port, where nothing answers for this order: the listener is elsewhere
    port = free_port()
    with pytest.raises(acme.AcmeError) as err:
        acme.order(
            p.directory,
            "nothing.invalid",
            tmp_path / "acct.key",
            http_port=port,
            ctx=acme.trust(p.listener_ca),
        )
    assert "could not validate nothing.invalid" in err.value.message
    assert f"http://nothing.invalid:{port}/.well-known/acme-challenge/" in err.value.fix


def test_a_directory_that_is_not_trusted_or_not_there(ca: tuple[pebble.Pebble, int], tmp_path: Path) -> None:
    p, http_port = ca
    with pytest.raises(acme.AcmeError) as err:  # the private CA's root not given
        acme.order(p.directory, "x.example", tmp_path / "a.key", http_port=http_port, ctx=acme.trust(None))
    assert "cannot read the ACME directory" in err.value.message and "--acme-ca-root" in err.value.fix
    with pytest.raises(acme.AcmeError) as err:
        acme.order(
            f"https://127.0.0.1:{free_port()}/dir",
            "x.example",
            tmp_path / "a.key",
            ctx=acme.trust(p.listener_ca),
        )
    assert "cannot read the ACME directory" in err.value.message


def test_a_port_in_use_says_so(ca: tuple[pebble.Pebble, int], tmp_path: Path) -> None:
    p, _ = ca
    with socket.socket(socket.AF_INET6) as busy:
        busy.bind(("::", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(acme.AcmeError) as err:
            acme.order(
                p.directory,
                socket.gethostname(),
                tmp_path / "a.key",
                http_port=port,
                ctx=acme.trust(p.listener_ca),
            )
    assert f"cannot listen on port {port}" in err.value.message and f"sport = :{port}" in err.value.fix
