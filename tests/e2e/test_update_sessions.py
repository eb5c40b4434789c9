"""The clients people use never notice `pmcp update` or `pmcp rollback` (real engine, compose, Caddy).

Claude Code, Cursor and mcp-remote hold ONE handshake-era (2025-11) session for hours. Here the
official SDK client does the same (mode "legacy": initialize, then Mcp-Session-Id on every request):
a read tool in a loop, and beside it, on the same session, calls that wait for a Proxmox task
(guest_power reboot, 3 s in the simulator) with progress notifications — so calls are in flight while the
old server and the standby are drained. A 2026-07 single-exchange client loops at the same time.
Both must see 0 failed calls and no gap over 0.5 s, and the handshake client must never have to
re-initialize. Before sessions.py: 81 of 328 handshake calls failed across one update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import DemoStack, demo_opts, pmcp_cli, project_containers
from tests.support.update_load import LOAD_TEST_LIMITS, running_vm

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# A guard against a switch that stalls (the old Caddy dial path stalled 1-2 s), not the target: the 0.5 s
# target is measured in bench_update (BENCHMARKS.md), because a timed assertion on a shared 2-core machine
# fails on noise (0.74 s seen here once while the suite ran, 0.17-0.41 s otherwise).
MAX_GAP = 1.0
TASK_SECONDS = 3.0


@pytest.fixture(scope="module")
def upstream_caddy(stack_env: dict[str, str]) -> Iterator[str]:
    """Production's Caddy line (upstream build), for this module's installs, updates and rollbacks.

    Measured: Debian 12's caddy 2.6.2 (the suite's default test image) answers about 1 in 300 POSTs of a
    handshake-era session that holds its GET stream with 200 and an empty SSE body, update or not
    (a raw client, sequential POSTs, no pmcp update involved); upstream 2.11.7 answered all 1,640.
    Production images use caddy:2.10, so the test runs the upstream build.
    """
    from tests.support import images

    saved = os.environ.get("PMCP_CADDY_IMAGE")
    os.environ["PMCP_CADDY_IMAGE"] = image = images.upstream_caddy_image()
    try:
        yield image
    finally:
        os.environ["PMCP_CADDY_IMAGE"] = saved or ""


@pytest.fixture(scope="module")
def stack(upstream_caddy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    """A demo stack in operator mode (so a call can wait for a task) whose tasks take 3 s."""
    from pmcp.lifecycle.install import install

    prefix = tmp_path_factory.mktemp("stack") / "inst"
    opts = demo_opts(prefix, mode="operator")
    opts.sim.task_seconds = TASK_SECONDS
    opts.extra_env = dict(LOAD_TEST_LIMITS)  # the loops call as fast as they can: no per-token rate limits
    steps: list[Any] = []
    result = install(opts, report=steps.append, kind="demo")
    try:
        if not result.ok:
            failed = [(s.name, s.error) for s in steps if s.status == "failed"]
            pytest.fail(f"the demo stack did not install: {failed}")
        yield DemoStack(prefix, opts, result, steps)
    finally:
        from pmcp.lifecycle.switch import PROJECT_LABEL
        from pmcp.lifecycle.uninstall import uninstall
        from pmcp.stack.compose import project_name

        with contextlib.suppress(Exception):
            uninstall(prefix, purge=True)
        helpers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project_name(prefix)}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        for cid in [*project_containers(prefix), *helpers]:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def _target(stack: DemoStack) -> tuple[str, str, str]:
    from pmcp import authtokens
    from pmcp.paths import InstallPaths

    p = InstallPaths.at(stack.prefix)
    token = authtokens.load(p.client_tokens)["default"]
    return f"https://localhost:{stack.opts.https_port}/mcp", token, str(p.caddy_root_ca)


def test_the_person_approves_an_undo_through_caddy(stack: DemoStack) -> None:
    """Issue 15 through the production stack: a tag change takes a safety snapshot; undo_last_change is
    asked of the person over Caddy in both eras (2025-11: elicitation on the call's SSE stream, declined:
    nothing happens; 2026-07: input_required, accepted: the tags are back)."""
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp_types import ElicitResult

    url, token, ca = _target(stack)
    asked: list[str] = []

    def person(action: str) -> Any:
        async def answer(context: Any, params: Any) -> ElicitResult:
            asked.append(params.message)
            return ElicitResult(action=action, content={} if action == "accept" else None)

        return answer

    async def call(era: str, action: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=ca)
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, verify=ctx, timeout=60) as http,
            Client(
                streamable_http_client(url, http_client=http), mode=era, elicitation_callback=person(action)
            ) as client,
        ):
            res = await client.call_tool(name, args)
            assert not res.is_error, res.content[0].text
            return res.structured_content or {}

    async def go() -> tuple[dict[str, Any], ...]:
        listed = await call("auto", "accept", "list_guests", {"status": "stopped", "type": "qemu"})
        vmid = next(int(g["vmid"]) for g in listed["guests"] if "pmcp-protected" not in str(g.get("tags")))
        before = (await call("auto", "accept", "guest_info", {"vmid": vmid, "show": "config"}))["config"].get(
            "tags"
        )
        tagged = await call("legacy", "accept", "set_guest_config", {"vmid": vmid, "tags": ["e2e-undo"]})
        declined = await call("legacy", "decline", "undo_last_change", {"vmid": vmid, "confirm": True})
        undone = await call("auto", "accept", "undo_last_change", {"vmid": vmid, "wait_seconds": 60})
        after = (await call("auto", "accept", "guest_info", {"vmid": vmid, "show": "config"}))["config"].get(
            "tags"
        )
        return tagged, declined, undone, {"before": before, "after": after}

    tagged, declined, undone, tags = asyncio.run(go())
    assert tagged["safety_snapshot"].startswith("pmcp-auto-")
    assert declined["outcome"] == "declined" and undone["outcome"] == "ok", (declined, undone)
    assert len(asked) == 2 and all(tagged["safety_snapshot"] in m for m in asked)
    assert tags["after"] == tags["before"]


def test_steady_state_without_update(stack: DemoStack) -> None:
    """The control: both client kinds through Caddy with nothing changing."""
    import time

    from tests.support.update_load import ClientLoop

    url, token, ca = _target(stack)
    vmid = running_vm(url, token, ca)
    long_call = ("guest_power", {"action": "reboot", "vmid": vmid, "wait_seconds": 60})
    handshake = ClientLoop(url, token, ca, kind="handshake", long_call=long_call).start()
    single = ClientLoop(url, token, ca).start()
    time.sleep(15)
    hs, se = handshake.stop(), single.stop()
    print("steady handshake:", json.dumps(hs.to_dict()))
    print("steady single-exchange:", json.dumps(se.to_dict()))
    assert hs.failed == 0 and hs.sessions == 1 and hs.long_failed == 0, hs.errors
    assert se.failed == 0, se.errors


@pytest.mark.parametrize("command", ["update", "rollback"])
def test_sessions_and_calls_in_flight_survive(stack: DemoStack, command: str) -> None:
    from tests.support.update_load import ClientLoop

    url, token, ca = _target(stack)
    vmid = running_vm(url, token, ca)
    long_call = ("guest_power", {"action": "reboot", "vmid": vmid, "wait_seconds": 60})
    handshake = ClientLoop(url, token, ca, kind="handshake", long_call=long_call).start()
    single = ClientLoop(url, token, ca).start()
    try:
        argv = [command, "--prefix", str(stack.prefix), "--grace", "1", "--json"]
        res = pmcp_cli(*argv, *(["--force"] if command == "update" else []), timeout=400)
    finally:
        hs, se = handshake.stop(), single.stop()
    if res.stdout.strip().startswith("{"):
        for step in json.loads(res.stdout)["steps"]:
            print(f"{command} step:", step["name"], step.get("seconds"), step.get("notes"))
    print(f"{command} handshake:", json.dumps(hs.to_dict()))
    print(f"{command} single-exchange:", json.dumps(se.to_dict()))
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    switch = next(s for s in out["steps"] if s["name"] == "switch")
    assert any("sessions handed over" in n for n in switch["notes"]), switch
    assert hs.failed == 0, hs.errors
    assert hs.sessions == 1, f"the handshake client had to re-initialize: {hs.errors}"
    assert hs.long_calls >= 3 and hs.long_failed == 0, hs.errors
    assert hs.long_without_progress == 0
    assert se.failed == 0, se.errors
    assert hs.requests >= 20 and se.requests >= 20
    assert hs.longest_gap <= MAX_GAP, hs.to_dict()
    assert se.longest_gap <= MAX_GAP, se.to_dict()
