# ruff: noqa: E501, F811  (a table reads best one case per line; `dist` is test_dist's fixture)
"""Every bad input, through the built file: a non-zero exit, the message and its fix on stderr, no
traceback, and under --json exactly one JSON object with ok: false and the error (README: exit codes).

The table is the issue's list (#12) and the cases like them. Every `install` case carries --dry-run and
a pvesh that always fails: if a check ever goes missing, the run stops at preflight with exit 4 (and the
test fails on the exit code) instead of touching this machine.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_dist import dist  # noqa: F401  (the fixture: dist/pmcp, rebuilt when stale)

pytestmark = pytest.mark.dist

USAGE, FAILED, NOT_READY = 2, 1, 4
SAFE_ENV = {"PMCP_PVESH": "false", "PMCP_PVEVERSION": "false"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    (d / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (d / "plain.txt").write_text("not a certificate\n")
    return d


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# (id, argv, words of the message, words of the fix, exit code). {files}, {busy} are filled in.
CASES = [
    ("allow-from garbage", ["install", "--allow-from", "garbage"], "not an IPv4 address", "192.0.2.0/24", USAGE),
    ("allow-from /33", ["install", "--allow-from", "10.0.0.0/33"], "prefix length must be 0 to 32", "/24", USAGE),
    ("allow-from ::/0", ["install", "--allow-from", "::/0"], "IPv4 only", "IPv4 network", USAGE),
    ("tls-cert without key", ["install", "--tls-cert", "{files}/cert.pem"], "--tls-cert needs --tls-key", "give both", USAGE),
    ("tls files not PEM", ["install", "--tls-cert", "{files}/plain.txt", "--tls-key", "{files}/plain.txt"],
     "holds no PEM certificate", "PEM file", USAGE),
    ("https-port -1", ["install", "--https-port", "-1"], "-1 is not a TCP port", "1 to 65535", USAGE),
    ("https-port 70000", ["install", "--https-port", "70000"], "70000 is not a TCP port", "1 to 65535", USAGE),
    ("https-port abc", ["install", "--https-port", "abc"], "'abc' is not a port", "pmcp install --help", USAGE),
    ("http = https port", ["install", "--https-port", "8443", "--http-port", "8443"], "are both 8443",
     "another port", USAGE),
    ("server = https port", ["install", "--server-port", "443"], "are both 443", "another port", USAGE),
    ("domain with a space", ["install", "--domain", "pve example.com"], "not a DNS name", "pve.example.com", USAGE),
    ("protect not a VMID", ["install", "--protect", "100,abc"], "'abc' is not a VMID", "--protect 100,105", USAGE),
    ("bad pool", ["install", "--pool", "bad pool!"], "not a Proxmox pool name", "pvesh get /pools", USAGE),
    ("bad node", ["install", "--node", "bad node!"], "not a Proxmox node name", "hostname", USAGE),
    ("agent-user root", ["install", "--agent-user", "root"], "a root account cannot be contained",
     "claude-user", USAGE),
    ("agent-user missing", ["install", "--agent-user", "nosuchuser42"], "no account 'nosuchuser42'",
     "adduser nosuchuser42", USAGE),
    ("relative prefix", ["install", "--prefix", "relative/dir"], "is a relative path", "an absolute path", USAGE),
    ("prefix in /proc", ["install", "--prefix", "/proc/pmcp"], "cannot hold an install", "/opt/proxmox-mcp", USAGE),
    ("prefix is a file", ["install", "--prefix", "{files}/plain.txt"], "is not a directory", "another path", USAGE),
    ("systemd with a bundle", ["install", "--runtime", "systemd", "--bundle", "{files}/plain.txt"],
     "runs none", "the pmcp file is all", USAGE),
    ("systemd with monitoring", ["install", "--runtime", "systemd", "--monitoring"], "not available with --runtime",
     "default runtime (compose)", USAGE),
    ("unknown mode", ["install", "--mode", "god"], "Invalid value for '--mode'", "pmcp install --help", USAGE),
    ("unknown option", ["install", "--frobnicate"], "No such option", "pmcp install --help", USAGE),
    ("demo port -5", ["demo", "--port", "-5"], "-5 is not a TCP port", "0 for any free port", USAGE),
    ("demo port busy", ["demo", "--port", "{busy}"], "is already in use", "make demo PORT=N", NOT_READY),
    ("json-info into a missing dir", ["demo", "--json-info", "{files}/missing/info.json"], "does not exist",
     "mkdir -p", USAGE),
    ("serve port 0", ["serve", "--port", "0"], "0 is not a TCP port", "1 to 65535", USAGE),
    ("sim port 70000", ["sim", "serve", "--port", "70000"], "70000 is not a TCP port", "0 for any free port", USAGE),
    ("negative lock timeout", ["update", "--lock-timeout", "-1"], "-1 is negative", "0 or more", USAGE),
    ("keep 0", ["rollback", "--keep", "0"], "Invalid value for '--keep'", "pmcp rollback --help", USAGE),
    ("logs unknown service", ["logs", "nginx"], "Invalid value", "pmcp logs --help", USAGE),
    ("token name with a space", ["client-config", "--new-token", "my laptop"], "not a valid token name",
     "no spaces", USAGE),
    ("client url not http", ["client-config", "--url", "ftp://pve"], "not an http(s) URL", "https://", USAGE),
    ("bundle into a missing dir", ["bundle", "create", "-o", "{files}/missing/b.tar.gz"], "does not exist",
     "mkdir -p", USAGE),
    ("status of nothing", ["status", "--prefix", "{files}/none"], "no pmcp install", "pmcp install", NOT_READY),
    ("verify of nothing", ["verify", "--prefix", "{files}/none"], "no pmcp install", "pmcp install", NOT_READY),
    ("update --check of nothing", ["update", "--check", "--prefix", "{files}/none"], "no pmcp install",
     "pmcp install", NOT_READY),
    ("client-config of nothing", ["client-config", "--prefix", "{files}/none"], "no pmcp install",
     "--url https://HOST/mcp", FAILED),
    ("bundle verify of nothing", ["bundle", "verify", "{files}/none.tar.gz"], "none.tar.gz", "", FAILED),
]  # fmt: skip


def run(
    dist: Path, argv: list[str], env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(dist), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **SAFE_ENV, **(env or {})},
        **kw,  # type: ignore[arg-type]
    )


def fill(argv: list[str], files: Path, busy: int) -> list[str]:
    return [a.format(files=files, busy=busy) for a in argv]


def assert_refused(proc: subprocess.CompletedProcess[str], message: str, fix: str, code: int) -> None:
    said = proc.stdout + proc.stderr
    assert proc.returncode == code, said
    assert "Traceback" not in said, said
    assert message in proc.stderr, proc.stderr
    if fix:
        assert "fix:" in proc.stderr and fix in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("argv", "message", "fix", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_with_its_fix(
    dist: Path, files: Path, busy_port: int, argv: list[str], message: str, fix: str, code: int
) -> None:
    argv = fill(argv, files, busy_port)
    if argv[0] == "install":
        argv = [*argv, "--dry-run"]
    assert_refused(run(dist, argv), message, fix, code)
    proc = run(dist, [*argv, "--json"])
    assert_refused(proc, message, fix, code)
    doc = json.loads(proc.stdout)  # one object, nothing else on stdout
    assert doc["ok"] is False and doc["exit_code"] == code, doc
    assert message in doc["error"]["message"] and fix in doc["error"]["fix"], doc
    assert set(doc) == {"ok", "command", "changed", "steps", "error", "data", "transcript", "exit_code"}
    assert not (files / "missing").exists() and not (files / "none").exists()


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(scope="module")
def world_readable_dist(dist: Path) -> Iterator[Path]:
    """A copy `nobody` can read and run (pytest's own temp dirs are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="pmcp-nobody-"))
    d.chmod(0o755)
    copy = d / "pmcp"
    shutil.copy2(dist, copy)
    copy.chmod(0o755)
    yield copy
    shutil.rmtree(d)


@pytest.mark.parametrize(
    "argv",
    [["install", "--dry-run"], ["uninstall", "--yes"], ["update"], ["rollback"], ["demo", "--stack"]],
    ids=" ".join,
)
def test_host_changing_commands_say_root_first(world_readable_dist: Path, argv: list[str]) -> None:
    """As a user with no writable HOME either: the only complaint is root, with sudo as the fix."""
    env = ["HOME=/nonexistent", "PATH=/usr/bin:/bin"]
    proc = subprocess.run(
        [*NOBODY, "env", "-i", *env, str(world_readable_dist), *argv, "--json"],
        capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip
    assert_refused(proc, "must run as root", "sudo pmcp", NOT_READY)
    assert json.loads(proc.stdout)["error"]["fix"].startswith("sudo pmcp")
    assert "not writable" not in proc.stderr and "preflight" not in proc.stderr


def test_no_writable_home_still_runs(world_readable_dist: Path) -> None:
    """The launcher unpacks into a private directory of the user (0700) when HOME is not writable."""
    env = ["HOME=/nonexistent", "PATH=/usr/bin:/bin", "TMPDIR=/tmp"]
    proc = subprocess.run(
        [*NOBODY, "env", "-i", *env, str(world_readable_dist), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stderr
    root = Path("/tmp/pmcp-shiv-65534")
    st = root.lstat()
    assert st.st_uid == 65534 and (st.st_mode & 0o777) == 0o700


def test_an_unwritable_target_is_refused_as_that_user(world_readable_dist: Path) -> None:
    env = ["HOME=/nonexistent", "PATH=/usr/bin:/bin"]
    proc = subprocess.run(
        [*NOBODY, "env", "-i", *env, str(world_readable_dist), "client-config", "--url", "https://pve/mcp",
         "-o", "/root/pmcp-client.json", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_refused(proc, "cannot write into /root", "another directory", USAGE)


def older_pythons() -> list[str]:
    """Real interpreters older than 3.11 on this machine: Debian 11's python3.9, pyenv's, ..."""
    import glob

    candidates = [shutil.which(f"python3.{m}") for m in range(5, 11)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    found = []
    for path in filter(None, candidates):
        probe = subprocess.run(
            [path, "-c", "import sys; sys.exit(0 if sys.version_info < (3, 11) else 1)"], capture_output=True
        )
        if probe.returncode == 0 and path not in found:
            found.append(path)
    return found


def assert_told_the_way_forward(argv: list[str]) -> None:
    for args in (["--version"], ["install", "--json"]):
        proc = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)
        assert_refused(proc, "pmcp needs Python 3.11 or newer", "pve7to8", NOT_READY)
        assert "2024-07-31" in proc.stderr and "Proxmox VE 8" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["command"] == "install" and "pve7to8" in doc["error"]["fix"]


def test_python_older_than_3_11_is_told_the_way_forward(dist: Path) -> None:
    """PVE 7 (Debian 11) has Python 3.9: what pmcp needs, that PVE 7 is EOL, and pve7to8, before any
    import. With every older interpreter found here; on any machine, the launcher itself with its bar
    raised above the running Python (the same code path)."""
    for python in older_pythons():
        assert_told_the_way_forward([python, str(dist)])
    with zipfile.ZipFile(dist) as zf:
        launcher = zf.read("__main__.py").decode()
    ast.parse(launcher, feature_version=(3, 5))  # older interpreters must be able to read it
    raised = launcher.replace("MIN_PYTHON = (3, 11)", "MIN_PYTHON = (99, 0)")
    assert raised != launcher
    script = dist.parent / f".launcher-{os.getpid()}.py"
    script.write_text(raised)
    try:
        assert_told_the_way_forward([sys.executable, str(script)])
    finally:
        script.unlink()
