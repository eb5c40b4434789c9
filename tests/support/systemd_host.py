"""A Debian 12 host with systemd 252 as PID 1, in a container, for the systemd runtime's e2e test and bench.

Booted from ``images.systemd_image()`` with ``images.SYSTEMD_RUN_ARGS`` (never --privileged), the pmcp file
copied to /usr/local/sbin/pmcp (and any variants beside it), the HTTPS port published on a free loopback
port so a client on this machine can reach the server the way a remote client would.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import images
from tests.support.ports import Forwarder

PREFIX = "/opt/pmcp-demo"
HTTPS = 9443  # the demo's HTTPS port inside the container


@dataclass
class SystemdHost:
    name: str
    port: int  # HTTPS, published on 127.0.0.1
    project: str

    def sh(self, script: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["docker", "exec", self.name, "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{script}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def unit(self, slot: str) -> str:
        return f"{self.project}@{slot}.service"

    def main_pid(self, slot: str) -> str:
        return self.sh(f"systemctl show -p MainPID --value {self.unit(slot)}").stdout.strip()

    def live_socket_blocking_while(self, live: str, starting: str) -> list[str]:
        """Start ``starting`` beside ``live`` (as a hand-over does) and sample, until it is up, the O_NONBLOCK
        flag of the listening socket as the live server holds it (fd 3: one open file description with
        systemd's and the new instance's). Returns the samples that found it blocking (issue 13: a live
        server whose socket turned blocking sat in accept() until another client connected). Read as the
        server's own account: root in this container may not read its fdinfo (no CAP_SYS_PTRACE)."""
        fdinfo = f"/proc/{self.main_pid(live)}/fdinfo/3"
        script = (
            f"systemctl start --no-block {self.unit(starting)}; "
            f"for i in $(seq 100); do st=$(systemctl is-active {self.unit(starting)}); "
            f"echo \"$st $(runuser -u {self.project} -- awk '/^flags/{{print $2}}' {fdinfo})\"; "
            f"[ $st = active ] && break; sleep 0.05; done; systemctl stop {self.unit(starting)}"
        )
        samples = [ln.split() for ln in self.sh(script).stdout.splitlines()]
        assert samples and all(len(s) == 2 for s in samples), samples
        return [" ".join(s) for s in samples if not int(s[1], 8) & os.O_NONBLOCK]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/mcp"

    def token(self) -> str:
        return self.sh(f"cut -d: -f2 {PREFIX}/secrets/client-tokens").stdout.strip()

    def ca_file(self, dest: Path) -> str:
        """The server's root CA, exported as the admin is told to: ``client-config --ca-cert``."""
        self.sh(f"pmcp client-config --prefix {PREFIX} --ca-cert /root/pmcp-ca.pem")
        dest.write_text(self.sh("cat /root/pmcp-ca.pem").stdout)
        return str(dest)

    def set_server_env(self, env: Mapping[str, str]) -> None:
        """Add ``env`` to the options install recorded and apply it with a forced update (a hand-over),
        as the compose update tests give LOAD_TEST_LIMITS to their install."""
        script = (
            "import json,sys; p=sys.argv[1]; d=json.load(open(p)); "
            f"d['options']['extra_env'].update({json.dumps(dict(env))}); json.dump(d, open(p, 'w'))"
        )
        self.sh(
            f"python3 -c {shlex.quote(script)} {PREFIX}/state.json && pmcp update --force --prefix {PREFIX}"
        )


@contextmanager
def booted(files: Mapping[str, Path], airgapped: bool = False) -> Iterator[SystemdHost]:
    """A running container with systemd as PID 1 and ``files`` (path inside -> host file) copied in.

    ``airgapped``: on an ``--internal`` Docker network, with no route out of it (an air-gapped host); its
    HTTPS port is then reached through a loopback forwarder instead of a published port."""
    from pmcp.stack.compose import project_name

    image = images.systemd_image()
    name = f"pmcp-systemd-{uuid.uuid4().hex[:8]}"
    network = ["--network", name] if airgapped else ["-p", f"127.0.0.1::{HTTPS}"]
    forwarder: Forwarder | None = None
    if airgapped:
        subprocess.run(["docker", "network", "create", "--internal", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["docker", "run", "-d", "--name", name, *images.SYSTEMD_RUN_ARGS, *network, image],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        if airgapped:
            address = subprocess.run(
                ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            forwarder = Forwarder((address, HTTPS))
            port = forwarder.port
        else:
            out = subprocess.run(
                ["docker", "port", name, str(HTTPS)], capture_output=True, text=True, check=True
            )
            port = int(out.stdout.split(":")[-1].split()[0])
        host = SystemdHost(name, port, project_name(PREFIX))
        deadline = time.monotonic() + 60
        while host.sh("systemctl is-system-running", check=False).stdout.strip() not in (
            "running",
            "degraded",
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("systemd did not boot in the container")
            time.sleep(0.5)
        for inside, src in files.items():
            subprocess.run(["docker", "cp", str(src), f"{name}:{inside}"], check=True, capture_output=True)
        yield host
    finally:
        if forwarder:
            forwarder.close()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        if airgapped:
            subprocess.run(["docker", "network", "rm", name], capture_output=True)
