"""state.json: what install recorded (version, options, names, image), so verify/status/update/uninstall
rebuild the same steps without asking again. Never a secret; written atomically.

The file carries a schema version. ``load`` migrates an older file in memory (``save`` then writes the
current schema) and refuses a newer one, which only a newer pmcp understands. ``read`` gives the typed
view, ``Record``; keys it does not know are kept, so nothing another version wrote is lost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from pmcp.errors import NotReady
from pmcp.files import write_json
from pmcp.paths import InstallPaths

SCHEMA = 2


@dataclass
class Record:
    """The typed state of one install (every field optional: an install that stopped early has few)."""

    schema: int = SCHEMA
    version: str = ""  # the pmcp that installed or last updated it
    project: str = ""  # the compose project
    url: str = ""  # what clients connect to
    tls: str = ""  # internal (Caddy's CA), acme (--domain) or custom (--tls-cert)
    domain: str | None = None
    https_port: int | None = None
    mcp_image: str = ""
    node: str = ""
    installed_at: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # InstallOptions.to_dict()
    config: dict[str, Any] = field(default_factory=dict)  # render.StackConfig.to_dict()
    identity: dict[str, Any] = field(default_factory=dict)  # how to reach Proxmox (no secret)
    stack_fingerprints: dict[str, str] = field(default_factory=dict)
    update_skip: str | None = None  # an image rolled back from: `update` skips it unless --force
    last_install: dict[str, Any] | None = None
    last_update: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)} - {"extra"}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        rec.extra = {k: v for k, v in data.items() if k not in known}
        return rec

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **out}


def _from_1(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (and files without a schema) -> 2: ``url`` and ``tls`` recorded at the top, where
    clients and verify read them; an older file had them only inside ``config`` (or not at all)."""
    return _derived(data)


def _derived(data: dict[str, Any]) -> dict[str, Any]:
    """``url`` and ``tls`` from ``config`` when they are not recorded yet: install records them at its
    end, and its client-config step (before the end) must already see the URL the stack serves."""
    cfg = data.get("config") or {}
    if not data.get("url") and cfg:
        host = cfg.get("domain") or (cfg.get("public_names") or [None])[0]
        port = int(cfg.get("https_port") or 443)
        if host:
            host = f"[{host}]" if ":" in host else host
            data["url"] = f"https://{host}{'' if port == 443 else f':{port}'}/mcp"
    if not data.get("tls") and cfg:
        data["tls"] = "custom" if cfg.get("tls_cert") else ("acme" if cfg.get("domain") else "internal")
    return data


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_1, 1: _from_1}


def migrate(data: dict[str, Any], source: str = "state.json") -> dict[str, Any]:
    """Bring a state of any known schema to the current one (in memory)."""
    schema = data.get("schema", 0)
    if not isinstance(schema, int) or schema > SCHEMA:
        raise NotReady(
            f"{source} has schema {schema}, newer than this pmcp understands ({SCHEMA})",
            fix="run the newer pmcp file that wrote it (or `pmcp update` with it)",
        )
    while schema < SCHEMA:
        data = MIGRATIONS[schema](dict(data))
        schema = SCHEMA if schema == 0 else schema + 1
    data["schema"] = SCHEMA
    return data


def load(paths: InstallPaths) -> dict[str, Any]:
    """The recorded state, or {} when there is none (not installed, or an install that never got far)."""
    try:
        data = json.loads(paths.state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{paths.state_file} is not valid JSON ({exc}); restore it from backups/") from exc
    return _derived(migrate(data, str(paths.state_file))) if isinstance(data, dict) else {}


def read(paths: InstallPaths) -> Record | None:
    """The typed state, or None when nothing is recorded."""
    data = load(paths)
    return Record.from_dict(data) if data else None


def save(paths: InstallPaths, data: dict[str, Any] | Record) -> None:
    if isinstance(data, Record):
        data = data.to_dict()
    paths.prefix.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, **{k: v for k, v in data.items() if k != "schema"}}
    write_json(paths.state_file, data)


_updating = threading.Lock()  # steps that run side by side (pmcp.steps.Together) update it from two threads


def update(paths: InstallPaths, **changes: Any) -> dict[str, Any]:
    with _updating:
        data = load(paths)
        data.update(changes)
        save(paths, data)
    return data
