"""A client that makes MCP calls in a loop through Caddy while an update runs: the zero-downtime proof.

Used by tests/e2e/test_update.py and bench/bench_update.py. It uses the real SDK client, as an AI client
would, with TLS verified against Caddy's root CA, and counts every request: made, failed, and the
longest gap between two answered requests (what a user would feel as a stall).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LoadStats:
    kind: str = "single-exchange"
    requests: int = 0
    failed: int = 0
    longest_gap: float = 0.0
    longest_gap_at: str = ""
    seconds: float = 0.0
    tool: str = ""
    sessions: int = 0  # handshake mode: sessions opened (1 = the client never had to re-initialize)
    long_calls: int = 0  # calls that wait for a Proxmox task, sent beside the loop on the same session
    long_failed: int = 0
    long_without_progress: int = 0
    long_longest: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "requests": self.requests,
            "failed": self.failed,
            "longest_gap_s": round(self.longest_gap, 3),
            "longest_gap_at": self.longest_gap_at,
            "seconds": round(self.seconds, 1),
            "tool": self.tool,
            "sessions": self.sessions,
            "long_calls": self.long_calls,
            "long_failed": self.long_failed,
            "long_without_progress": self.long_without_progress,
            "long_longest_s": round(self.long_longest, 2),
            "errors": self.errors[:10],
        }


KINDS = {"single-exchange": "auto", "handshake": "legacy"}  # LoadStats.kind -> the SDK client's mode

# The per-token rate limits (pmcp.server.limits) would answer a load loop 429 within seconds: a stack
# or server that one of these loops measures turns them off (their own unit tests keep them honest).
LOAD_TEST_LIMITS = {
    "PMCP_RATE_INITIALIZE": "0",
    "PMCP_RATE_TOOL_CALLS": "0",
    "PMCP_RATE_CHANGES": "0",
    "PMCP_RATE_REQUESTS": "0",
}


class ClientLoop:
    """Call one read tool (or tools/list) in a loop on a background thread until ``stop()``.

    ``kind="single-exchange"``: the SDK client's default, the 2026-07 era (no session). ``kind=
    "handshake"``: the 2025-11 era as Claude Code, Cursor and mcp-remote speak it: ONE ``initialize``,
    then ``Mcp-Session-Id`` on every request; a failure makes it re-initialize (counted in
    ``sessions``). ``long_call=(tool, arguments)`` sends that call again and again on the same
    session, beside the loop, each waiting for a Proxmox task with progress notifications.
    """

    def __init__(
        self,
        url: str,
        token: str,
        ca_file: str,
        max_seconds: float = 300.0,
        kind: str = "single-exchange",
        long_call: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.ca_file = ca_file
        self.max_seconds = max_seconds
        self.mode = KINDS[kind]
        self.long_call = long_call
        self.stats = LoadStats(kind=kind)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mcp-client-loop", daemon=True)

    def start(self, wait: float = 60.0) -> ClientLoop:
        self._thread.start()
        if not self._ready.wait(wait):
            self._stop.set()
            raise RuntimeError(
                f"the client loop did not get a first answer in {wait:g}s: {self.stats.errors}"
            )
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        self._thread.join(120)
        return self.stats

    def _run(self) -> None:
        import logging

        class Why(logging.Handler):  # the SDK logs why a stream ended only at debug level
            def emit(inner, record: logging.LogRecord) -> None:
                if record.exc_info and "ended" in record.getMessage():
                    exc = record.exc_info[1]
                    self.stats.errors.append(f"{_wall()} (why: {type(exc).__name__}: {exc})"[:300])

        sdk = logging.getLogger("mcp.client.streamable_http")
        handler, level = Why(logging.DEBUG), sdk.level
        sdk.addHandler(handler)
        sdk.setLevel(logging.DEBUG)
        try:
            asyncio.run(self._main())
        finally:
            sdk.removeHandler(handler)
            sdk.setLevel(level)

    def _running(self, started: float) -> bool:
        return not self._stop.is_set() and time.monotonic() - started < self.max_seconds

    def _error(self, exc: BaseException, what: str = "") -> None:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        self.stats.errors.append(f"{_wall()} {what}{type(exc).__name__}: {exc}"[:300])

    async def _main(self) -> None:
        import httpx2
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        from pmcp.lifecycle.verify import _pick_read_tool

        ctx = ssl.create_default_context(cafile=self.ca_file)
        started = time.monotonic()
        last_ok = started
        headers = {"Authorization": f"Bearer {self.token}"}
        while self._running(started):
            counted = False
            try:
                async with (
                    httpx2.AsyncClient(headers=headers, verify=ctx, timeout=httpx2.Timeout(60.0)) as http,
                    Client(streamable_http_client(self.url, http_client=http), mode=self.mode) as client,
                    asyncio.TaskGroup() as tg,
                ):
                    self.stats.sessions += 1
                    if not self.stats.tool:
                        self.stats.tool = _pick_read_tool((await client.list_tools()).tools) or "tools/list"
                    if self.long_call:
                        long_task = tg.create_task(self._long_calls(client, started))
                    while self._running(started):
                        self.stats.requests += 1
                        counted = True
                        if self.stats.tool == "tools/list":
                            await client.list_tools()
                        else:
                            result = await client.call_tool(self.stats.tool, {})
                            if getattr(result, "is_error", False) or getattr(result, "isError", False):
                                raise RuntimeError(f"tool error: {str(result.content)[:200]}")
                        now = time.monotonic()
                        if now - last_ok > self.stats.longest_gap:
                            self.stats.longest_gap, self.stats.longest_gap_at = now - last_ok, _wall()
                        last_ok = now
                        counted = False
                        self._ready.set()
                    if self.long_call:
                        await long_task  # the last long call finishes before the session ends
            except Exception as exc:
                self.stats.requests += (
                    0 if counted else 1
                )  # a session that could not open is a failed request
                self.stats.failed += 1
                self._error(exc)
                await asyncio.sleep(0.05)
        self.stats.seconds = time.monotonic() - started

    async def _long_calls(self, client: Any, started: float) -> None:
        """The long call again and again while the loop runs; each must finish with progress."""
        assert self.long_call is not None
        name, arguments = self.long_call
        while self._running(started):
            progress: list[float] = []

            async def on_progress(
                done: float, total: float | None, message: str | None, seen: list[float] = progress
            ) -> None:
                seen.append(done)

            self.stats.long_calls += 1
            t0 = time.monotonic()
            try:
                result = await client.call_tool(name, arguments, progress_callback=on_progress)
                data = getattr(result, "structured_content", None) or {}
                if getattr(result, "is_error", False) or data.get("outcome") != "ok":
                    raise RuntimeError(f"{name}: {str(data or result.content)[:200]}")
            except Exception as exc:
                self.stats.long_failed += 1
                self._error(exc, f"{name}: ")
                await asyncio.sleep(0.05)
                continue
            self.stats.long_longest = max(self.stats.long_longest, time.monotonic() - t0)
            if not progress:
                self.stats.long_without_progress += 1


def running_vm(url: str, token: str, ca: str) -> int:
    """A running VM the agent may reboot (not protected), for the long calls (bench_update, systemd e2e)."""
    import asyncio
    import ssl

    async def go() -> int:
        import httpx2
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        ctx = ssl.create_default_context(cafile=ca)
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, verify=ctx, timeout=30) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            res = await client.call_tool("list_guests", {"status": "running", "type": "qemu"})
            guests = (res.structured_content or {}).get("guests") or []
            free = [g for g in guests if "pmcp-protected" not in str(g.get("tags", ""))]
            assert free, f"no running VM to reboot in {res.structured_content}"
            return int(free[0]["vmid"])

    return asyncio.run(go())


def _wall() -> str:
    """UTC wall-clock time, to line an event up with the update's transcript and the engine's events."""
    return time.strftime("%H:%M:%S", time.gmtime()) + f"{time.time() % 1:.2f}"[1:]


def make_variant(src: Path, dst: Path, member: str = "pmcp-test-variant.txt", body: str = "v2\n") -> Path:
    """A copy of the pmcp zipapp with one more member: another file, so another image tag (a "new
    version"). ``member="__main__.py"`` with a body that exits makes a broken version."""
    import warnings
    import zipfile

    dst.write_bytes(src.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a second __main__.py is a duplicate name, on purpose
        with zipfile.ZipFile(dst, "a") as z:
            z.writestr(member, body)
    dst.chmod(0o755)
    return dst
