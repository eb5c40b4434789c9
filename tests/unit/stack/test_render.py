"""Rendering: what lands in the install dir, that compose (v1 and v2) accepts it, and that re-rendering
writes nothing."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pmcp.paths import InstallPaths
from pmcp.stack import render
from pmcp.stack.compose import Compose, ComposeCommand, find_compose, project_name


def _config(**kw: object) -> render.StackConfig:
    base = dict(
        mcp_image="pmcp/mcp-server:0.1.0-abc",
        base_image="python:3.11-slim",
        caddy_image="caddy:2.10-alpine",
        prometheus_image="prom/prometheus:v3.5.0",
        public_names=["pve.example.com", "192.0.2.10", "localhost", "127.0.0.1"],
        proxmox_ca=None,
    )
    base.update(kw)
    return render.StackConfig(**base)  # type: ignore[arg-type]


def test_compose_has_the_hardening_and_loopback_server_port() -> None:
    text = render.compose_text(_config())
    assert "\nname:" not in text and "start_interval" not in text  # compose v1 1.29 rejects both
    assert text.count("read_only: true") == 3
    assert text.count("cap_drop: [ALL]") == 3
    assert text.count('security_opt: ["no-new-privileges:true"]') == 3
    assert text.count('options: {max-size: "10m", max-file: "3"}') == 3  # container logs cannot fill the disk
    assert '"127.0.0.1:8080:8080"' in text
    assert 'user: "10001:10001"' in text
    assert 'profiles: ["monitoring"]' in text
    assert "pve-sim" not in text


def test_env_file_holds_no_secret_and_points_at_secret_files(tmp_path) -> None:
    env = render.env_text(_config(mode="operator", approval="elicit", approval_scope="changes"))
    assert "PMCP_MODE=operator" in env
    # what install chose for approval reaches the server as it reads its environment
    from pmcp.server.config import Approval, ApprovalScope, ServerConfig

    secret = tmp_path / "secret"
    secret.write_text("x\n")
    lines = dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))
    lines |= {"PROXMOX_TOKEN_SECRET_FILE": str(secret), "PROXMOX_CA_FILE": "", "PMCP_AUDIT_LOG": "/tmp/a"}
    lines.pop("PMCP_AUDIT_KEY_FILE", None)  # a container path; the key itself is another test's
    config = ServerConfig.from_env(lines)
    assert (config.approval, config.approval_scope) == (Approval.ELICIT, ApprovalScope.CHANGES)
    assert "PROXMOX_TOKEN_SECRET_FILE=/run/pmcp/secrets/proxmox-token" in env
    assert "PMCP_AUTH_TOKEN_FILE=/run/pmcp/secrets/client-tokens" in env
    assert "PMCP_METRICS_TOKEN_FILE=/run/pmcp/secrets/prometheus-token" in env  # /metrics only
    assert "PMCP_TRUSTED_PROXIES=caddy" in env  # X-Forwarded-For believed from Caddy alone
    assert "PMCP_ALLOWED_HOSTS=pve.example.com,192.0.2.10,localhost,127.0.0.1" in env
    assert "https://pve.example.com" in env  # origins, default port 443 without suffix
    assert "PROXMOX_TLS_INSECURE=0" in env


@pytest.mark.parametrize(
    ("kw", "expect", "absent"),
    [
        ({}, "tls internal", "tls /etc/caddy"),
        ({"domain": "mcp.example.com"}, "https://mcp.example.com {", "tls internal"),
    ],
)
def test_caddyfile_tls_variants(kw: dict[str, object], expect: str, absent: str) -> None:
    text = render.caddyfile_text(_config(**kw))
    assert expect in text
    assert absent not in text
    assert "import /etc/caddy/conf.d/upstream.caddy" in text


def test_custom_certificate_is_copied_and_key_is_secret(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("CERT")
    key.write_text("KEY")
    files = render.render(_config(tls_cert=str(cert), tls_key=str(key)))
    assert "tls /etc/caddy/tls/cert.pem /etc/caddy/tls/key.pem" in files["Caddyfile"].content.decode()
    assert files["tls/key.pem"].mode == 0o600 and files["tls/key.pem"].secret


def test_write_is_atomic_idempotent_and_modes(tmp_path: Path) -> None:
    paths = InstallPaths.at(tmp_path / "inst")
    render.ensure_dirs(paths, os.getuid(), os.getgid())
    files = render.render(_config(), upstream=render.UPSTREAM_DEFAULT)
    written = render.write(paths, files)
    assert set(written) == set(files)
    assert stat.S_IMODE((paths.prefix / ".env").stat().st_mode) == 0o640
    # as root secrets/ is root's and group-readable by the containers' group only
    assert stat.S_IMODE(paths.secrets_dir.stat().st_mode) == (0o750 if os.geteuid() == 0 else 0o700)
    assert paths.secrets_dir.stat().st_uid == 0 or os.geteuid() != 0
    before = {rel: (paths.prefix / rel).stat().st_mtime_ns for rel in files}
    assert render.write(paths, render.render(_config(), upstream=render.UPSTREAM_DEFAULT)) == []
    assert {rel: (paths.prefix / rel).stat().st_mtime_ns for rel in files} == before
    assert render.differs(paths, render.render(_config(mode="admin"))) == [".env"]
    assert not list(paths.prefix.rglob(".tmp-*"))


def test_upstream_file_is_what_update_rewrites() -> None:
    text = render.upstream_text("mcp-server-next:8080")
    assert "reverse_proxy mcp-server-next:8080" in text


def test_project_name_is_stable_and_distinct(tmp_path: Path) -> None:
    assert project_name("/opt/proxmox-mcp") == "pmcp"
    a, b = project_name(tmp_path / "a"), project_name(tmp_path / "b")
    assert a != b and a == project_name(tmp_path / "a") and a.startswith("pmcp-")


def _composes() -> list[ComposeCommand]:
    found = []
    for argv in (("docker", "compose"), ("docker-compose",)):
        if not shutil.which(argv[0]):
            continue
        proc = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip()[:1].isdigit():
            ver = tuple(int(x) for x in proc.stdout.strip().lstrip("v").split("-")[0].split(".")[:3])
            found.append(ComposeCommand(argv, ver))  # type: ignore[arg-type]
    return found


@pytest.mark.parametrize("monitoring", [False, True])
@pytest.mark.parametrize("sim", [False, True])
def test_every_compose_found_accepts_the_file(tmp_path: Path, monitoring: bool, sim: bool) -> None:
    composes = _composes()
    if not composes:
        pytest.skip("no docker compose (v2) or docker-compose (v1) installed")
    paths = InstallPaths.at(tmp_path / "inst")
    render.ensure_dirs(paths, os.getuid(), os.getgid())
    cfg = _config(monitoring=monitoring, sim=render.SimService(port=9106) if sim else None)
    render.write(paths, render.render(cfg, upstream=render.UPSTREAM_DEFAULT))
    for cmd in composes:
        comp = Compose(paths, project_name(paths.prefix), ["monitoring"] if monitoring else [], cmd)
        comp.config_check()
        services = comp.run("config", "--services").stdout.split()
        expected = {"mcp-server", "caddy"} | ({"pve-sim"} if sim else set())
        assert expected <= set(services) <= expected | {"prometheus"}, cmd.describe()


def test_find_compose_checks_the_version_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "old-compose"
    fake.write_text("#!/bin/sh\necho 1.25.0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PMCP_COMPOSE", str(fake))
    from pmcp.steps import StepError

    with pytest.raises(StepError, match=r"too old: .*1\.25\.0"):
        find_compose(refresh=True)
    fake.write_text("#!/bin/sh\necho 1.29.2\n")
    assert find_compose(refresh=True).version == (1, 29, 2)
    monkeypatch.delenv("PMCP_COMPOSE")
    find_compose(refresh=True) if _composes() else None


def test_uninstall_knows_every_generated_file(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("CERT")
    key.write_text("KEY")
    files = render.render(_config(tls_cert=str(cert), tls_key=str(key)), upstream=render.UPSTREAM_DEFAULT)
    assert set(files) <= set(render.GENERATED)


def test_upstream_is_what_the_update_switch_needs() -> None:
    """`pmcp update` switches servers in Docker's DNS: Caddy must re-resolve on every connection (no
    keep-alive) and retry a refused dial on the alias' other address instead of answering 502."""
    text = render.upstream_text()
    assert "reverse_proxy mcp-server:8080 {" in text
    assert "keepalive off" in text and "lb_try_duration" in text
    # Caddy flushes text/event-stream at once by itself; a forced flush_interval -1 was measured to
    # truncate a response now and then during the switch (bench_update), so it must not come back.
    assert "flush_interval" not in text


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_ensure_dirs_moves_an_older_installs_secrets_to_root(tmp_path: Path) -> None:
    """Before, secrets/ and its files were the container uid's (0700/0600): an account sharing that uid read
    them. ensure_dirs (install and update) makes them root:GID 0750/0640; a symlink is not followed."""
    paths = InstallPaths.at(tmp_path / "inst")
    paths.secrets_dir.mkdir(parents=True, mode=0o700)
    token = paths.secrets_dir / "proxmox-token"
    token.write_text("s")
    target = tmp_path / "elsewhere"
    target.write_text("x")
    (paths.secrets_dir / "link").symlink_to(target)
    for p in (paths.secrets_dir, token, target):
        os.chown(p, 10001, 10001)
    token.chmod(0o600)
    render.ensure_dirs(paths, 10001, 10001)
    st = token.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 10001, 0o640)
    assert paths.secrets_dir.stat().st_uid == 0
    assert target.stat().st_uid == 10001  # the link's target is untouched
