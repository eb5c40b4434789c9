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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def make_certs(
    directory: str | Path,
    names: list[str],
    ca_key_usage: bool = False,
    custom_name: str | None = None,
) -> TlsFiles:
    """Create (or reuse, when present) ``pve-root-ca.pem``, ``pve-ssl.pem`` and ``pve-ssl.key``.

    As Proxmox makes them (pve-cluster ``PVE::Cluster::Setup``): the CA by ``gen_pveca_cert``
    (``openssl req -x509``, subject ``/CN=Proxmox Virtual Environment/OU=<uuid>/O=PVE Cluster Manager CA``,
    the default v3_ca extensions: SKI, AKI, critical CA:TRUE) and WITHOUT keyUsage unless
    ``ca_key_usage`` -- every CA made before the fix for bug 6701 (commit b9b8383, March 2026) lacks it
    and existing CAs are never regenerated, so "no keyUsage" is what real hosts have. The node
    certificate by ``gen_pve_ssl_cert``: ``basicConstraints=CA:FALSE``, ``extendedKeyUsage=serverAuth``,
    the SANs (here ``names``), subject ``/OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN=<fqdn>``.
    RSA as there (2048 bits for the CA too, where Proxmox uses 4096: same checks, faster start).

    ``custom_name``: also a custom certificate, ``pveproxy-ssl.pem``/``.key``, as an admin's ACME
    order leaves it (PVE::API2::ACME writes the full chain there): only that name, issued by an
    intermediate of a separate CA (``acme-root.pem``), not by the cluster CA. ``server_context`` then
    serves it, as pveproxy does.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "pve-root-ca.pem", d / "pve-ssl.pem", d / "pve-ssl.key")
    if not (files.ca_file.exists() and files.cert_file.exists() and files.key_file.exists()):
        make = _with_openssl if shutil.which("openssl") else _with_cryptography
        ca_subj = [
            ("CN", "Proxmox Virtual Environment"),
            ("OU", str(uuid.uuid4())),
            ("O", "PVE Cluster Manager CA"),
        ]
        node_subj = [("OU", "PVE Cluster Node"), ("O", "Proxmox Virtual Environment"), ("CN", names[0])]
        make(d / "pve-root-ca.key", files.ca_file, None, None, ca_subj, None, ca=True, key_usage=ca_key_usage)
        make(files.key_file, files.cert_file, d / "pve-root-ca.key", files.ca_file, node_subj, names)
        files.key_file.chmod(0o600)
        (d / "pve-root-ca.key").chmod(0o600)
    if custom_name and not (d / CUSTOM_CERT).exists():
        make = _with_openssl if shutil.which("openssl") else _with_cryptography
        root, inter = d / "acme-root.pem", d / "acme-intermediate.pem"
        root_subj = [("CN", "pmcp sim ACME Root X1"), ("O", "pmcp sim")]
        make(d / "acme-root.key", root, None, None, root_subj, None, ca=True, key_usage=True)
        make(d / "acme-intermediate.key", inter, d / "acme-root.key", root,
             [("CN", "pmcp sim ACME R1"), ("O", "pmcp sim")], None, ca=True, key_usage=True)  # fmt: skip
        leaf = d / "pveproxy-ssl.leaf.pem"
        make(d / CUSTOM_KEY, leaf, d / "acme-intermediate.key", inter, [("CN", custom_name)], [custom_name],
             key_usage=True)  # fmt: skip
        chain = leaf.read_text() + inter.read_text()  # the full chain, as pveproxy-ssl.pem holds it
        leaf.unlink()
        (d / CUSTOM_CERT).write_text(chain)
        for key in ("acme-root.key", "acme-intermediate.key", CUSTOM_KEY):
            (d / key).chmod(0o600)
    return files


def issue(
    key: Path,
    out: Path,
    ca_key: Path | None,
    ca_cert: Path | None,
    subject: list[tuple[str, str]],
    names: list[str] | None,
    ca: bool = False,
    key_usage: bool = False,
) -> None:
    """One certificate (self-signed when no CA is given): with openssl, else the cryptography package. Also
    pmcp's own CA for the systemd runtime (pmcp.stack.systemd.CertificateStep)."""
    make = _with_openssl if shutil.which("openssl") else _with_cryptography
    make(key, out, ca_key, ca_cert, subject, names, ca=ca, key_usage=key_usage)


CUSTOM_CERT = "pveproxy-ssl.pem"
CUSTOM_KEY = "pveproxy-ssl.key"


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
    """One certificate with the openssl command, the way pve-cluster calls it (self-signed when no CA)."""

    def run(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")

    run("genrsa", "-out", str(key), "2048")
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
            san = ",".join(("IP:" if _is_ip(n) else "DNS:") + n for n in names or [])
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
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:
        raise RuntimeError(
            "--tls needs the openssl command (apt install openssl) or the cryptography package"
        ) from e

    oid = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "O": NameOID.ORGANIZATION_NAME}
    name = x509.Name([x509.NameAttribute(oid[k], v) for k, v in subject])
    now = datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
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
        alt = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names or []]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    out.write_bytes(cert.public_bytes(pem))


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """What pveproxy serves (pve-manager ``PVE/Service/pveproxy.pm``, ``init``): ``pveproxy-ssl.pem``
    with its key when both exist, else the cluster-CA-signed ``pve-ssl.pem``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    d = files.cert_file.parent
    if (d / CUSTOM_CERT).is_file() and (d / CUSTOM_KEY).is_file():
        ctx.load_cert_chain(str(d / CUSTOM_CERT), str(d / CUSTOM_KEY))
    else:
        ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
    return ctx
