"""Install's own steps without an engine: files, secrets, the step order, options, state."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pmcp import authtokens
from pmcp import record as statefile
from pmcp.errors import UsageError
from pmcp.lifecycle.install import InstallOptions, build, stack_config, step_line
from pmcp.paths import InstallPaths
from pmcp.stack import render
from pmcp.stack.steps import FilesStep, InstallDirStep, SecretsStep, StackContext
from pmcp.steps import StepError, StepResult, flat, run_steps


def _ctx(prefix: Path, **kw: object) -> StackContext:
    cfg = render.StackConfig(
        mcp_image="pmcp/mcp-server:test",
        base_image="b",
        caddy_image="c",
        prometheus_image="p",
        proxmox_ca=None,
        uid=os.getuid(),
        gid=os.getgid(),
        **kw,  # type: ignore[arg-type]
    )
    return StackContext(paths=InstallPaths.at(prefix), config=cfg, project="pmcp-test")


def test_files_step_writes_then_is_already_right(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "inst")
    step = FilesStep(ctx)
    assert step.check().needed
    res = run_steps([step])
    assert res.ok and res.steps[0].status == "changed"
    assert (ctx.paths.prefix / "caddy.d" / "upstream.caddy").exists()
    assert statefile.load(ctx.paths)["config"]["mcp_image"] == "pmcp/mcp-server:test"
    again = run_steps([FilesStep(ctx)])
    assert again.steps[0].status == "ok", again.steps[0]


def test_files_step_backs_up_replaced_files_and_keeps_the_upstream(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "inst")
    run_steps([FilesStep(ctx)])
    upstream = ctx.paths.prefix / "caddy.d" / "upstream.caddy"
    upstream.write_text(render.upstream_text("mcp-server-next:8080"))  # as an update leaves it
    ctx2 = _ctx(tmp_path / "inst", mode="operator")
    res = run_steps([FilesStep(ctx2)])
    assert res.steps[0].status == "changed"
    assert "mcp-server-next" in upstream.read_text()
    backups = [p for p in ctx.paths.backups_dir.iterdir() if (p / "manifest.json").exists()]
    assert len(backups) == 1 and "PMCP_MODE=read-only" in (backups[0] / ".env").read_text()


def test_files_step_undo_after_failure_restores_and_uninstall_keeps_audit(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "inst")
    run_steps([FilesStep(ctx)])
    env_before = ctx.paths.env_file.read_bytes()

    class Boom(FilesStep):
        def apply(self) -> None:
            super().apply()
            raise StepError("disk full", fix="free space")

    res = run_steps([Boom(_ctx(tmp_path / "inst", mode="admin"))])
    assert not res.ok and "undone" in res.steps[0].notes[0]
    assert ctx.paths.env_file.read_bytes() == env_before

    ctx.paths.audit_log.write_text('{"event": 1}\n')
    FilesStep(ctx).undo()  # as uninstall: a fresh step
    assert not ctx.paths.compose_file.exists() and ctx.paths.secrets_dir.exists()
    InstallDirStep(ctx.paths).undo()
    assert ctx.paths.audit_log.exists() and ctx.paths.backups_dir.exists()
    assert not ctx.paths.secrets_dir.exists()
    InstallDirStep(ctx.paths, purge=True).undo()
    assert not ctx.paths.prefix.exists()


def _assert_secret(ctx: Any, path: Path) -> None:
    """As root: root:GID 0640 in a root:GID 0750 secrets/ (the containers read through their group; an
    account sharing their uid reads nothing); otherwise the caller's own 0600 file."""
    st, dst = path.stat(), ctx.paths.secrets_dir.stat()
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, ctx.config.gid, 0o640)
        assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode)) == (0, ctx.config.gid, 0o750)
    else:
        assert stat.S_IMODE(st.st_mode) == 0o600


def test_secrets_step_creates_one_client_token_once(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "inst")
    assert run_steps([SecretsStep(ctx)]).steps[0].status == "changed"
    tokens = authtokens.load(ctx.paths.client_tokens)
    assert list(tokens) == ["default"]
    _assert_secret(ctx, ctx.paths.client_tokens)
    assert run_steps([SecretsStep(ctx)]).steps[0].status == "ok"
    assert authtokens.load(ctx.paths.client_tokens) == tokens  # never rotated by a re-run


