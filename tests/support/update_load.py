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
    requests: int = 0
    failed: int = 0
    longest_gap: float = 0.0
    longest_gap_at: str = ""
    seconds: float = 0.0
    tool: str = ""
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "longest_gap_s": round(self.longest_gap, 3),
            "longest_gap_at": self.longest_gap_at,
            "seconds": round(self.seconds, 1),
            "tool": self.tool,
            "errors": self.errors[:10],
        }


class ClientLoop:
    """Call one read tool (or tools/list) in a loop on a background thread until ``stop()``."""

    def __init__(self, url: str, token: str, ca_file: str, max_seconds: float = 300.0) -> None:
        self.url = url
        self.token = token
        self.ca_file = ca_file
        self.max_seconds = max_seconds
        self.stats = LoadStats()
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
        self._thread.join(60)
        return self.stats

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import httpx2
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        from pmcp.lifecycle.verify import _pick_read_tool

        ctx = ssl.create_default_context(cafile=self.ca_file)
        started = time.monotonic()
        last_ok = started
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            counted = False
            try:
                async with (
                    httpx2.AsyncClient(headers=headers, verify=ctx, timeout=httpx2.Timeout(30.0)) as http,
                    Client(streamable_http_client(self.url, http_client=http)) as client,
                ):
                    if not self.stats.tool:
                        self.stats.tool = _pick_read_tool((await client.list_tools()).tools) or "tools/list"
                    while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
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
            except Exception as exc:
                self.stats.requests += (
                    0 if counted else 1
                )  # a session that could not open is a failed request
                self.stats.failed += 1
                while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
                    exc = exc.exceptions[0]
                self.stats.errors.append(f"{_wall()} {type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(0.05)
        self.stats.seconds = time.monotonic() - started


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
