"""The server's one configuration object, read and checked once from the environment.

One image serves every install, so everything comes from ``PMCP_*`` / ``PROXMOX_*`` variables (the
compose ``.env`` uses the same names). Every other server module receives a ``ServerConfig``; none
reads the environment itself. Secrets are read from files and never appear in ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TASK_TIMEOUT = 60.0
MAX_TASK_TIMEOUT = 600.0
DEFAULT_MAX_BODY = 1024 * 1024
MIB = 1024 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable and the fix."""


class Mode(StrEnum):
    """What the agent may do; each mode includes the ones before it."""

    READ_ONLY = "read-only"
    OPERATOR = "operator"
    ADMIN = "admin"


class Approval(StrEnum):
    """Who approves a call that needs approval when the client cannot ask its person (MCP elicitation).

    Either way a client that declared elicitation always asks the person: ``confirm: true`` from the
    model does not replace that. Without elicitation, ``confirm`` falls back to the model's
    ``confirm: true`` (pmcp's behaviour before elicitation) and ``elicit`` refuses the call."""

    ELICIT = "elicit"
    CONFIRM = "confirm"


class ApprovalScope(StrEnum):
    """Which calls need approval: destructive ones and those that create or consume resources, or
    every change."""

    DESTRUCTIVE = "destructive"
    CHANGES = "changes"


DEFAULT_UNDO_KEEP = 3  # pmcp-auto-* safety snapshots kept per guest (PMCP_UNDO_KEEP; 0: none taken)


