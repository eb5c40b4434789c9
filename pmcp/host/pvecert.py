"""How the MCP server trusts the Proxmox API: decided from what port 8006 actually serves.

pveproxy serves ``/etc/pve/local/pveproxy-ssl.pem`` (with its key) when present, else the cluster-CA-signed
``pve-ssl.pem`` (pve-manager ``PVE/Service/pveproxy.pm``, ``init``). An admin's ACME order or uploaded
certificate lands in ``pveproxy-ssl.pem`` (PVE::API2::ACME / PVE::API2::Certificates): it names the FQDN,
not the node's address, and ``pve-root-ca.pem`` does not sign it. So install looks at the certificate
the port presents and picks, in this order (``auto``):

- ``pve-ca``: it verifies against ``/etc/pve/pve-root-ca.pem`` for the address the server uses;
- ``system``: it verifies against the public trust store (system + certifi), for a name it carries
  (the FQDN: the server then checks that name while connecting to the address). Survives every
  renewal by the same public CA;
- ``pin``: otherwise (a private ACME CA, a self-signed upload), as Proxmox itself pins fingerprints on a
  cluster join (``pvecm add --fingerprint``): the issuing CA of the served chain when the chain holds
  one (survives renewals by that CA), else the certificate itself (a new one needs ``pmcp install``
  again; ``verify`` says so).

``--proxmox-trust pve-ca|system|pin`` forces one of them (refused, with the reason, when it does not
verify what the port serves). Verification always stays on, with the hostname check.

Interfaces (used by pmcp.lifecycle.install):
    Trust(mode, pem, server_name, detail, fingerprint);  TRUST_MODES
    choose(host, port, url_host, pve_ca, custom_chain, want="auto") -> Trust   (StepError when none works)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from pmcp import pvetls
from pmcp.steps import StepError

TRUST_MODES = ("auto", "pve-ca", "system", "pin")
PVEPROXY_CUSTOM = Path("/etc/pve/local/pveproxy-ssl.pem")


@dataclass
class Trust:
    mode: str  # pve-ca | system | pin
    pem: bytes | None  # what the server trusts (None: the system store)
    server_name: str | None  # the name to check when the URL's host is not on the certificate
    detail: str
    fingerprint: str


def names(der: bytes) -> list[str]:
    """The DNS names and addresses a certificate is valid for (SAN, else the CN)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        out = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        out += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        out = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return out


def _covers(cert_names: list[str], host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        return any(n == str(ip) for n in cert_names)
    except ValueError:
        pass
    for n in cert_names:
        if n.lower() == host.lower():
            return True
        if n.startswith("*.") and "." in host and host.lower().split(".", 1)[1] == n[2:].lower():
            return True
    return False


def _pin_pem(leaf: bytes, custom_chain: Path | None) -> tuple[bytes, str]:
    """The issuing CA from the served chain file when its first certificate is the served one, else the
    served certificate itself."""
    import ssl

    if custom_chain is not None:
        try:
            chain = pvetls.pem_certificates(custom_chain.read_bytes())
        except OSError:
            chain = []
        if chain and chain[0] == leaf:
            cas = [der for der in chain[1:] if pvetls.is_ca(der)]
            if cas:
                return ssl.DER_cert_to_PEM_cert(cas[0]).encode(), f"its issuing CA (from {custom_chain})"
    return ssl.DER_cert_to_PEM_cert(leaf).encode(), "the certificate itself"


def choose(
    host: str,
    port: int,
    url_host: str,
    pve_ca: Path | None,
    custom_chain: Path | None,
    want: str = "auto",
) -> Trust:
    """Look at what ``host:port`` serves and decide how the server (reaching it as ``url_host``) trusts it."""
    if want not in TRUST_MODES:
        raise StepError(f"unknown --proxmox-trust {want!r}", fix=f"one of {', '.join(TRUST_MODES)}")
    try:
        leaf = pvetls.peer_certificate(host, port)
    except OSError as exc:
        raise StepError(
            f"cannot read the certificate the Proxmox API serves at {host}:{port}: {exc}",
            fix="systemctl status pveproxy",
        ) from exc
    fp = pvetls.fingerprint(leaf)
    cert_names = names(leaf)
    shown = ", ".join(cert_names[:4]) or "no name"
    tried: list[str] = []

    if want in ("auto", "pve-ca") and pve_ca is not None and pve_ca.is_file():
        err = pvetls.handshake_error(pvetls.context(pve_ca), host, port, url_host)
        if not err:
            return Trust("pve-ca", pve_ca.read_bytes(), None, f"signed by the host's CA {pve_ca}", fp)
        tried.append(f"{pve_ca}: {err}")
    elif want == "pve-ca":
        tried.append(f"{pve_ca}: not found")

    name = None if _covers(cert_names, url_host) else next((n for n in cert_names if "*" not in n), None)
    check_name = name or url_host
    if want in ("auto", "system"):
        err = pvetls.handshake_error(pvetls.context(system=True), host, port, check_name)
        if not err:
            return Trust(
                "system",
                None,
                name,
                f"a publicly trusted certificate for {shown}: the system trust store",
                fp,
            )
        tried.append(f"system trust store: {err}")

    if want in ("auto", "pin"):
        pem, what = _pin_pem(leaf, custom_chain)
        err = pvetls.handshake_error(pvetls.context(cadata=pem), host, port, check_name)
        if not err:
            return Trust(
                "pin", pem, name, f"a certificate for {shown} that no CA here vouches for: pinned {what}", fp
            )
        tried.append(f"pinned {what}: {err}")

    raise StepError(
        f"the certificate on {host}:{port} ({shown}, SHA-256 {fp}) cannot be verified "
        f"({'auto' if want == 'auto' else '--proxmox-trust ' + want}): " + "; ".join(tried),
        fix="pmcp install --proxmox-trust auto (or pin); check `pvenode cert info`",
    )
