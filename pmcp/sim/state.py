"""The simulator's in-process state: the world (JSON-able), its lock, persistence and test controls.

Tests reach it as ``sim.state``: ``fail_next``, ``inject_latency``, ``inject_errors``, the
``requests`` log of ``(method, api_path)`` pairs (api path without ``/api2/json``, no query) and
the ``calls`` log of ``(method, api_path, parameter names)`` (query and body, as sent).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from pmcp.sim.access import hash_secret
from pmcp.sim.client import DEFAULT_ROOT_TOKEN, ROOT_TOKEN_ENV
from pmcp.sim.generate import generate
from pmcp.sim.tasks import TaskEngine

# The well-known development credential of the simulator (a dev tool, never a real host). Override
# with PMCP_SIM_ROOT_TOKEN (same format) for both `pmcp sim serve` and `pmcp sim pvesh`: DEFAULT_ROOT_TOKEN
# and ROOT_TOKEN_ENV live in pmcp.sim.client (pvesh's lean import).
# root@pam's password for session tickets (POST /access/ticket), equally a dev credential.
DEFAULT_ROOT_PASSWORD = "pmcp-sim-root"
ROOT_PASSWORD_ENV = "PMCP_SIM_ROOT_PASSWORD"


def parse_token(text: str) -> tuple[str, str, str]:
    """``root@pam!ID=SECRET`` -> (userid, tokenid, secret); raises ValueError with the fix."""
    full, sep, secret = text.strip().partition("=")
    userid, bang, tokenid = full.partition("!")
    if not (sep and bang and userid and tokenid and secret):
        raise ValueError(
            f"{ROOT_TOKEN_ENV} must look like USER@REALM!TOKENID=SECRET (e.g. {DEFAULT_ROOT_TOKEN})"
        )
    return userid, tokenid, secret


def root_token_from_env() -> str:
    return os.environ.get(ROOT_TOKEN_ENV) or DEFAULT_ROOT_TOKEN


class SimState:
    """Everything the simulated cluster knows, guarded by one lock."""

    def __init__(
        self,
        nodes: int = 3,
        guests: int = 50,
        seed: int = 1,
        task_seconds: float = 1.0,
        root_token: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        pve_version: int = 9,
    ) -> None:
        self.lock = threading.RLock()
        self._save_lock = threading.Lock()
        self.task_seconds = task_seconds
        self.state_file = Path(state_file) if state_file else None
        if self.state_file and self.state_file.exists():
            try:
                self.world: dict[str, Any] = json.loads(self.state_file.read_text())
            except ValueError as e:
                raise ValueError(
                    f"state file {self.state_file} is not valid JSON ({e}); delete it to start afresh"
                ) from e
        else:
            self.world = generate(nodes, guests, seed, pve_version)
            now = time.time()
            for g in self.world["guests"].values():
                g["started_at"] = now - g.pop("uptime") if g["status"] == "running" else None
            for n in self.world["nodes"].values():
                n["booted_at"] = now - n["uptime"]
        self.root_userid, self.root_tokenid, self.root_secret = parse_token(
            root_token or root_token_from_env()
        )
        self._install_root_token()
        self.root_password = os.environ.get(ROOT_PASSWORD_ENV) or DEFAULT_ROOT_PASSWORD
        self.tickets: dict[str, tuple[str, float, str]] = {}
        self.generation = 0
        self.perm_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._acl_index: dict[str, list[dict]] | None = None
        self.cache: dict[Any, Any] = {}
        self.fragments: dict[int, tuple[tuple, str]] = {}
        self.sums: dict[Any, tuple[Any, int]] = {}  # derived totals with the signature they hold for
        self.dirty = self.state_file is not None
        self.requests: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []  # (method, path, parameter names)
        self._failures: dict[str, deque[str]] = defaultdict(deque)
        self.latency = 0.0
        self._errors: deque[tuple[int, str | None, str | None, str | None]] = deque()
        self.engine = TaskEngine(self)

    def _install_root_token(self) -> None:
        user = self.world["users"].setdefault(
            self.root_userid, {"enable": 1, "expire": 0, "groups": [], "tokens": {}, "comment": ""}
        )
        tokens = user.setdefault("tokens", {})
        for tid in [t for t, v in tokens.items() if v.get("sim_root")]:
            del tokens[tid]
        tokens[self.root_tokenid] = {
            "privsep": 0,
            "expire": 0,
            "comment": "pmcp simulator root credential",
            "secret_sha256": hash_secret(self.root_secret),
            "sim_root": True,
        }

    @property
    def root_token(self) -> str:
        return f"{self.root_userid}!{self.root_tokenid}={self.root_secret}"

    # --- change tracking and persistence -------------------------------------------------------

    def changed(self, access: bool = False) -> None:
        """Record a change: bumps the generation (drops response caches) and, for identity/ACL
        changes, drops cached permissions."""
        self.generation += 1
        self.cache.clear()
        self.dirty = True
        if access:
            self.perm_cache.clear()
            self._acl_index = None

    def acl_index(self) -> dict[str, list[dict]]:
        if self._acl_index is None:
            index: dict[str, list[dict]] = defaultdict(list)
            for e in self.world["acls"]:
                index[e["path"]].append(e)
            self._acl_index = dict(index)
        return self._acl_index

    def save(self) -> None:
        """Write the world to ``--state FILE`` atomically, mode 0600 (it holds token hashes)."""
        if not self.state_file or not self.dirty:
            return
        with self._save_lock:
            with self.lock:
                if not self.dirty:
                    return
                text = json.dumps(self.world, separators=(",", ":"))
                self.dirty = False
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".sim-state.")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, self.state_file)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def tick(self) -> None:
        with self.lock:
            self.engine.tick()

    # --- test controls ------------------------------------------------------------------------

    def fail_next(self, task_type: str, message: str = "simulated failure") -> None:
        """Make the next task of ``task_type`` (e.g. ``qmstart``, ``vzdump``) end with ``message``.

        ``"WARNINGS: N"`` instead makes it succeed (effect applied) with N warnings."""
        with self.lock:
            self._failures[task_type].append(message)

    def take_failure(self, task_type: str) -> str | None:
        queue = self._failures.get(task_type)
        return queue.popleft() if queue else None

    def inject_latency(self, seconds: float) -> None:
        """Delay every API answer by ``seconds`` (0 turns it off)."""
        self.latency = max(0.0, float(seconds))

    def inject_errors(
        self,
        status: int = 500,
        count: int = 1,
        message: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` API calls with HTTP ``status`` (and ``message``), doing nothing;
        with ``method``/``path``, only the calls of that method to that API path (e.g. the token's
        creation, while other calls go through)."""
        with self.lock:
            self._errors.extend([(int(status), message, method, path)] * int(count))

    def take_error(self, method: str = "", path: str = "") -> tuple[int, str | None] | None:
        with self.lock:
            for entry in self._errors:
                if entry[2] in (None, method) and entry[3] in (None, path):
                    self._errors.remove(entry)
                    return entry[0], entry[1]
            return None

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()
            self.calls.clear()

    def reset_controls(self) -> None:
        with self.lock:
            self._failures.clear()
            self._errors.clear()
            self.latency = 0.0

    # --- convenience for tests -----------------------------------------------------------------

    def write_disk(self, vmid: int, key: str | None = None) -> None:
        """The guest writes to a disk (its boot disk, else ``key``): the volume's content changes, which a
        snapshot keeps and a rollback restores (``guest(vmid)["disk_data"]``: volume ID -> generation)."""
        from pmcp.sim.api.guests import BOOT_KEYS, volumes

        with self.lock:
            g = self.world["guests"][str(vmid)]
            vols = volumes(g["config"])
            name = key or next(k for k in BOOT_KEYS if k in vols)
            data = g.setdefault("disk_data", {})
            data[vols[name]] = data.get(vols[name], 0) + 1
            self.changed()

    def guest(self, vmid: int) -> dict[str, Any]:
        with self.lock:
            self.engine.tick()
            return self.world["guests"][str(vmid)]

    def task(self, upid: str) -> dict[str, Any]:
        with self.lock:
            self.engine.tick()
            return self.world["tasks"][upid]