@dataclass(frozen=True)
class ServerConfig:
    proxmox_url: str
    proxmox_token_id: str
    proxmox_token_secret: str = field(repr=False)
    proxmox_ca_file: Path | None = None
    proxmox_tls_insecure: bool = False
    proxmox_tls_name: str | None = None
    proxmox_timeout: float = 15.0
    auth_token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    mode: Mode = Mode.READ_ONLY
    protected: frozenset[int] = frozenset()
    approval: Approval = Approval.CONFIRM
    approval_scope: ApprovalScope = ApprovalScope.DESTRUCTIVE
    undo_keep: int = DEFAULT_UNDO_KEEP
    audit_log: Path | None = None
    task_timeout: float = DEFAULT_TASK_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY
    session_dir: Path | None = None  # handshake-era sessions shared by every server of the install
    # Scrape-only bearer token for /metrics (Prometheus); refused everywhere else.
    metrics_token_file: Path | None = None
    # Whose X-Forwarded-For is believed (names such as "caddy", resolved in Docker's DNS, or CIDRs).
    trusted_proxies: tuple[str, ...] = ()
    # One client cannot lock out the others (see pmcp.server.limits); 0 turns a rate limit off.
    sessions_per_token: int = 16
    max_sessions: int = 1000
    session_idle_timeout: float = 1800.0
    rate_initialize: int = 30
    rate_tool_calls: int = 300
    rate_changes: int = 60
    rate_requests: int = 1200
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    # Destructive actions per client token and hour, unless its line in the token file says otherwise
    # (pmcp.authtokens, limits.DestructiveBudget); 0 allows none.
    destructive_per_hour: int = 10
    # The audit log cannot fill the disk (see pmcp.server.audit).
    audit_max_bytes: int = 512 * MIB
    audit_file_bytes: int = 32 * MIB
    audit_min_free: int = 128 * MIB
    # The audit chain's HMAC key (PMCP_AUDIT_KEY_FILE); None: one kept beside the log (pmcp.server.audit).
    audit_key: bytes | None = field(default=None, repr=False)
    # Reads answered without the SDK's dispatcher (pmcp.server.express); PMCP_EXPRESS=off sends every
    # request the SDK's way (the benchmarks' comparison, and a way out should a client disagree with it).
    express: bool = True

    @property
    def proxmox_api(self) -> str:
        return self.proxmox_url.rstrip("/") + "/api2/json"

    @property
    def token_user(self) -> str:
        return self.proxmox_token_id.split("!", 1)[0]

    @property
    def token_name(self) -> str:
        return self.proxmox_token_id.split("!", 1)[1]

    def transport_hosts(self) -> list[str]:
        """Host header values the MCP transport accepts: loopback plus the configured public names,
        each with and without a port (Caddy forwards the client's Host, port included or not)."""
        names = ["127.0.0.1", "localhost", "[::1]", *(_bracket(h) for h in self.allowed_hosts)]
        out: list[str] = []
        for name in dict.fromkeys(names):
            out += [name, f"{name}:*"]
        return out

    def transport_origins(self) -> list[str]:
        """Origin values accepted: loopback, https on the public names, and PMCP_ALLOWED_ORIGINS."""
        out = [
            "http://127.0.0.1:*",
            "http://localhost:*",
            "http://[::1]:*",
            "http://127.0.0.1",
            "http://localhost",
        ]
        for h in self.allowed_hosts:
            out += [f"https://{_bracket(h)}", f"https://{_bracket(h)}:*"]
        out += list(self.allowed_origins)
        return list(dict.fromkeys(out))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, "").strip()

        url = get("PROXMOX_URL") or "https://127.0.0.1:8006"
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"PROXMOX_URL={url!r} is not a URL; set it like https://10.0.0.2:8006")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ConfigError("PROXMOX_URL uses plain http to a non-loopback host; use https://HOST:8006")
        token_id = get("PROXMOX_TOKEN_ID")
        if "!" not in token_id or "@" not in token_id.split("!")[0]:
            raise ConfigError("PROXMOX_TOKEN_ID must look like pmcp@pve!mcp (user@realm!tokenname)")
        secret_file = get("PROXMOX_TOKEN_SECRET_FILE")
        if not secret_file:
            raise ConfigError(
                "PROXMOX_TOKEN_SECRET_FILE is not set; point it at the file holding the token secret"
            )
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read PROXMOX_TOKEN_SECRET_FILE ({exc.strerror}); check the path and mode"
            ) from None
        if not secret:
            raise ConfigError("PROXMOX_TOKEN_SECRET_FILE is empty; put the token secret in it")
        ca = get("PROXMOX_CA_FILE")
        if ca and not Path(ca).is_file():
            raise ConfigError(f"PROXMOX_CA_FILE={ca} does not exist; mount /etc/pve/pve-root-ca.pem there")
        insecure = get("PROXMOX_TLS_INSECURE") in ("1", "true", "yes")
        # the name the certificate is checked against when PROXMOX_URL names an address it does not
        # (an ACME certificate for the node's FQDN, reached by IP)
        tls_name = get("PROXMOX_TLS_NAME") or None
        mode_text = get("PMCP_MODE") or Mode.READ_ONLY.value
        try:
            mode = Mode(mode_text)
        except ValueError:
            raise ConfigError(f"PMCP_MODE={mode_text!r}: use read-only, operator or admin") from None
        protected: set[int] = set()
        for item in _csv(get("PMCP_PROTECTED")):
            if not item.isdigit() or not 100 <= int(item) <= 999_999_999:
                raise ConfigError(f"PMCP_PROTECTED: {item!r} is not a VMID (100-999999999)")
            protected.add(int(item))
        approval = _choice(get, "PMCP_APPROVAL", Approval, Approval.CONFIRM)
        approval_scope = _choice(get, "PMCP_APPROVAL_SCOPE", ApprovalScope, ApprovalScope.DESTRUCTIVE)
        undo_text = get("PMCP_UNDO_KEEP") or str(DEFAULT_UNDO_KEEP)
        if not undo_text.isdigit() or int(undo_text) > 50:
            raise ConfigError(f"PMCP_UNDO_KEEP={undo_text!r}: a whole number of snapshots, 0-50 (0: none)")
        try:
            task_timeout = float(get("PMCP_TASK_TIMEOUT") or DEFAULT_TASK_TIMEOUT)
        except ValueError:
            raise ConfigError("PMCP_TASK_TIMEOUT must be a number of seconds") from None
        if not 0 < task_timeout <= MAX_TASK_TIMEOUT:
            raise ConfigError(f"PMCP_TASK_TIMEOUT must be between 0 and {MAX_TASK_TIMEOUT:g} seconds")
        token_file = get("PMCP_AUTH_TOKEN_FILE")
        metrics_token = get("PMCP_METRICS_TOKEN_FILE")
        audit = get("PMCP_AUDIT_LOG")
        if mode is not Mode.READ_ONLY and not audit:
            raise ConfigError(
                f"PMCP_MODE={mode.value} changes guests: set PMCP_AUDIT_LOG to an audit file path"
            )
        express_text = (get("PMCP_EXPRESS") or "on").lower()
        if express_text not in ("on", "off", "1", "0", "true", "false"):
            raise ConfigError(f"PMCP_EXPRESS={express_text!r}: use on or off")
        audit_key = None
        key_file = get("PMCP_AUDIT_KEY_FILE")
        if key_file:
            from pmcp.server.auditchain import read_key

            try:
                audit_key = read_key(Path(key_file))
            except OSError as exc:
                raise ConfigError(
                    f"cannot read PMCP_AUDIT_KEY_FILE ({exc.strerror}); `pmcp update` or `pmcp install` "
                    "creates secrets/audit-key"
                ) from None
            except ValueError as exc:
                raise ConfigError(f"PMCP_AUDIT_KEY_FILE: {exc}") from None
        return cls(
            proxmox_url=url.rstrip("/"),
            proxmox_token_id=token_id,
            proxmox_token_secret=secret,
            proxmox_ca_file=Path(ca) if ca else None,
            proxmox_tls_insecure=insecure,
            proxmox_tls_name=tls_name,
            auth_token_file=Path(token_file) if token_file else None,
            allowed_hosts=tuple(_csv(get("PMCP_ALLOWED_HOSTS"))),
            allowed_origins=tuple(_csv(get("PMCP_ALLOWED_ORIGINS"))),
            mode=mode,
            protected=frozenset(protected),
            approval=approval,
            approval_scope=approval_scope,
            undo_keep=int(undo_text),
            audit_log=Path(audit) if audit else None,
            task_timeout=task_timeout,
            session_dir=Path(get("PMCP_SESSION_DIR")) if get("PMCP_SESSION_DIR") else None,
            metrics_token_file=Path(metrics_token) if metrics_token else None,
            trusted_proxies=tuple(_csv(get("PMCP_TRUSTED_PROXIES"))),
            audit_key=audit_key,
            express=express_text in ("on", "1", "true"),
            **_limits(get),
        )


