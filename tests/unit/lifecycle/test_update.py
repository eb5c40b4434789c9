"""The pure parts of `pmcp update`: which backup a rollback returns to, the drain's connection count."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from pmcp import backup as bk
from pmcp.lifecycle.switch import established
from pmcp.lifecycle.update import previous_version
from pmcp.paths import InstallPaths


def _install(tmp_path: Path, image: str) -> InstallPaths:
    p = InstallPaths.at(tmp_path / "opt")
    p.prefix.mkdir(exist_ok=True)
    p.state_file.write_text(json.dumps({"config": {"mcp_image": image}}))
    p.compose_file.write_text(f"# {image}\n")
    return p


def test_rollback_goes_to_the_newest_backup_of_another_version(tmp_path: Path) -> None:
    p = _install(tmp_path, "pmcp/mcp-server:0.1.0-aaa")
    old = bk.backup(p, "update aaa -> bbb")
    _install(tmp_path, "pmcp/mcp-server:0.1.0-bbb")
    bk.backup(p, "update --force bbb")  # same version: not a step back
    state = json.loads(p.state_file.read_text())
    assert previous_version(p, state).timestamp == old.timestamp


def test_rollback_with_one_version_only_takes_the_newest(tmp_path: Path) -> None:
    p = _install(tmp_path, "pmcp/mcp-server:0.1.0-aaa")
    bk.backup(p, "one")
    newest = bk.backup(p, "two")
    assert (
        previous_version(p, {"config": {"mcp_image": "pmcp/mcp-server:0.1.0-aaa"}}).timestamp
        == newest.timestamp
    )


def test_established_counts_connections_on_a_local_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert established(os.getpid(), port) == 0
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            with accepted:
                assert established(os.getpid(), port) == 1  # the accepted end; the client's is ephemeral
    assert established(10**9, port) == 0  # no such process: nothing to wait for


def test_a_killed_runs_compose_child_is_found(tmp_path: Path) -> None:
    from pmcp.lifecycle.update import compose_processes

    project = f"pmcp-unit-test-{os.getpid()}"  # two test runs on one machine must not see each other
    fake = tmp_path / "docker-compose"
    # `read` is a shell builtin: no child process that, between fork and exec, would carry this cmdline too
    fake.write_text("#!/bin/sh\nread line\n")
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "-p", project, "up", "-d"], stdin=subprocess.PIPE)
    try:
        for _ in range(100):
            if compose_processes(project):
                break
            time.sleep(0.02)
        assert compose_processes(project) == [proc.pid]
        assert compose_processes("another-project") == []
    finally:
        proc.kill()
        proc.wait()
    assert compose_processes(project) == []


class _Container:
    """What Switch.signal_drain reads of a docker container: its labels; records the signals sent."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.attrs = {"Config": {"Labels": labels}}
        self.sent: list[str] = []

    def kill(self, signal: str) -> None:
        self.sent.append(signal)


def test_only_an_image_that_declares_its_drain_signal_is_signalled(tmp_path: Path) -> None:
    from pmcp.lifecycle.switch import DRAIN_LABEL, Switch
    from pmcp.stack import render

    sw = Switch(InstallPaths.at(tmp_path), "proj", docker=None)
    older, newer = _Container({"io.pmcp.sha256": "x"}), _Container({DRAIN_LABEL: "SIGUSR1"})
    assert sw.signal_drain(older) is False and older.sent == []  # a server without a handler may die of it
    assert sw.signal_drain(newer) is True and newer.sent == ["SIGUSR1"]
    assert f'{DRAIN_LABEL}="SIGUSR1"' in render.template_text("Dockerfile")  # and the image declares it
