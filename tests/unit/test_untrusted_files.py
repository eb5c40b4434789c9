"""Root never reads, copies, chowns or runs what a container (uid 10001) or the agent can change.

Each test plants the attack of issue 11 first: Caddy's data directory belongs to the container uid, so
a compromised Caddy can turn its root.crt (or a directory above it) into a symlink to a host secret;
install then copied it 0644 into clients/. The same with chown through a planted symlink, a FIFO that
hangs root, a private key instead of a certificate.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from pmcp import authtokens
from pmcp.clients import ClientConfigError, export_ca
from pmcp.files import UnsafeFile, fix_owner_mode, read_certificate, unsafe_component
from pmcp.lifecycle.install import ClientsStep
from pmcp.lifecycle.verify import FAIL, PASS, check_root_paths
from pmcp.paths import InstallPaths
from pmcp.stack import render
from pmcp.steps import run_steps
from tests.support.certs import self_signed_pem

CONTAINER = 10001
SECRET = "-----BEGIN PRIVATE KEY-----\nTHE-HOST-AUTHKEY\n-----END PRIVATE KEY-----\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to the container uid)")


@pytest.fixture
def paths(tmp_path: Path) -> InstallPaths:
    """An install whose caddy-data belongs to the container uid, as install leaves it, and a host secret."""
    p = InstallPaths.at(tmp_path / "prefix")
    p.prefix.mkdir()
    p.state_file.write_text(json.dumps({"url": "https://127.0.0.1:8443/mcp"}))
    authtokens.add(p.client_tokens, "default")
    p.caddy_root_ca.parent.mkdir(parents=True)
    d = p.caddy_root_ca.parent
    while d != p.prefix:
        os.chown(d, CONTAINER, CONTAINER)
        d = d.parent
    secret = tmp_path / "authkey.key"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    return p


def _secret(paths: InstallPaths) -> Path:
    return paths.prefix.parent / "authkey.key"


@needs_root
def test_symlinked_ca_is_not_copied_world_readable(paths: InstallPaths) -> None:
    paths.caddy_root_ca.symlink_to(_secret(paths))  # what a compromised Caddy does
    result = run_steps([ClientsStep(paths)])
    copy = paths.clients_dir / "caddy-root-ca.crt"
    assert not copy.exists() or SECRET not in copy.read_text()
    assert not result.ok
    assert "symbolic link" in result.steps[0].error and "caddy" in result.steps[0].fix


@needs_root
def test_a_symlinked_directory_on_the_way_is_refused(paths: InstallPaths, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "local"
    elsewhere.mkdir(parents=True)
    (elsewhere / "root.crt").write_text(SECRET)
    local = paths.caddy_root_ca.parent
    local.rmdir()
    local.symlink_to(elsewhere)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        read_certificate(paths.prefix, paths.caddy_root_ca.relative_to(paths.prefix))
    with pytest.raises(ClientConfigError, match="refusing"):
        export_ca(paths.caddy_root_ca, tmp_path / "out.crt", paths.prefix)
    assert not (tmp_path / "out.crt").exists()


@needs_root
def test_a_real_certificate_is_copied_0644(paths: InstallPaths) -> None:
    paths.caddy_root_ca.write_text(self_signed_pem())
    result = run_steps([ClientsStep(paths)])
    assert result.ok, result.to_dict()
    copy = paths.clients_dir / "caddy-root-ca.crt"
    assert copy.read_text() == self_signed_pem() and stat.S_IMODE(copy.stat().st_mode) == 0o644


def test_only_a_pem_certificate_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "root.crt"
    for bad in (SECRET, "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n", "\xff\xfe"):
        f.write_text(bad)
        with pytest.raises(UnsafeFile):
            read_certificate(tmp_path, "root.crt")
    f.write_text(self_signed_pem() + SECRET)  # a key appended to a certificate
    with pytest.raises(UnsafeFile, match="only certificates"):
        read_certificate(tmp_path, "root.crt")
    f.write_text("A" * (1 << 20))
    with pytest.raises(UnsafeFile, match="more than"):
        read_certificate(tmp_path, "root.crt")
    f.unlink()
    (tmp_path / "other").write_text(self_signed_pem())
    os.link(tmp_path / "other", f)  # a hard link to a file the container does not own
    with pytest.raises(UnsafeFile, match="hard links"):
        read_certificate(tmp_path, "root.crt")


def test_a_fifo_does_not_hang_root(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "root.crt")
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            read_certificate(tmp_path, "root.crt")
        except BaseException as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(5), "reading a FIFO blocked"
    assert errors and isinstance(errors[0], UnsafeFile) and "regular file" in str(errors[0])


@needs_root
def test_no_chown_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"  # stands for /etc/pve/priv or /root/.ssh
    victim.mkdir(mode=0o700)
    p = InstallPaths.at(tmp_path / "prefix")
    p.prefix.mkdir()
    (p.prefix / "caddy-data").symlink_to(victim)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        render.ensure_dirs(p, CONTAINER, CONTAINER)
    st = victim.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)

    target = tmp_path / "shadow"
    target.write_text("root:x:0\n")
    link = tmp_path / "secret-link"
    link.symlink_to(target)
    with pytest.raises(UnsafeFile):
        fix_owner_mode(link, 0o600, (CONTAINER, CONTAINER))
    assert target.stat().st_uid == 0 and stat.S_IMODE(target.stat().st_mode) == 0o644


@needs_root
def test_install_dir_must_be_roots_only(tmp_path: Path) -> None:
    agent_home = tmp_path / "home"
    agent_home.mkdir()
    os.chown(agent_home, 12345, 12345)
    prefix = agent_home / "pmcp"
    assert unsafe_component(prefix) == (agent_home, f"{agent_home} is owned by uid 12345, not root")
    t = SimpleNamespace(paths=InstallPaths.at(prefix))
    rows = {r.check: r for r in check_root_paths(t)}  # type: ignore[arg-type]
    assert rows["install dir"].result == FAIL and f"chown root:root {agent_home}" in rows["install dir"].fix

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable, not sticky: anyone can swap the install dir
    assert "writable by group and others" in unsafe_component(shared / "pmcp")[1]  # type: ignore[index]
    shared.chmod(0o1777)  # sticky like /tmp: only root can rename root's entry
    (shared / "pmcp").mkdir()
    assert unsafe_component(shared / "pmcp") is None
    t = SimpleNamespace(paths=InstallPaths.at(shared / "pmcp"))
    rows = {r.check: r for r in check_root_paths(t)}  # type: ignore[arg-type]
    assert rows["install dir"].result == PASS