# PMCP_* variable -> (field, kind, lowest allowed value): the limits of pmcp.server.limits and audit.
LIMIT_VARS = {
    "PMCP_SESSIONS_PER_TOKEN": ("sessions_per_token", int, 1),
    "PMCP_MAX_SESSIONS": ("max_sessions", int, 1),
    "PMCP_SESSION_IDLE_TIMEOUT": ("session_idle_timeout", float, 1),
    "PMCP_RATE_INITIALIZE": ("rate_initialize", int, 0),
    "PMCP_RATE_TOOL_CALLS": ("rate_tool_calls", int, 0),
    "PMCP_RATE_CHANGES": ("rate_changes", int, 0),
    "PMCP_RATE_REQUESTS": ("rate_requests", int, 0),
    "PMCP_HEADER_TIMEOUT": ("header_timeout", float, 0.1),
    "PMCP_BODY_TIMEOUT": ("body_timeout", float, 0.1),
    "PMCP_DESTRUCTIVE_PER_HOUR": ("destructive_per_hour", int, 0),
    "PMCP_AUDIT_MAX_BYTES": ("audit_max_bytes", int, MIB),
    "PMCP_AUDIT_FILE_BYTES": ("audit_file_bytes", int, 64 * 1024),
    "PMCP_AUDIT_MIN_FREE": ("audit_min_free", int, 0),
}


def _limits(get: Callable[[str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, (name, kind, lowest) in LIMIT_VARS.items():
        text = get(var)
        if not text:
            continue
        try:
            value = kind(text)
        except ValueError:
            raise ConfigError(f"{var}={text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < lowest:
            raise ConfigError(f"{var}={text!r}: use at least {lowest:g}")
        out[name] = value
    return out


def _choice(get: Callable[[str], str], var: str, kind: type[Any], default: Any) -> Any:
    text = get(var) or default.value
    try:
        return kind(text)
    except ValueError:
        allowed = " or ".join(m.value for m in kind)
        raise ConfigError(f"{var}={text!r}: use {allowed}") from None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# The files a server cannot start without, when the environment names them (from_env reads them).
START_FILES = ("PROXMOX_TOKEN_SECRET_FILE", "PMCP_AUTH_TOKEN_FILE", "PMCP_AUDIT_KEY_FILE", "PROXMOX_CA_FILE")
MAX_SECRETS_WAIT = 600.0


def wait_for_start_files(
    env: Mapping[str, str] | None = None, *, poll: float = 0.05, log: Callable[[str], None] | None = None
) -> float:
    """With ``PMCP_SECRETS_WAIT=N`` (the install's .env sets it), wait up to N seconds until every file of
    START_FILES the environment names can be read and is not empty; returns the seconds waited.

    Why: an install starts the server container beside the step that makes the Proxmox token (the
    token secret, the client tokens and the audit key are written as that step ends), so the server's
    start (mostly importing the MCP SDK) is done by the time its token exists instead of after it. A
    file still missing after N seconds is left to ``from_env``, which says what is wrong with it.
    Without the variable (``pmcp serve`` by hand) nothing is waited for: a wrong path fails at once."""
    env = os.environ if env is None else env
    text = env.get("PMCP_SECRETS_WAIT", "").strip()
    if not text:
        return 0.0
    try:
        limit = float(text)
    except ValueError:
        raise ConfigError(f"PMCP_SECRETS_WAIT={text!r}: a number of seconds (0: no wait)") from None
    if not 0 <= limit <= MAX_SECRETS_WAIT:
        raise ConfigError(f"PMCP_SECRETS_WAIT must be between 0 and {MAX_SECRETS_WAIT:g} seconds")
    paths = [Path(env[name].strip()) for name in START_FILES if env.get(name, "").strip()]
    started = time.monotonic()
    said = False
    while True:
        missing = [p for p in paths if not _readable(p)]
        waited = time.monotonic() - started
        if not missing or waited >= limit:
            return waited
        if not said and log is not None:
            log(f"waiting up to {limit:g} s for {', '.join(map(str, missing))} (pmcp install writes them)")
            said = True
        time.sleep(poll)


def _readable(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return bool(f.read(1))
    except OSError:
        return False