def test_the_audit_key_is_made_once_and_outlives_uninstall_with_the_log(tmp_path: Path) -> None:
    from pmcp.stack.steps import ensure_audit_key

    ctx = _ctx(tmp_path / "inst")
    assert any("audit log's HMAC key" in c for c in SecretsStep(ctx).check().changes)
    run_steps([SecretsStep(ctx)])
    key = ctx.paths.audit_key.read_bytes()
    assert len(key.strip()) == 64
    _assert_secret(ctx, ctx.paths.audit_key)
    assert run_steps([SecretsStep(ctx)]).steps[0].status == "ok"
    assert not ensure_audit_key(ctx.paths, ctx.config.gid) and ctx.paths.audit_key.read_bytes() == key
    assert "PMCP_AUDIT_KEY_FILE=/run/pmcp/secrets/audit-key" in render.env_text(ctx.config)
    ctx.paths.audit_log.write_text("")
    InstallDirStep(ctx.paths).undo()  # uninstall without --purge: the log stays, and what verifies it
    assert ctx.paths.audit_key.read_bytes() == key and ctx.paths.audit_log.exists()
    assert not ctx.paths.client_tokens.exists()


def test_monitoring_gets_a_metrics_only_token_that_is_no_client_token(tmp_path: Path) -> None:
    from pmcp.stack.steps import PROMETHEUS_CLIENT, prometheus_token_file

    ctx = _ctx(tmp_path / "inst", monitoring=True)
    assert run_steps([SecretsStep(ctx)]).steps[0].status == "changed"
    tokens = authtokens.load(ctx.paths.client_tokens)
    assert set(tokens) == {"default"}
    bare = prometheus_token_file(ctx.paths)
    assert len(bare.read_text()) >= 32 and bare.read_text() not in tokens.values()
    _assert_secret(ctx, bare)
    assert run_steps([SecretsStep(ctx)]).steps[0].status == "ok"
    env = dict(
        line.split("=", 1)
        for line in render.env_text(ctx.config).splitlines()
        if "=" in line and line[0] != "#"
    )
    assert env["PMCP_METRICS_TOKEN_FILE"] == "/run/pmcp/secrets/prometheus-token"

    # an older install made it a full client token too: the re-run takes that away, keeps the scrape file
    scrape = bare.read_text()
    authtokens.save(ctx.paths.client_tokens, tokens | {PROMETHEUS_CLIENT: scrape})
    assert run_steps([SecretsStep(ctx)]).steps[0].status == "changed"
    assert set(authtokens.load(ctx.paths.client_tokens)) == {"default"} and bare.read_text() == scrape


def test_options_are_validated(tmp_path: Path) -> None:
    """The demo and state.json come here without the CLI's checks: the same rules, the same fixes."""
    with pytest.raises(UsageError, match="--tls-cert needs --tls-key"):
        InstallOptions(tls_cert="/etc/hostname").validate()
    with pytest.raises(UsageError, match="holds no PEM certificate"):
        InstallOptions(tls_cert="/etc/hostname", tls_key="/etc/hostname").validate()
    with pytest.raises(UsageError, match="not an IPv4"):
        InstallOptions(allow_from="not-a-cidr").validate()
    with pytest.raises(UsageError, match="are both 8443") as err:
        InstallOptions(https_port=8443, http_port=8443).validate()
    assert err.value.fix and err.value.exit_code == 2
    opts = InstallOptions(allow_from="192.0.2.7/24", domain="PVE.Example.com.")
    opts.validate()
    assert (opts.allow_from, opts.domain) == ("192.0.2.0/24", "pve.example.com")
    with pytest.raises(UsageError, match="--approval") as err:
        InstallOptions(approval="maybe").validate()
    assert err.value.fix == "--approval elicit or confirm"
    with pytest.raises(UsageError, match="--approval-scope"):
        InstallOptions(approval_scope="all").validate()
    # recorded in state.json, so update and verify run the server with the install's choice
    kept = InstallOptions.from_dict(InstallOptions(approval="elicit", approval_scope="changes").to_dict())
    assert (kept.approval, kept.approval_scope) == ("elicit", "changes")


