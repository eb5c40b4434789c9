"""A throw-away CA and server certificate for ``pmcp sim serve --tls``.

Clients verify the simulator with the CA file, exactly as the MCP server verifies a real host with
``/etc/pve/pve-root-ca.pem``. Made with the ``openssl`` command, or the ``cryptography`` package when
there is no such command; either is loaded only here, so the HTTP path imports nothing heavy.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pmcp.certs import issue, new_key


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
        make = issue
        ca_subj = [
            ("CN", "Proxmox Virtual Environment"),
            ("OU", str(uuid.uuid4())),
            ("O", "PVE Cluster Manager CA"),
        ]
        node_subj = [("OU", "PVE Cluster Node"), ("O", "Proxmox Virtual Environment"), ("CN", names[0])]
        # the node's key is made beside the CA (an RSA key takes 0.1-0.3 s: most of a first start)
        with ThreadPoolExecutor(max_workers=1) as pool:
            node_key = pool.submit(new_key, files.key_file)
            ca_key = d / "pve-root-ca.key"
            make(ca_key, files.ca_file, None, None, ca_subj, None, ca=True, key_usage=ca_key_usage)
            node_key.result()
        make(files.key_file, files.cert_file, ca_key, files.ca_file, node_subj, names, key_ready=True)
        files.key_file.chmod(0o600)
        (d / "pve-root-ca.key").chmod(0o600)
    if custom_name and not (d / CUSTOM_CERT).exists():
        make = issue
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


CUSTOM_CERT = "pveproxy-ssl.pem"
CUSTOM_KEY = "pveproxy-ssl.key"


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
