"""Pebble, Let's Encrypt's test ACME server (Debian's ``pebble`` package), run on this machine for a test.

Pebble serves its ACME directory over HTTPS with a certificate we make here (a private CA, as step-ca
has), so Caddy must be told to trust that CA (``acme_ca_root``); it validates challenges by connecting
to the domain at the ports given (the stack's published HTTP and HTTPS ports), and issues under a root
it generates at start (``/roots/0`` on its management port).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class PebbleError(RuntimeError):
    """Pebble could not be started; the message says why."""


def container_reachable_host_address() -> str:
    """An address of this machine that containers on any compose network reach: the default bridge's
    gateway (a local address: traffic to it goes to INPUT, not through Docker's inter-network isolation).
    Docker 20.10 may not record the gateway; it is then the subnet's first address, on docker0."""
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    local = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for entry in json.loads(out or "[]") or []:
        gateway = entry.get("Gateway") or ""
        if not gateway and entry.get("Subnet"):
            net = ipaddress.ip_network(entry["Subnet"], strict=False)
            gateway = str(net.network_address + 1) if net.version == 4 else ""
        if gateway and ipaddress.ip_address(gateway).version == 4 and f" {gateway}/" in local:
            return gateway
    raise PebbleError(f"no local IPv4 gateway for Docker's default bridge network: {out.strip()}")


def _ca_and_leaf(tmp: Path, ip: str) -> tuple[Path, Path, Path]:
    """A private root (with keyUsage, as step-ca makes them) and a listener certificate for ``ip``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pmcp test private ACME CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "listener-ca.pem", tmp / "listener.pem", tmp / "listener-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@dataclass
class Pebble:
    """A running Pebble: its directory URL (as containers reach it) and the roots a client needs."""

    process: subprocess.Popen[bytes]
    directory: str
    listener_ca: Path  # what the directory's HTTPS chains to (Caddy: acme_ca_root)
    issuing_root: Path  # what issued certificates chain to
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def start(
    tmp: Path,
    *,
    http_port: int,
    tls_port: int,
    listen_port: int,
    management_port: int,
    host: str | None = None,
    validity_seconds: int | None = None,
) -> Pebble:
    """Start ``pebble`` validating on ``http_port``/``tls_port``; wait until it answers, fetch its root.
    ``host``: the address in the directory URL (default: one containers reach; 127.0.0.1 for a client on
    this machine). ``validity_seconds``: how long what it issues lives (its default: 5 years)."""
    binary = shutil.which("pebble")
    if binary is None:
        raise PebbleError("pebble is missing. Fix: run scripts/ensure-test-env as root (Debian's pebble).")
    tmp.mkdir(parents=True, exist_ok=True)
    host = host or container_reachable_host_address()
    ca, cert, key = _ca_and_leaf(tmp, host)
    config = tmp / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"0.0.0.0:{listen_port}",
                    "managementListenAddress": f"127.0.0.1:{management_port}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                    **({"certificateValidityPeriod": validity_seconds} if validity_seconds else {}),
                }
            }
        )
    )
    log = tmp / "pebble.log"
    # No random validation sleeps and no deliberately rejected nonces: real validation, deterministic timing.
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "-config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp
        )
    pebble = Pebble(proc, f"https://{host}:{listen_port}/dir", ca, tmp / "pebble-root.pem", log)
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{listen_port}/dir", context=ctx, timeout=3):
                pass
            with urllib.request.urlopen(
                f"https://127.0.0.1:{management_port}/roots/0", context=ctx, timeout=3
            ) as resp:
                pebble.issuing_root.write_bytes(resp.read())
            return pebble
        except OSError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                pebble.stop()
                raise PebbleError(f"pebble did not answer: {exc}\n{pebble.log_tail()}") from exc
            time.sleep(0.2)
