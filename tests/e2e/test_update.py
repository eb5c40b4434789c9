"""`pmcp update` / `pmcp rollback` against a real demo stack (real engine, compose, Caddy, SDK client).

A "new version" is a copy of dist/pmcp with one more member in the zip: a different file, so a
different sha256, so a different image tag, exactly what copying a newer pmcp onto a host does. A
"broken version" replaces ``__main__.py``: its container exits at once, so its health check fails.
The CLI runs from source with ``PMCP_SELF`` naming the file the image is built from.

The tests run in order on one stack (each leaves it serving): check codes, update under load, broken
update, kill -9 and recovery, the lock, rollback with rotation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmcp.paths import InstallPaths
from tests.e2e.conftest import ROOT, DemoStack, pmcp_cli
from tests.support.update_load import LOAD_TEST_LIMITS, make_variant

pytestmark = [pytest.mark.docker, pytest.mark.slow]
STACK_EXTRA_ENV = LOAD_TEST_LIMITS  # the client loop calls as fast as it can: no per-token rate limits
UPSTREAM_CADDY = True  # the Caddy line production runs (conftest.demo_stack says why not Debian's 2.6.2)

GRACE = "1"


@pytest.fixture(scope="module")
def variants(pmcp_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("variants")
    # `--version` still works (the image build runs it to unpack the file), the server does not: the
    # candidate check is what must catch it.
    broken = (
        "import sys\n"
        "if '--version' in sys.argv:\n    print('pmcp, version broken')\n    sys.exit(0)\n"
        "sys.stderr.write('this pmcp is broken on purpose (test)\\n')\nsys.exit(3)\n"
    )
    return {
        "v1": pmcp_file,
        "v2": make_variant(pmcp_file, d / "pmcp-v2", body="v2\n"),
        "v3": make_variant(pmcp_file, d / "pmcp-v3", body="v3\n"),
        "broken": make_variant(pmcp_file, d / "pmcp-broken", "__main__.py", broken),
    }


def _tag(path: Path) -> str:
    from pmcp import __version__
    from pmcp.stack import images, render

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    build = images.build_id(digest, images.python_base(), render.template_text("Dockerfile"))
    return images.mcp_image(__version__, build)


@pytest.fixture(scope="module")
def inst(demo_stack: DemoStack, variants: dict[str, Path]) -> Iterator[DemoStack]:
    if not demo_stack.result.ok:
        failed = [s for s in demo_stack.steps if s.status == "failed"]
        pytest.fail(f"the demo stack did not install: {[(s.name, s.error) for s in failed]}")
    yield demo_stack
    from pmcp.lifecycle.switch import PROJECT_LABEL
    from pmcp.stack.compose import project_name

    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project_name(demo_stack.prefix)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    for cid in out.stdout.split():
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
    for name in ("v2", "v3", "broken"):
        subprocess.run(["docker", "rmi", "-f", _tag(variants[name])], capture_output=True, check=False)


def update(
    inst: DemoStack, self_file: Path, *args: str, timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    return pmcp_cli(
        "update", "--prefix", str(inst.prefix), "--grace", GRACE, *args,
        env={"PMCP_SELF": str(self_file)}, timeout=timeout,
    )  # fmt: skip


def serving(inst: DemoStack) -> str:
    """The image the compose server runs, after proving a real MCP session works through Caddy."""
    from pmcp.lifecycle import verify
    from pmcp.lifecycle.switch import Switch
    from pmcp.stack import engine
    from pmcp.stack.compose import project_name

    row = verify.check_mcp(verify.load_target(inst.prefix))
    assert row.result == verify.PASS, row.detail
    sw = Switch(_paths(inst), project_name(inst.prefix), engine.client())
    server = sw.server()
    assert server is not None and sw.healthy(server)
    assert sw.helper("standby") is None and sw.helper("candidate") is None, "a helper container was left"
    return server.image.tags[0] if server.image.tags else server.image.id


def _paths(inst: DemoStack) -> InstallPaths:

    return InstallPaths.at(inst.prefix)


def _data_digest(inst: DemoStack) -> dict[str, str]:
    """What must survive every update and rollback: .env, secrets, Caddy's CA."""
    p = _paths(inst)
    files = [p.env_file, p.proxmox_token_secret, p.client_tokens, p.caddy_root_ca]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}


def test_check_exit_codes(inst: DemoStack, variants: dict[str, Path], tmp_path: Path) -> None:
    current = update(inst, variants["v1"], "--check")
    assert current.returncode == 3, current.stdout + current.stderr
    assert "current" in current.stdout
    due = update(inst, variants["v2"], "--check")
    assert due.returncode == 0, due.stdout + due.stderr
    assert "update due" in due.stdout and _tag(variants["v2"]) in due.stdout
    missing = pmcp_cli("update", "--check", "--prefix", str(tmp_path / "nothing-here"))
    assert missing.returncode not in (0, 3)
    assert "pmcp install" in missing.stderr


