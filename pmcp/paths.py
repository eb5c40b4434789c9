"""Where everything of one install lives, derived from its prefix (so several installs can coexist)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pmcp import DEFAULT_PREFIX

__all__ = ["DEFAULT_PREFIX", "LOG_DIR", "InstallPaths"]

LOG_DIR = Path("/var/log/pmcp")


@dataclass(frozen=True)
class InstallPaths:
    prefix: Path

    @classmethod
    def at(cls, prefix: str | Path) -> InstallPaths:
        return cls(Path(prefix).resolve())

    @property
    def compose_file(self) -> Path:
        return self.prefix / "docker-compose.yml"

    @property
    def caddyfile(self) -> Path:
        return self.prefix / "Caddyfile"

    @property
    def env_file(self) -> Path:
        """Configuration of the stack; never a secret (secrets are files under secrets/)."""
        return self.prefix / ".env"

    @property
    def image_dir(self) -> Path:
        """Docker build context of the MCP image: a Dockerfile and a copy of this pmcp file."""
        return self.prefix / "image"

    @property
    def secrets_dir(self) -> Path:
        return self.prefix / "secrets"

    @property
    def proxmox_token_secret(self) -> Path:
        """The Proxmox API token's secret (0600)."""
        return self.secrets_dir / "proxmox-token"

    @property
    def client_tokens(self) -> Path:
        """Client bearer tokens, one `NAME:TOKEN` per line (0600); see pmcp.authtokens."""
        return self.secrets_dir / "client-tokens"

    @property
    def audit_key(self) -> Path:
        """The audit log's HMAC key (root's, readable by the server; never in the log): kept with the
        audit log when uninstall keeps that, so the records it sealed stay verifiable."""
        return self.secrets_dir / "audit-key"

    @property
    def state_file(self) -> Path:
        """What install recorded: version, options, identity names, image id (no secrets)."""
        return self.prefix / "state.json"

    @property
    def backups_dir(self) -> Path:
        return self.prefix / "backups"

    @property
    def audit_dir(self) -> Path:
        return self.prefix / "audit"

    @property
    def audit_log(self) -> Path:
        return self.audit_dir / "audit.jsonl"

    @property
    def sessions_dir(self) -> Path:
        """Handshake-era MCP sessions (no secrets), shared by the server containers during an update."""
        return self.prefix / "sessions"

    @property
    def caddy_data(self) -> Path:
        """Caddy's CA and certificates: survive every update and rollback."""
        return self.prefix / "caddy-data"

    @property
    def caddy_root_ca(self) -> Path:
        return self.caddy_data / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    @property
    def own_root_ca(self) -> Path:
        """pmcp's own CA (public), when the server terminates TLS itself (the systemd runtime)."""
        return self.prefix / "tls" / "pmcp-root-ca.pem"

    @property
    def clients_dir(self) -> Path:
        return self.prefix / "clients"

    @property
    def lock_file(self) -> Path:
        return self.prefix / ".pmcp.lock"
