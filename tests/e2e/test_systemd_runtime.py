"""`--runtime systemd` under a real systemd as PID 1 (Debian 12's systemd 252 in a container, no mock of
systemctl): install (the demo, against the simulator), the hardening as the kernel applies it, verify (a
real MCP session over the server's own TLS), an update under a looping client with no failed call, a
rollback, the auto-update timer running an update, and an uninstall that leaves nothing of pmcp behind.

The host is air-gapped and has nothing but the pmcp file: no Docker, no registry, no route out (an
``--internal`` Docker network). The container runs with what systemd 252 needs here
(tests/support/images.SYSTEMD_RUN_ARGS), never --privileged. Its HTTPS port is reached through a
loopback forwarder: the client loop runs on this machine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.systemd_host import PREFIX, SystemdHost, booted

Host = SystemdHost


@pytest.fixture(scope="module")
def host(docker_engine: None, pmcp_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    from tests.support.update_load import make_variant

    variant = make_variant(pmcp_file, tmp_path_factory.mktemp("v2") / "pmcp-v2")
    v3 = make_variant(pmcp_file, tmp_path_factory.mktemp("v3") / "pmcp-v3", body="v3\n")
    files = {"/usr/local/sbin/pmcp": pmcp_file, "/usr/local/sbin/pmcp-v2": variant, "/root/pmcp-v3": v3}
    with booted(files, airgapped=True) as h:
        yield h


@pytest.fixture(scope="module")
def installed(host: Host) -> Host:
    # air-gapped, with nothing but the file: no name resolves, nothing outside answers, no Docker
    assert host.sh("getent hosts pypi.org deb.debian.org", check=False).returncode != 0
    probe = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)"
    assert host.sh(f'python3 -c "{probe}"', check=False).returncode != 0
    assert host.sh("command -v docker dockerd docker-compose", check=False).stdout.strip() == ""
    started = time.monotonic()
    res = host.sh(f"pmcp demo --stack --runtime systemd --prefix {PREFIX}")
    print(f"install took {time.monotonic() - started:.1f} s")
    assert "under systemd at https://localhost:9443/mcp" in res.stdout
    return host


def test_install_is_verified_and_idempotent(installed: Host) -> None:
    res = installed.sh(f"pmcp verify --prefix {PREFIX}")
    checks = (
        "server hardening",
        "tls",
        "auth required",
        "mcp session",
        "server reaches proxmox",
        "container ids",
    )
    for check in checks:
        assert re.search(rf"^{check}\s+pass", res.stdout, re.M), res.stdout
    again = installed.sh(f"pmcp demo --stack --runtime systemd --prefix {PREFIX}")
    assert "changed" not in again.stdout and "FAILED" not in again.stdout
    status = installed.sh(f"pmcp status --prefix {PREFIX}").stdout
    assert re.search(r"^runtime:\s+systemd, the pmcp file /usr/local/lib/pmcp/\S+/a/pmcp ", status, re.M), (
        status
    )
    assert "image" not in status, status  # no compose image line: nothing runs from an image
    refused = installed.sh(f"pmcp install --runtime compose --prefix {PREFIX} --yes", check=False)
    assert refused.returncode == 2 and "runs the server with systemd" in refused.stderr + refused.stdout


def test_the_hardening_takes_effect(installed: Host) -> None:
    """What the kernel applies to the running server, not what the unit file asks for."""
    pid = installed.main_pid("a")
    status = installed.sh(f"cat /proc/{pid}/status").stdout
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    assert fields["Uid"].split()[0] != "0"
    assert all(int(fields[c], 16) == 0 for c in ("CapEff", "CapPrm", "CapBnd", "CapAmb"))
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"  # SystemCallFilter: a filter is loaded
    mounts = {m[0]: m[1] for m in re.findall(r"^\S+ \S+ \S+ \S+ (\S+) (\S+)", installed.sh(
        f"cat /proc/{pid}/mountinfo").stdout, re.M)}  # fmt: skip
    assert mounts["/"].startswith("ro")  # ProtectSystem=strict
    assert mounts[f"{PREFIX}/audit"].startswith("rw") and mounts[f"{PREFIX}/sessions"].startswith("rw")
    assert mounts["/dev"].startswith("ro") and "noexec" in mounts["/dev"]  # PrivateDevices: its own /dev
    assert "/tmp" in mounts  # PrivateTmp
    cgroup = installed.sh(f"systemctl show -p ControlGroup --value {installed.unit('a')}").stdout.strip()
    limit = installed.sh(f"cat '/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes'").stdout.strip()
    assert limit == str(512 * 1024 * 1024)  # MemoryMax, in the unit's own memory cgroup


def test_update_under_load_fails_no_call_then_rollback(installed: Host, tmp_path: Path) -> None:
    from tests.support.update_load import LOAD_TEST_LIMITS, ClientLoop, running_vm

    # the loops would meet the per-token rate limits: off, applied by a forced update (a hand-over: a -> b)
    installed.set_server_env(LOAD_TEST_LIMITS)
    assert installed.sh(f"systemctl is-active {installed.unit('b')}").stdout.strip() == "active"
    ca = installed.ca_file(tmp_path / "ca.pem")
    token, url = installed.token(), installed.url
    # both client kinds, and on the handshake session calls that wait for a Proxmox task (in flight while
    # the old server hands over), as bench/bench_update.py runs them against the compose runtime
    long_call = ("guest_power", {"action": "reboot", "vmid": running_vm(url, token, ca), "wait_seconds": 60})
    loops = [
        ClientLoop(url, token, ca, kind="handshake", long_call=long_call).start(),
        ClientLoop(url, token, ca, kind="single-exchange").start(),
    ]
    try:
        time.sleep(1)
        started = time.monotonic()
        res = installed.sh(f"pmcp-v2 update --prefix {PREFIX}")
        print(f"update took {time.monotonic() - started:.1f} s")
        time.sleep(1)
    finally:
        stats = [loop.stop() for loop in loops]
    assert "updated to" in res.stdout, res.stdout
    for s in stats:
        print(f"update under load: {s.to_dict()}")
        assert s.failed == 0 and s.sessions == 1 and s.requests > 10, s.to_dict()
    assert stats[0].long_calls >= 1 and stats[0].long_failed == 0 and stats[0].long_without_progress == 0
    assert installed.sh(f"systemctl is-active {installed.unit('a')}").stdout.strip() == "active"
    assert (
        installed.sh(f"systemctl is-active {installed.unit('b')}", check=False).stdout.strip() == "inactive"
    )
    assert installed.sh(f"pmcp-v2 update --check --prefix {PREFIX}", check=False).returncode == 3
    # starting an instance must leave the live one's socket non-blocking (NonBlocking=yes; issue 13)
    assert installed.live_socket_blocking_while("a", starting="b") == []

    back = installed.sh(f"pmcp rollback --prefix {PREFIX}")
    assert "rolled back" in back.stdout
    assert installed.sh(f"systemctl is-active {installed.unit('b')}").stdout.strip() == "active"
    # rolled back from: cron's update does not apply it again, --force does
    assert installed.sh(f"pmcp-v2 update --check --prefix {PREFIX}", check=False).returncode == 3
    installed.sh(f"pmcp verify --prefix {PREFIX}")


def test_auto_update_timer_updates_to_the_file_the_admin_copied(installed: Host) -> None:
    """`--auto-update daily`: a systemd timer whose service runs `pmcp update --quiet` unattended; a new file
    copied over /usr/local/sbin/pmcp is what the next run updates the server to."""
    # `pmcp demo` has no --auto-update: record it as `pmcp install --auto-update daily` would, and the
    # re-run keeps (and applies) the recorded schedule, as install does for an admin's re-run
    script = "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['options']['auto_update']='daily'; " + (
        "json.dump(d, open(p, 'w'))"
    )
    installed.sh(f'python3 -c "{script}" {PREFIX}/state.json')
    installed.sh(f"pmcp demo --stack --runtime systemd --prefix {PREFIX}")
    assert installed.sh("systemctl is-enabled pmcp-update.timer").stdout.strip() == "enabled"
    assert installed.sh("systemctl is-active pmcp-update.timer").stdout.strip() == "active"
    live = installed.sh(f"systemctl is-active {installed.unit('a')} {installed.unit('b')}", check=False)
    slot = "a" if live.stdout.split()[0] == "active" else "b"

    installed.sh("install -o root -g root -m 0755 /root/pmcp-v3 /usr/local/sbin/pmcp")  # a new release
    run = installed.sh("systemctl start pmcp-update.service", check=False, timeout=600)  # oneshot: waits
    result = installed.sh("systemctl show -p Result --value pmcp-update.service").stdout.strip()
    journal = installed.sh("journalctl -u pmcp-update.service -o cat --no-pager").stdout
    assert run.returncode == 0 and result == "success", journal
    other = "b" if slot == "a" else "a"
    assert installed.sh(f"systemctl is-active {installed.unit(other)}").stdout.strip() == "active"
    digest = installed.sh("sha256sum /root/pmcp-v3").stdout.split()[0]
    assert f"sha256 {digest[:12]}" in installed.sh(f"pmcp status --prefix {PREFIX}").stdout
    installed.sh(f"pmcp verify --prefix {PREFIX}")


def test_uninstall_leaves_nothing_behind(installed: Host) -> None:
    installed.sh(f"pmcp demo --stack --down --prefix {PREFIX}")
    left = installed.sh(
        f"ls /etc/systemd/system/{installed.project}* /etc/systemd/system/pmcp-update.* /usr/local/lib/pmcp "
        f"{PREFIX} 2>/dev/null; "
        f"getent passwd {installed.project}; systemctl list-units --all --no-legend '{installed.project}*'",
        check=False,
    )
    assert left.stdout.strip() == "", left.stdout
    assert (
        installed.sh(f"systemctl is-active {installed.project}.socket", check=False).stdout.strip()
        != "active"
    )
