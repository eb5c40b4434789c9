"""A small ACME client (RFC 8555, http-01) for the systemd runtime, which has no Caddy to get certificates.

It orders one certificate for one DNS name: an account key (EC P-256, kept 0600 so renewals reuse the
account), a new order, the http-01 challenge answered by a listener this process opens on the HTTP port
for the length of the order, a CSR for a fresh key, then the chain. Nothing else of ACME is needed here
(no revocation, no external account binding, no DNS challenges). Works with Let's Encrypt (the default
directory, as Caddy's) and private ACME CAs (step-ca, Pebble) whose directory's HTTPS chains to
``--acme-ca-root``.

Only the standard library and ``cryptography`` (already in the file) are used: the ACME libraries on PyPI
pull in josepy, pyOpenSSL and requests for what is ~200 lines here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pmcp.errors import StepError
from pmcp.files import atomic_write

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"  # Caddy's default issuer too
CHALLENGE_PATH = "/.well-known/acme-challenge/"
USER_AGENT = "pmcp-acme/1"
_URL_FIX = (
    "check the --acme-ca URL and that this host reaches it (and --acme-ca-root for a private CA), or give "
    "your own certificate with --tls-cert/--tls-key"
)


class AcmeError(StepError):
    """An order that did not end in a certificate; the message says which step and the CA's words."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def trust(root: Path | None) -> ssl.SSLContext:
    """How this client verifies the directory's HTTPS: the system's store, plus a private CA's root."""
    ctx = ssl.create_default_context()
    if root is not None and root.is_file():
        ctx.load_verify_locations(cafile=str(root))
    return ctx