ACME_URL = "https://ca.example.lan:9000/acme/acme/directory"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"acme_ca": ACME_URL}, "--domain"),  # a private ACME CA is where --domain's certificate comes from
        ({"acme_ca": "http://ca.example.lan/dir", "domain": "pve.example.com"}, "https URL"),
        ({"acme_ca": "ca.example.lan/dir", "domain": "pve.example.com"}, "https URL"),
        ({"acme_ca": "https:///dir", "domain": "pve.example.com"}, "https URL"),
        (
            {"acme_ca": "https://ca.example.lan/dir }\n\tadmin 0.0.0.0:2019", "domain": "pve.example.com"},
            "https URL",
        ),
        ({"acme_ca": "https://user:pw@ca.example.lan/dir", "domain": "pve.example.com"}, "credentials"),
        ({"acme_ca": "https://ca.example.lan:99999/dir", "domain": "pve.example.com"}, "not a URL"),
        ({"acme_ca_root": "/etc/hostname"}, "needs --acme-ca"),
        ({"acme_ca": ACME_URL, "domain": "pve.example.com", "acme_ca_root": "/nonexistent.pem"}, "not found"),
        ({"acme_ca": ACME_URL, "domain": "pve.example.com", "acme_ca_root": "/etc/hostname"}, "no PEM"),
    ],
)
def test_acme_ca_is_validated_with_the_fix(kw: dict[str, str], message: str) -> None:
    with pytest.raises(StepError, match=message) as err:
        InstallOptions(**kw).validate()  # type: ignore[arg-type]
    assert err.value.fix
    assert "pw@" not in err.value.message  # a URL with credentials is never echoed


