"""A throw-away CA and server certificate for ``pmcp sim serve --tls``.

Clients verify the simulator with the CA file, exactly as the MCP server verifies a real host with
``/etc/pve/pve-root-ca.pem``. Made with the ``openssl`` command, or the ``cryptography`` package when
there is no such command; either is loaded only here, so the HTTP path imports nothing heavy.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def default_names(host: str, extra: tuple[str, ...] = ()) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    return list(dict.fromkeys(n for n in names if n))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def make_certs(directory: str | Path, names: list[str]) -> TlsFiles:
    """Create (or reuse, when present) ``pve-root-ca.pem``, ``pve-ssl.pem`` and ``pve-ssl.key``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "pve-root-ca.pem", d / "pve-ssl.pem", d / "pve-ssl.key")
    if files.ca_file.exists() and files.cert_file.exists() and files.key_file.exists():
        return files
    if shutil.which("openssl"):
        _with_openssl(d, files, names)
    else:
        _with_cryptography(files, names)
    files.key_file.chmod(0o600)
    (d / "pve-root-ca.key").chmod(0o600)
    return files


def _with_openssl(d: Path, files: TlsFiles, names: list[str]) -> None:
    ca_key = d / "pve-root-ca.key"
    san = ",".join(("IP:" if _is_ip(n) else "DNS:") + n for n in names)

    def run(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(files.ca_file), "-days", "3650",
        "-subj", "/CN=pmcp simulator CA/O=pmcp",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "server.csr"
        ext = Path(tmp) / "ext.cnf"
        ext.write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        run("req", *ec, "-keyout", str(files.key_file), "-out", str(csr), "-subj", f"/CN={names[0]}/O=pmcp")
        run(
            "x509", "-req", "-in", str(csr), "-CA", str(files.ca_file), "-CAkey", str(ca_key),
            "-CAcreateserial", "-CAserial", str(Path(tmp) / "ca.srl"),
            "-out", str(files.cert_file), "-days", "825", "-extfile", str(ext),
        )  # fmt: skip


def _with_cryptography(files: TlsFiles, names: list[str]) -> None:
    import datetime

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:
        raise RuntimeError(
            "--tls needs the openssl command (apt install openssl) or the cryptography package"
        ) from e

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pmcp simulator CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    nopw = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    files.ca_file.write_bytes(ca.public_bytes(pem))
    (files.ca_file.parent / "pve-root-ca.key").write_bytes(ca_key.private_bytes(pem, pkcs8, nopw))
    files.cert_file.write_bytes(cert.public_bytes(pem))
    files.key_file.write_bytes(key.private_bytes(pem, pkcs8, nopw))


def server_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
    return ctx
