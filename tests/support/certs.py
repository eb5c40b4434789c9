"""Certificates for tests: a real self-signed one (PEM), made in-process with cryptography, and a real TLS
handshake to prove a client trusts what a server serves."""

from __future__ import annotations

import datetime
import functools
import ssl
from pathlib import Path


@functools.cache
def self_signed_pem(name: str = "pmcp test CA") -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def handshake(cert: Path, key: Path, client: ssl.SSLContext, name: str) -> None:
    """A TLS handshake between a server serving ``cert``/``key`` and ``client`` asking for ``name``:
    raises ssl.SSLError unless the client trusts what the server serves, for that name."""
    import socket
    import threading

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    a, b = socket.socketpair()

    def serve() -> None:
        try:
            server_ctx.wrap_socket(a, server_side=True).close()
        except (ssl.SSLError, OSError):
            a.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        client.wrap_socket(b, server_hostname=name).close()
    finally:
        b.close()
        t.join(5)
