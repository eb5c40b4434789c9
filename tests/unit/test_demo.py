"""`pmcp demo` as a user runs it: a subprocess that serves until SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import anyio

from tests.unit.server.conftest import Served, connect


def test_demo_serves_proves_and_exits_cleanly(tmp_path):
    info_file = tmp_path / "info.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pmcp",
            "demo",
            "--port",
            "0",
            "--guests",
            "20",
            "--json-info",
            str(info_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        # Ctrl-C as at a terminal: a shell without job control starts background jobs with SIGINT
        # ignored, which the child would inherit (and Python keeps ignored) - then SIGINT cannot stop it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not info_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "demo did not start in 60 s"
            time.sleep(0.1)
        time.sleep(0.2)
        info = json.loads(info_file.read_text())
        assert oct(info_file.stat().st_mode & 0o777) == "0o600"
        served = Served(info["url"].removesuffix("/mcp"), info["url"], info["token"], None, None)

        async def go():
            async with connect(served) as client:
                return await client.call_tool("list_guests", {"limit": 5})

        result = anyio.run(go)
        assert not result.is_error and result.structured_content["total"] == 20
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (
        f'claude mcp add --transport http pmcp {info["url"]} --header "Authorization: Bearer {info["token"]}"'
        in out
    )
    assert "proof:" in out


def test_json_info_is_written_like_every_secret_file(tmp_path):
    """Issue 11, item 8: --json-info followed a symlink and kept an existing file's mode."""
    import stat

    from pmcp.demo import _write_private

    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    link = tmp_path / "info.json"
    link.symlink_to(victim)
    _write_private(link, '{"token": "t"}\n')
    assert victim.read_text() == "keep me\n"  # not written through the link
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600

    loose = tmp_path / "loose.json"
    loose.write_text("old")
    loose.chmod(0o644)
    _write_private(loose, '{"token": "t"}\n')
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600 and loose.read_text() == '{"token": "t"}\n'