def account_key(path: Path) -> Any:
    """The ACME account's key: loaded, or made once (0600) so every renewal uses the same account."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if path.is_file():
        return serialization.load_pem_private_key(path.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(path, pem, 0o600)
    return key


class _Account:
    """Signed requests (JWS, ES256) with the nonce bookkeeping RFC 8555 section 6.5 asks for."""

    def __init__(self, directory: str, key: Any, ctx: ssl.SSLContext, timeout: float) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.ctx, self.timeout, self.key = ctx, timeout, key
        numbers = key.public_key().public_numbers()
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.jwk = {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x.to_bytes(32, "big")),
                    "y": _b64(numbers.y.to_bytes(32, "big"))}  # fmt: skip
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        self.thumbprint = _b64(hashlib.sha256(canonical).digest())  # RFC 7638
        self.kid: str | None = None
        self.nonce: str | None = None
        self.dir = self._json(self._get(urllib.request.Request(directory), "read the ACME directory")[1])
        missing = [k for k in ("newNonce", "newAccount", "newOrder") if not isinstance(self.dir.get(k), str)]
        if missing:
            raise AcmeError(f"{directory} is not an ACME directory (no {', '.join(missing)})", fix=_URL_FIX)

    def _get(self, req: urllib.request.Request, what: str) -> tuple[Any, bytes]:
        """An unsigned request (the directory, a nonce): a CA's problem answer is an AcmeError."""
        try:
            return self._open(req, what)
        except _Problem as exc:
            raise AcmeError(f"cannot {exc.message}", fix=_URL_FIX) from None

    def _open(self, req: urllib.request.Request, what: str) -> tuple[Any, bytes]:
        req.add_header("User-Agent", USER_AGENT)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as resp:
                if resp.headers.get("Replay-Nonce"):
                    self.nonce = resp.headers["Replay-Nonce"]
                return resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            if exc.headers.get("Replay-Nonce"):
                self.nonce = exc.headers["Replay-Nonce"]
            body = exc.read()
            problem = self._problem(body)
            raise _Problem(
                problem.get("type", ""), f"{what}: {exc.code} {problem.get('detail', '')}"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AcmeError(f"cannot {what} at {req.full_url}: {reason}", fix=_URL_FIX) from None

    @staticmethod
    def _problem(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
            return data if isinstance(data, dict) else {}
        except ValueError:
            return {"detail": body[:200].decode("utf-8", "replace")}

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise AcmeError("the ACME server answered something that is not JSON", fix=_URL_FIX)
        return data

    def _new_nonce(self) -> str:
        self._get(urllib.request.Request(self.dir["newNonce"], method="HEAD"), "get a nonce")
        if not self.nonce:
            raise AcmeError("the ACME server gave no Replay-Nonce", fix=_URL_FIX)
        return self.nonce

    def post(
        self, url: str, payload: dict[str, Any] | None, what: str, accept: str = ""
    ) -> tuple[Any, bytes]:
        """A signed POST (``payload`` None: POST-as-GET). A badNonce is retried once with the fresh nonce."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        for attempt in (1, 2):
            nonce, self.nonce = self.nonce or self._new_nonce(), None
            protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
            protected |= {"kid": self.kid} if self.kid else {"jwk": self.jwk}
            body64 = "" if payload is None else _b64(json.dumps(payload).encode())
            signing_input = f"{_b64(json.dumps(protected).encode())}.{body64}".encode()
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            jws = {"protected": signing_input.split(b".")[0].decode(), "payload": body64,
                   "signature": _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}  # fmt: skip
            req = urllib.request.Request(url, data=json.dumps(jws).encode(), method="POST")
            req.add_header("Content-Type", "application/jose+json")
            if accept:
                req.add_header("Accept", accept)
            try:
                return self._open(req, what)
            except _Problem as exc:
                if exc.kind.endswith(":badNonce") and attempt == 1:
                    continue
                raise AcmeError(f"the ACME server refused to {exc.message}", fix=_fix(exc.kind)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def post_json(self, url: str, payload: dict[str, Any] | None, what: str) -> tuple[Any, dict[str, Any]]:
        headers, body = self.post(url, payload, what)
        return headers, self._json(body)


class _Problem(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def _fix(kind: str, domain: str = "DOMAIN", port: int = 80) -> str:
    if kind.endswith((":connection", ":unauthorized", ":dns", ":incorrectResponse")):
        return (f"the ACME CA must reach http://{domain}:{port}{CHALLENGE_PATH} on this host: {domain}'s DNS "
                f"must point here and port {port} be open to the CA (firewall, NAT)")  # fmt: skip
    if kind.endswith(":rateLimited"):
        return (
            "wait until the CA's rate limit resets (Let's Encrypt: up to a week), or use --tls-cert/--tls-key"
        )
    if kind.endswith(":rejectedIdentifier"):
        return (
            "the CA does not issue for this name: use a public DNS name you control, or --tls-cert/--tls-key"
        )
    return "see the CA's message; --tls-cert/--tls-key serve your own certificate instead"


class _ChallengeServer(ThreadingHTTPServer):
    """Answers http-01 challenges for the order's tokens; IPv6 and IPv4 (the CA may try either)."""

    daemon_threads = True
    address_family = socket.AF_INET6

    def __init__(self, port: int, answers: dict[str, str]) -> None:
        self.answers = answers
        try:
            super().__init__(("::", port), _ChallengeHandler)
        except OSError as exc:
            if exc.errno not in (97, 99):  # EAFNOSUPPORT, EADDRNOTAVAIL: a host without IPv6
                raise
            self.address_family = socket.AF_INET
            super().__init__(("0.0.0.0", port), _ChallengeHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _ChallengeHandler(BaseHTTPRequestHandler):
    server: _ChallengeServer

    def do_GET(self) -> None:
        token = self.path.removeprefix(CHALLENGE_PATH) if self.path.startswith(CHALLENGE_PATH) else ""
        answer = self.server.answers.get(token)
        body = (answer or "not found").encode()
        self.send_response(200 if answer else 404)
        self.send_header("Content-Type", "application/octet-stream" if answer else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # no access log on the installer's output


@dataclass
class Issued:
    key_pem: bytes  # the certificate's private key (PKCS#8, unencrypted: the server reads it at start)
    chain_pem: bytes  # the certificate and its intermediates, as the CA sent them


def order(
    directory: str,
    domain: str,
    account_key_file: Path,
    *,
    http_port: int = 80,
    ctx: ssl.SSLContext | None = None,
    timeout: float = 120,
    progress: Callable[[str], None] | None = None,
) -> Issued:
    """Order a certificate for ``domain`` and answer its http-01 challenge on ``http_port``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    say = progress or (lambda _line: None)
    deadline = time.monotonic() + timeout
    acct = _Account(directory, account_key(account_key_file), ctx or trust(None), timeout=30)
    headers, _ = acct.post_json(acct.dir["newAccount"], {"termsOfServiceAgreed": True}, "create an account")
    acct.kid = headers["Location"]
    headers, order_ = acct.post_json(
        acct.dir["newOrder"],
        {"identifiers": [{"type": "dns", "value": domain}]},
        f"order a certificate for {domain}",
    )
    order_url = headers["Location"]
    answers: dict[str, str] = {}
    try:
        server = _ChallengeServer(http_port, answers)
    except OSError as exc:
        raise AcmeError(
            f"cannot listen on port {http_port} for the ACME http-01 challenge: {exc.strerror or exc}",
            fix=f"free port {http_port} while the certificate is ordered (`ss -ltnp 'sport = :{http_port}'`),"
            " or give your own certificate with --tls-cert/--tls-key",
        ) from None
    threading.Thread(target=server.serve_forever, name="acme-http-01", daemon=True).start()
    try:
        for authz_url in order_["authorizations"]:
            _, authz = acct.post_json(authz_url, None, "read an authorization")
            if authz.get("status") == "valid":
                continue  # the CA remembers this account proved the name recently
            challenge = next((c for c in authz.get("challenges", []) if c.get("type") == "http-01"), None)
            if challenge is None:
                raise AcmeError(f"the ACME CA offers no http-01 challenge for {domain}", fix=_fix(""))
            answers[challenge["token"]] = f"{challenge['token']}.{acct.thumbprint}"
            say(f"ACME: the CA checks http://{domain}:{http_port}{CHALLENGE_PATH}…")
            acct.post_json(challenge["url"], {}, "start the http-01 challenge")
            authz = _poll(acct, authz_url, ("valid", "invalid"), deadline, "validate the challenge")
            if authz["status"] != "valid":
                failed = next((c for c in authz.get("challenges", []) if c.get("error")), {})
                err = failed.get("error") or {}
                raise AcmeError(
                    f"the ACME CA could not validate {domain}: {err.get('detail', authz['status'])}",
                    fix=_fix(str(err.get("type", ":connection")), domain, http_port),
                )
    finally:
        server.shutdown()
        server.server_close()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    acct.post_json(order_["finalize"], {"csr": _b64(csr_der)}, "finalize the order")
    done = _poll(acct, order_url, ("valid", "invalid"), deadline, "issue the certificate")
    if done["status"] != "valid" or not done.get("certificate"):
        raise AcmeError(f"the ACME order for {domain} ended {done['status']!r}", fix=_fix(""))
    _, chain = acct.post(
        done["certificate"], None, "download the certificate", "application/pem-certificate-chain"
    )
    if b"-----BEGIN CERTIFICATE-----" not in chain:
        raise AcmeError("the ACME CA sent no PEM certificate", fix=_fix(""))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(key_pem, chain)


def _poll(acct: _Account, url: str, final: tuple[str, ...], deadline: float, what: str) -> dict[str, Any]:
    while True:
        headers, obj = acct.post_json(url, None, what)
        if obj.get("status") in final:
            return obj
        if time.monotonic() > deadline:
            raise AcmeError(
                f"the ACME CA did not {what} in time (status {obj.get('status')!r})",
                fix="try again later; the CA may be busy",
            )
        try:
            wait = min(max(float(headers.get("Retry-After") or 0.5), 0.2), 3.0)
        except ValueError:
            wait = 0.5
        time.sleep(wait)
