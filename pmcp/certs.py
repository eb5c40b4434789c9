"""Certificates pmcp makes: a CA and server certificates signed by it (self-signed when no CA is given).

With the ``openssl`` command the way pve-cluster calls it, or the ``cryptography`` package where there is
no such command (the server image); either is loaded only when a certificate is made. Used by the
simulator (its CA is made like ``gen_pveca_cert``) and by the systemd runtime (pmcp's own CA and the
server's certificate: pmcp.stack.systemd).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


NO_BACKEND = "--tls needs the openssl command (apt install openssl) or the cryptography package"


def issue(
    key: Path,
    out: Path,
    ca_key: Path | None,
    ca_cert: Path | None,
    subject: list[tuple[str, str]],
    names: list[str] | None,
    ca: bool = False,
    key_usage: bool = False,
    key_ready: bool = False,
) -> None:
    """One certificate (self-signed when no CA is given): with openssl, else the cryptography package.
    ``key_ready``: ``key`` holds a key made by new_key (made beside the CA: each RSA key takes 0.1-0.3 s)."""
    if not key_ready:
        new_key(key)
    make = _with_openssl if shutil.which("openssl") else _with_cryptography
    make(key, out, ca_key, ca_cert, subject, names, ca=ca, key_usage=key_usage)


def new_key(key: Path) -> None:
    """An RSA 2048 key: what issue() signs for (made ahead for a later issue(..., key_ready=True))."""
    if shutil.which("openssl"):
        proc = subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl genrsa failed: {proc.stderr.strip()}")
        return
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError as e:
        raise RuntimeError(NO_BACKEND) from e
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key.write_bytes(pem)


def _subject(parts: list[tuple[str, str]]) -> str:
    return "/" + "/".join(f"{k}={v}" for k, v in parts) + "/"


def _with_openssl(
    key: Path,
    out: Path,
    ca_key: Path | None,
    ca_cert: Path | None,
    subject: list[tuple[str, str]],
    names: list[str] | None,
    ca: bool = False,
    key_usage: bool = False,
) -> None:
    """One certificate for ``key`` with the openssl command, the way pve-cluster calls it (self-signed
    when no CA)."""

    def run(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")

    with tempfile.TemporaryDirectory() as tmp:
        ext = Path(tmp) / "ext.cnf"
        lines = ["subjectKeyIdentifier=hash"]
        if ca:
            lines += ["authorityKeyIdentifier=keyid:always,issuer", "basicConstraints=critical,CA:true"]
            if key_usage:
                lines.append("keyUsage=critical,keyCertSign,cRLSign")
        else:
            lines += ["authorityKeyIdentifier=keyid,issuer", "basicConstraints=CA:FALSE",
                      "extendedKeyUsage=serverAuth"]  # fmt: skip
            if key_usage:
                lines.append("keyUsage=critical,digitalSignature,keyEncipherment")
            san = ",".join(("IP:" if is_ip(n) else "DNS:") + n for n in names or [])
            lines.append(f"subjectAltName={san}")
        # A config of our own (not the system openssl.cnf): the same extensions on every machine.
        ext.write_text("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + "\n".join(lines) + "\n")
        days = "3650" if ca else "730"
        if ca_key is None:
            run("req", "-batch", "-new", "-x509", "-days", days, "-key", str(key), "-out", str(out),
                "-subj", _subject(subject), "-config", str(ext), "-extensions", "v3")  # fmt: skip
            return
        csr = Path(tmp) / "req.csr"
        run("req", "-batch", "-new", "-key", str(key), "-out", str(csr), "-subj", _subject(subject),
            "-config", str(ext))  # fmt: skip
        run("x509", "-req", "-in", str(csr), "-days", days, "-out", str(out), "-CAkey", str(ca_key),
            "-CA", str(ca_cert), "-CAcreateserial", "-CAserial", str(Path(tmp) / "ca.srl"),
            "-extfile", str(ext), "-extensions", "v3")  # fmt: skip


def _with_cryptography(
    key_file: Path,
    out: Path,
    ca_key_file: Path | None,
    ca_cert_file: Path | None,
    subject: list[tuple[str, str]],
    names: list[str] | None,
    ca: bool = False,
    key_usage: bool = False,
) -> None:
    """The same certificate as ``_with_openssl``, where there is no openssl command (the server image)."""
    import datetime

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:
        raise RuntimeError(NO_BACKEND) from e

    oid = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "O": NameOID.ORGANIZATION_NAME}
    name = x509.Name([x509.NameAttribute(oid[k], v) for k, v in subject])
    now = datetime.datetime.now(datetime.UTC)
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    if ca_key_file is None:
        issuer_key: Any = key
        issuer_name = name
        issuer_ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    else:
        issuer_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
        issuer = x509.load_pem_x509_certificate(ca_cert_file.read_bytes())  # type: ignore[union-attr]
        issuer_name = issuer.subject
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # pve-cluster: faketime yesterday
        .not_valid_after(now + datetime.timedelta(days=3650 if ca else 730))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=ca)
    )
    if ca and key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        if key_usage:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
            )
        alt = [x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n) for n in names or []]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
