"""TLS to the Proxmox API, verified, on every Python pmcp runs on (3.11 on PVE 8, 3.13 on PVE 9).

Why this exists: Python 3.13's ``ssl.create_default_context()`` and urllib3 2.3+ (on 3.13) set
``VERIFY_X509_STRICT``. OpenSSL then refuses a CA certificate without a keyUsage extension
("CA cert does not include key usage extension"), and that is every Proxmox root CA made before
pve-cluster's fix for bug 6701 (proxmox/pve-cluster commit b9b8383, March 2026,
``PVE::Cluster::Setup::gen_pveca_cert``; stable-bookworm's version has no ``-addext keyUsage``, and an
existing ``/etc/pve/pve-root-ca.pem`` is never regenerated). So on a PVE 9 host every verified
connection to the node's own API failed.

What we relax, and only there: when a trust file holds a CA certificate without keyUsage, the
context made for THAT file (it trusts nothing else) drops ``VERIFY_X509_STRICT``. The chain is still
verified against that CA, the hostname is still checked, and ``CERT_REQUIRED`` stays: the flag only
adds RFC 5280 profile checks (keyUsage present, AKI/SKI present) that those CAs predate. A CA with
keyUsage, or the system trust store, keeps the strict default of the Python in use.

Standard library only (the simulator's client uses it too); requests is imported lazily for
``session()``.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path
from typing import Any

# DER of the keyUsage extension's OID 2.5.29.15 (tag 06, length 03, 55 1d 0f): present in a certificate
# exactly when it carries a keyUsage extension (OIDs are not otherwise spelled inside a certificate's
# names or keys in practice, and a false "present" only keeps the strict default).
_KEY_USAGE_OID = bytes.fromhex("0603551d0f")
# basicConstraints (2.5.29.19), optional critical flag, then an OCTET STRING holding SEQUENCE { cA TRUE }
_CA_TRUE = re.compile(rb"\x06\x03\x55\x1d\x13(?:\x01\x01\xff)?\x04.\x30.\x01\x01\xff", re.S)
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)


def pem_certificates(data: bytes | str) -> list[bytes]:
    """The DER bytes of every certificate in a PEM text (a bundle, a chain, or one certificate)."""
    raw = data.encode() if isinstance(data, str) else data
    out = []
    for m in _PEM.finditer(raw):
        block = b"-----BEGIN CERTIFICATE-----\n" + m[1] + b"\n-----END CERTIFICATE-----\n"
        out.append(ssl.PEM_cert_to_DER_cert(block.decode("ascii")))
    return out


def has_key_usage(der: bytes) -> bool:
    return _KEY_USAGE_OID in der


def is_ca(der: bytes) -> bool:
    """basicConstraints with CA:TRUE (the form OpenSSL and cryptography write)."""
    return _CA_TRUE.search(der) is not None


def lacks_key_usage(pem: bytes | str) -> bool:
    """True when a CA certificate in ``pem`` has no keyUsage: Python 3.13's strict mode refuses it."""
    return any(is_ca(der) and not has_key_usage(der) for der in pem_certificates(pem))


def fingerprint(der: bytes) -> str:
    """SHA-256 fingerprint as Proxmox prints it (``pvenode cert info``, ``pvecm add --fingerprint``)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def context(
    cafile: str | Path | None = None, *, cadata: bytes | None = None, system: bool = False
) -> ssl.SSLContext:
    """A client context that verifies the chain and the hostname.

    ``cafile``: trust exactly the certificates in it (the host's ``pve-root-ca.pem``, or a pinned
    certificate or CA). Strict X.509 is dropped only when that file holds a CA without keyUsage (see
    the module's docstring). A pinned end-entity certificate is its own trust anchor, which OpenSSL
    accepts only with ``VERIFY_X509_PARTIAL_CHAIN`` (3.13 sets it by default; set here for 3.11).
    ``cadata``: the same, from PEM bytes.
    ``system`` (or no ``cafile``): the system store plus certifi's bundle, strict as Python makes it.
    """
    if (not cafile and cadata is None) or system:
        ctx = ssl.create_default_context()
        try:
            import certifi

            ctx.load_verify_locations(cafile=certifi.where())
        except (ImportError, OSError):
            pass
        return ctx
    pem = cadata if cadata is not None else Path(str(cafile)).read_bytes()
    ctx = ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
    if lacks_key_usage(pem):
        # The Proxmox CA predates keyUsage (bug 6701): relax only the RFC 5280 profile checks, for a
        # context that trusts only this CA. Chain, expiry and hostname are still verified.
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    # A pinned certificate (a leaf, or an issuing intermediate) is a trust anchor only with PARTIAL_CHAIN,
    # which 3.13 sets by default; for a file holding only a self-signed root it changes nothing.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def peer_certificate(host: str, port: int, server_name: str | None = None, timeout: float = 10) -> bytes:
    """The DER certificate a TLS server presents, read WITHOUT verifying it (to decide how to trust it)."""
    import socket

    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        probe.wrap_socket(raw, server_hostname=server_name or host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} presented no certificate")
    return der


def handshake_error(ctx: ssl.SSLContext, host: str, port: int, server_name: str, timeout: float = 10) -> str:
    """'' when a verified handshake with ``ctx`` succeeds for ``server_name``, else OpenSSL's reason."""
    import socket

    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=server_name),
        ):
            return ""
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc)
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


def session(verify: bool | str | Path, server_name: str | None = None) -> Any:
    """A requests Session whose HTTPS uses ``context(verify)`` (``True``: the system store).

    ``server_name``: the name to check the certificate against (and send as SNI) when the URL names
    an address the certificate does not, e.g. an ACME certificate for the node's FQDN reached by IP.
    ``verify=False`` is honoured (PROXMOX_TLS_INSECURE, an explicit choice) and never a default.
    """
    import requests

    s = requests.Session()
    if verify is False:
        s.verify = False
        return s
    s.mount("https://", adapter(verify, server_name))
    return s


def adapter(verify: bool | str | Path, server_name: str | None = None) -> Any:
    """A requests HTTPAdapter that verifies with ``context(verify)`` (see ``session``)."""
    from requests.adapters import HTTPAdapter

    ctx = context(None if verify is True else str(verify))

    class _ProxmoxAdapter(HTTPAdapter):
        def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
            pool_kwargs["ssl_context"] = ctx
            pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
            if server_name:
                pool_kwargs["server_hostname"] = server_name
            return host_params, pool_kwargs

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            # requests would load its CA bundle into our context here: the context already holds the
            # trust we chose, and must hold nothing else.
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = None
            conn.ca_cert_dir = None

    return _ProxmoxAdapter()