def test_acme_ca_is_rendered_and_recorded(tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    root.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    opts = InstallOptions(
        prefix=str(tmp_path / "inst"), domain="pve.example.com", acme_ca=ACME_URL, acme_ca_root=str(root)
    )
    opts.validate()
    cfg = stack_config(opts)
    files = render.render(cfg)
    caddyfile = files["Caddyfile"].content.decode()
    assert f"\tacme_ca {ACME_URL}\n" in caddyfile
    assert "\tacme_ca_root /etc/caddy/tls/acme-ca-root.pem\n" in caddyfile
    assert files["tls/acme-ca-root.pem"].content == root.read_bytes()
    assert "tls/acme-ca-root.pem" in render.GENERATED  # uninstall removes it
    assert render.StackConfig.from_dict(cfg.to_dict()).acme_ca == ACME_URL  # state.json keeps it
    assert InstallOptions.from_dict(opts.to_dict()).acme_ca_root == str(root)


def test_step_order_host_and_demo(tmp_path: Path) -> None:
    host = [s.name for s in flat(build(InstallOptions(prefix=str(tmp_path / "a"))).steps)]
    assert host == [
        "preflight",  # first: a host that cannot take the stack gets no install dir
        "install dir",
        "vm networking",
        "proxmox tls",
        "proxmox identity",
        "agent account",
        "secrets",
        "files",
        "image",
        "containers",
        "server start",  # beside the identity: it waits for its token (PMCP_SECRETS_WAIT)
        "stack",
        "api firewall",
        "firewall",
        "client config",
        "verify",
    ]
    demo_opts = InstallOptions(prefix=str(tmp_path / "b"), sim=render.SimService(), host_checks=False)
    demo = [s.name for s in flat(build(demo_opts).steps)]
    assert demo[:6] == ["install dir", "files", "image", "simulator", "preflight", "proxmox tls"]
    assert demo.index("proxmox identity") < demo.index("stack")
    assert demo.index("stack") < demo.index("api firewall") < demo.index("verify")


def test_options_round_trip_through_state(tmp_path: Path) -> None:
    opts = InstallOptions(
        prefix=str(tmp_path), mode="operator", agent_user=None, sim=render.SimService(port=1)
    )
    back = InstallOptions.from_dict(opts.to_dict())
    assert back == opts


def test_step_line_shows_fix_and_detail() -> None:
    line = step_line(
        StepResult("stack", "failed", error="mcp-server exited", fix="pmcp logs", detail="Traceback")
    )
    assert "FAILED" in line and "fix:   pmcp logs" in line and "Traceback" in line


def test_uninstall_rebuilds_the_recorded_options(tmp_path: Path) -> None:
    from pmcp.lifecycle.uninstall import recorded_options

    paths = InstallPaths.at(tmp_path / "inst")
    opts = InstallOptions(
        prefix=str(paths.prefix), mode="operator", pool="lab", agent_user=None, https_port=8443
    )
    statefile.save(paths, {"options": opts.to_dict()})
    back = recorded_options(paths.prefix)
    assert (back.mode, back.pool, back.agent_user, back.https_port) == ("operator", "lab", None, 8443)
    assert recorded_options(tmp_path / "none").agent_user == "claude-user"  # nothing recorded: defaults


def test_status_and_verify_say_how_to_fix_a_missing_install(tmp_path: Path) -> None:
    from pmcp.lifecycle.status import status
    from pmcp.lifecycle.verify import load_target

    for call in (status, load_target):
        with pytest.raises(StepError) as err:
            call(tmp_path / "nothing")
        assert "pmcp install" in err.value.fix


def test_state_file_is_private_and_atomic(tmp_path: Path) -> None:
    paths = InstallPaths.at(tmp_path / "inst")
    statefile.update(paths, url="https://x/mcp")
    statefile.update(paths, version="1")
    assert statefile.load(paths) == {"schema": statefile.SCHEMA, "url": "https://x/mcp", "version": "1"}
    assert stat.S_IMODE(paths.state_file.stat().st_mode) == 0o600
    assert not list(paths.prefix.glob(".tmp-*"))


def test_auto_update_schedule_is_a_step_and_uninstall_removes_it(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="auto-update"):
        InstallOptions(auto_update="hourly").validate()
    opts = InstallOptions(prefix=str(tmp_path / "a"), auto_update="daily")
    names = [s.name for s in flat(build(opts).steps)]
    assert names.index("stack") < names.index("auto-update schedule") < names.index("verify")
    assert "auto-update schedule" not in [
        s.name for s in flat(build(InstallOptions(prefix=str(tmp_path))).steps)
    ]

    step = next(s for s in flat(build(opts).steps) if s.name == "auto-update schedule")
    step.systemd, step.cron_file = False, tmp_path / "cron.d" / "pmcp"
    step.cron_file.parent.mkdir()
    assert run_steps([step]).steps[0].status == "changed"
    assert (
        "pmcp update --quiet" in step.cron_file.read_text() and str(opts.prefix) in step.cron_file.read_text()
    )
    assert run_steps([step]).steps[0].status == "ok"
    step.undo()
    assert not step.cron_file.exists()


def test_allow_from_is_enforced_on_the_published_port_too(tmp_path: Path) -> None:
    def names(opts: InstallOptions) -> list[str]:
        return [s.name for s in flat(build(opts).steps)]

    filtered = names(InstallOptions(prefix=str(tmp_path), allow_from="192.0.2.0/24"))
    assert filtered.index("firewall") < filtered.index("published port filter") < filtered.index("verify")
    assert "published port filter" not in names(InstallOptions(prefix=str(tmp_path)))
    demo = InstallOptions(prefix=str(tmp_path), allow_from="192.0.2.0/24", host_checks=False)
    assert "published port filter" not in names(demo), "demo: iptables untouched"


def test_allow_from_publishes_https_on_ipv4_only() -> None:
    from pmcp.lifecycle.install import stack_config

    opts = InstallOptions(prefix="/nonexistent", allow_from="192.0.2.0/24", https_port=8443)
    cfg = stack_config(opts)
    assert cfg.ipv4_only
    assert '- "0.0.0.0:8443:8443"' in render.compose_text(cfg)
    assert '- "8443:8443"' in render.compose_text(stack_config(InstallOptions(prefix="/x", https_port=8443)))
    with pytest.raises(StepError, match="is IPv6, and pmcp's firewall rules are IPv4 only") as err:
        InstallOptions(allow_from="2001:db8::/32").validate()
    assert "IPv4 only" in err.value.fix


def test_protect_takes_vmids_and_feeds_the_server_and_the_identity() -> None:
    from pmcp.lifecycle.install import protected_list, stack_config

    opts = InstallOptions(prefix="/nonexistent", protect="105, 100", extra_env={"PMCP_PROTECTED": "101"})
    assert protected_list(opts) == [100, 101, 105]
    assert stack_config(opts).protected == "100,101,105"
    assert "PMCP_PROTECTED=100,101,105" in render.env_text(stack_config(opts))
    for bad in ("web1", "42"):
        with pytest.raises(StepError, match="--protect") as err:
            InstallOptions(protect=bad).validate()
        assert "--protect 100,105" in err.value.fix


def test_a_rerun_without_approval_keeps_the_recorded_choice(tmp_path: Path) -> None:
    """--approval elicit must not turn back into confirm because a later `pmcp install` left it out."""
    from pmcp import record as statefile
    from pmcp.lifecycle.install import install
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(tmp_path / "inst")
    statefile.save(paths, {"options": {"approval": "elicit", "approval_scope": "changes"}})
    rerun = InstallOptions(prefix=str(paths.prefix))
    rerun.validate()  # as the CLI does, before install
    rerun.https_port = rerun.http_port = 8443  # so install stops at its own validate, after reading state
    assert not install(rerun, dry_run=True).run.ok
    assert (rerun.approval, rerun.approval_scope) == ("elicit", "changes")