class RefusedLoop:
    """Change calls the read-only mode refuses, in a loop: each is sealed into the audit log by whichever
    server answers it (old, standby, new), so during an update several processes append to one chain."""

    def __init__(self, url: str, token: str, ca_file: str) -> None:
        import threading

        self.url, self.token, self.ca_file = url, token, ca_file
        self.refused = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio
        import ssl

        async def go() -> None:
            import httpx2
            from mcp.client import Client
            from mcp.client.streamable_http import streamable_http_client

            headers = {"Authorization": f"Bearer {self.token}"}
            verify = ssl.create_default_context(cafile=self.ca_file)
            while not self.stop_event.is_set():
                try:
                    async with (
                        httpx2.AsyncClient(headers=headers, verify=verify, timeout=60) as http,
                        Client(streamable_http_client(self.url, http_client=http)) as client,
                    ):
                        while not self.stop_event.is_set():
                            result = await client.call_tool("guest_power", {"action": "start", "vmid": 100})
                            self.refused += bool(result.is_error)
                            await asyncio.sleep(0.02)
                except Exception:
                    await asyncio.sleep(0.05)

        asyncio.run(go())

    def __enter__(self) -> RefusedLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(60)


def test_update_under_load_fails_no_request(inst: DemoStack, variants: dict[str, Path]) -> None:
    from pmcp import authtokens
    from tests.support.update_load import ClientLoop

    p = _paths(inst)
    before = _data_digest(inst)
    audit_before = p.audit_log.read_bytes() if p.audit_log.exists() else b""
    token = authtokens.load(p.client_tokens)["default"]
    url = f"https://localhost:{inst.opts.https_port}/mcp"
    loop = ClientLoop(url, token, str(p.caddy_root_ca)).start()
    try:
        with RefusedLoop(url, token, str(p.caddy_root_ca)) as refusals:
            res = update(inst, variants["v2"])
    finally:
        stats = loop.stop()
    # one HMAC chain across the servers that took turns (each write holds the log's flock)
    audit = pmcp_cli("audit", "verify", "--prefix", str(inst.prefix), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert refusals.refused > 10 and json.loads(audit.stdout)["data"]["records"] >= refusals.refused
    print("update under load:", json.dumps(stats.to_dict()))
    assert res.returncode == 0, res.stdout + res.stderr
    assert stats.failed == 0, stats.errors
    assert stats.requests >= 20
    assert serving(inst) == _tag(variants["v2"])
    assert _data_digest(inst) == before
    assert p.audit_log.read_bytes().startswith(audit_before)
    again = update(inst, variants["v2"], "--quiet")
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    assert update(inst, variants["v2"], "--check").returncode == 3


def test_broken_version_leaves_the_old_one_serving(inst: DemoStack, variants: dict[str, Path]) -> None:
    res = update(inst, variants["broken"], "--quiet")
    assert res.returncode == 1
    assert res.stdout == ""
    # refused before the switch: at the image build (which runs the file once since the image unpacks it
    # at build time) or, for a file that starts but does not serve, at the candidate
    assert ("candidate" in res.stderr or "building image" in res.stderr) and "broken on purpose" in res.stderr
    assert "transcript:" in res.stderr
    transcript = Path(res.stderr.split("transcript:")[1].split()[0])
    assert "broken on purpose" in transcript.read_text()
    assert serving(inst) == _tag(variants["v2"])
    assert update(inst, variants["v2"], "--check").returncode == 3  # configuration put back


def test_kill_9_in_the_middle_then_the_next_run_recovers(inst: DemoStack, variants: dict[str, Path]) -> None:
    phase_file = _paths(inst).prefix / ".pmcp-update.json"
    env = {**os.environ, "PMCP_SELF": str(variants["v3"])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmcp", "update", "--prefix", str(inst.prefix), "--grace", GRACE],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(phase_file.read_text()).get("phase") == "new-server":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the update finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    res = update(inst, variants["v3"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^recover +changed$", res.stdout, re.M), res.stdout  # one line per step, as install
    assert not phase_file.exists()
    assert serving(inst) == _tag(variants["v3"])


def test_a_second_run_waits_then_exits_clearly(inst: DemoStack, variants: dict[str, Path]) -> None:
    hold = (
        "import sys, time\n"
        "from pmcp.lifecycle.lock import HostLock\n"
        "with HostLock(command='pmcp update'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        res = update(inst, variants["v2"], "--lock-timeout", "1")
        assert time.monotonic() - started < 30
        assert res.returncode == 4  # the host is busy: README, exit codes
        assert f"another pmcp run is changing this host: pid {holder.pid} (pmcp update, since" in res.stderr
    finally:
        holder.kill()
        holder.wait()
    assert serving(inst) == _tag(variants["v3"])


def test_rollback_returns_to_the_previous_version_and_rotates(
    inst: DemoStack, variants: dict[str, Path]
) -> None:
    from pmcp import backup

    before = _data_digest(inst)
    res = pmcp_cli("rollback", "--prefix", str(inst.prefix), "--grace", GRACE, "--keep", "2", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] and out["command"] == "rollback" and out["data"]["to_image"] == _tag(variants["v2"])
    assert serving(inst) == _tag(variants["v2"])
    assert _data_digest(inst) == before
    kept = backup.list_backups(_paths(inst))
    assert len(kept) == 2
    assert all(b.path.stat().st_mode & 0o777 == 0o700 for b in kept)
    check = update(inst, variants["v3"], "--check")
    assert check.returncode == 3 and "rolled back from" in check.stdout
