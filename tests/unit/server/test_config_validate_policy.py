"""Pure logic: configuration from the environment, argument formats, policy, the bind check."""

from __future__ import annotations

import pytest

from pmcp import authtokens
from pmcp.server import validate
from pmcp.server.config import ConfigError, Mode, ServerConfig
from pmcp.server.policy import Policy, PolicyError, Risk
from pmcp.server.serve import check_bind


@pytest.fixture
def env(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    return {
        "PROXMOX_URL": "https://10.0.0.2:8006",
        "PROXMOX_TOKEN_ID": "pmcp@pve!mcp",
        "PROXMOX_TOKEN_SECRET_FILE": str(secret),
    }


def test_config_defaults_and_secret_not_in_repr(env):
    c = ServerConfig.from_env(env)
    assert c.mode is Mode.READ_ONLY
    assert c.proxmox_api == "https://10.0.0.2:8006/api2/json"
    assert (c.token_user, c.token_name) == ("pmcp@pve", "mcp")
    assert c.proxmox_token_secret == "s3cr3t-value"
    assert "s3cr3t" not in repr(c)
    assert c.task_timeout == 60


def test_limits_have_defaults_and_read_their_variables(env, tmp_path):
    c = ServerConfig.from_env(env)
    assert (c.sessions_per_token, c.rate_initialize, c.header_timeout, c.audit_max_bytes) == (
        16,
        30,
        10.0,
        512 * 1024 * 1024,
    )
    assert c.metrics_token_file is None and c.trusted_proxies == ()
    c = ServerConfig.from_env(
        env
        | {
            "PMCP_SESSIONS_PER_TOKEN": "4",
            "PMCP_RATE_CHANGES": "0",
            "PMCP_BODY_TIMEOUT": "2.5",
            "PMCP_AUDIT_MIN_FREE": "0",
            "PMCP_METRICS_TOKEN_FILE": "/run/pmcp/secrets/prometheus-token",
            "PMCP_TRUSTED_PROXIES": "caddy, 10.0.0.0/8",
        }
    )
    assert (c.sessions_per_token, c.rate_changes, c.body_timeout, c.audit_min_free) == (4, 0, 2.5, 0)
    assert str(c.metrics_token_file) == "/run/pmcp/secrets/prometheus-token"
    assert c.trusted_proxies == ("caddy", "10.0.0.0/8")


def test_config_parses_lists_and_hosts(env, tmp_path):
    env |= {
        "PMCP_ALLOWED_HOSTS": "pve.example.com, 192.0.2.10,2001:db8::1",
        "PMCP_PROTECTED": "100, 101",
        "PMCP_MODE": "admin",
        "PMCP_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
    }
    c = ServerConfig.from_env(env)
    assert c.protected == {100, 101}
    hosts = c.transport_hosts()
    for h in ("pve.example.com", "pve.example.com:*", "192.0.2.10:*", "[2001:db8::1]:*", "127.0.0.1:*"):
        assert h in hosts
    assert "https://pve.example.com" in c.transport_origins()


def test_the_express_lane_is_on_unless_turned_off(env):
    assert ServerConfig.from_env(env).express is True
    assert ServerConfig.from_env(env | {"PMCP_EXPRESS": "off"}).express is False


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"PMCP_MODE": "god"}, "PMCP_MODE"),
        ({"PMCP_PROTECTED": "12"}, "PMCP_PROTECTED"),
        ({"PROXMOX_TOKEN_ID": "root"}, "PROXMOX_TOKEN_ID"),
        ({"PROXMOX_TOKEN_SECRET_FILE": "/nonexistent"}, "PROXMOX_TOKEN_SECRET_FILE"),
        ({"PROXMOX_URL": "http://10.0.0.2:8006"}, "plain http"),
        ({"PROXMOX_CA_FILE": "/nonexistent.pem"}, "PROXMOX_CA_FILE"),
        ({"PMCP_MODE": "operator"}, "PMCP_AUDIT_LOG"),
        ({"PMCP_TASK_TIMEOUT": "9999"}, "PMCP_TASK_TIMEOUT"),
        ({"PMCP_RATE_TOOL_CALLS": "lots"}, "PMCP_RATE_TOOL_CALLS"),
        ({"PMCP_SESSIONS_PER_TOKEN": "0"}, "PMCP_SESSIONS_PER_TOKEN.*at least 1"),
        ({"PMCP_HEADER_TIMEOUT": "-1"}, "PMCP_HEADER_TIMEOUT"),
        ({"PMCP_AUDIT_MAX_BYTES": "1000"}, "PMCP_AUDIT_MAX_BYTES"),
        ({"PMCP_APPROVAL": "maybe"}, "PMCP_APPROVAL=.*elicit or confirm"),
        ({"PMCP_APPROVAL_SCOPE": "all"}, "PMCP_APPROVAL_SCOPE"),
        ({"PMCP_UNDO_KEEP": "-1"}, "PMCP_UNDO_KEEP"),
        ({"PMCP_EXPRESS": "fast"}, "PMCP_EXPRESS='fast': use on or off"),
    ],
)
def test_config_errors_name_the_variable(env, change, words):
    with pytest.raises(ConfigError, match=words):
        ServerConfig.from_env(env | change)


@pytest.mark.parametrize(
    "bad", ["../access/users", "pve1/../x", "a\x00b", "x" * 100, "", "-pve", "pve 1", 17]
)
def test_node_format_rejects(bad):
    with pytest.raises(validate.InvalidArgument):
        validate.node(bad)


@pytest.mark.parametrize("bad", ["100/../../", 99, 1_000_000_000, "1e3", True, None, "0x64"])
def test_vmid_format_rejects(bad):
    with pytest.raises(validate.InvalidArgument):
        validate.vmid(bad)


def test_formats_accept_real_values():
    assert validate.node("pve-node1") == "pve-node1"
    assert validate.vmid("100") == 100
    assert validate.storage("local-lvm") == "local-lvm"
    assert validate.snapname("before_upgrade-2") == "before_upgrade-2"
    upid = "UPID:pve1:000003E8:00001B58:6B06D39F:qmstart:100:pmcp@pve!mcp:"
    assert validate.upid_node(upid) == "pve1"
    with pytest.raises(validate.InvalidArgument):
        validate.upid("UPID:../../x:1:2:3:4:5:6:")
    with pytest.raises(validate.InvalidArgument):
        validate.snapname("1abc")


def test_api_path_encodes_each_segment():
    upid = "UPID:pve1:000003E8:00001B58:6B06D39F:qmstart:100:pmcp@pve!mcp:"
    path = validate.api_path("nodes", "pve1", "tasks", upid, "status")
    assert path.count("/") == 5
    assert "%3A" in path and "%21" in path
    for bad in ("..", ".", "", "a\x00"):
        with pytest.raises(validate.InvalidArgument):
            validate.api_path("nodes", bad)


def _config(mode: Mode, protected=frozenset()) -> ServerConfig:
    return ServerConfig("https://h:8006", "a@pve!b", "x", mode=mode, protected=frozenset(protected))


def test_policy_modes():
    ro, op, adm = Policy(_config(Mode.READ_ONLY)), Policy(_config(Mode.OPERATOR)), Policy(_config(Mode.ADMIN))
    assert ro.allows(Risk.READ) and not ro.allows(Risk.CHANGE)
    assert op.allows(Risk.CHANGE) and not op.allows(Risk.DESTRUCTIVE)
    assert adm.allows(Risk.DESTRUCTIVE)
    with pytest.raises(PolicyError, match="PMCP_MODE=admin"):
        op.check_tool("stop_guest", Risk.DESTRUCTIVE)


def test_policy_protection_by_vmid_and_tag():
    p = Policy(_config(Mode.ADMIN, {100}))
    with pytest.raises(PolicyError, match="PMCP_PROTECTED"):
        p.check_guest("stop_guest", 100, [])
    with pytest.raises(PolicyError, match="pmcp-protected"):
        p.check_guest("stop_guest", 101, ["web", "pmcp-protected"])
    p.check_guest("stop_guest", 101, ["web"])


def test_bind_refused_without_token_off_loopback(tmp_path):
    c = _config(Mode.READ_ONLY)
    check_bind("127.0.0.1", c)
    for host in ("0.0.0.0", "192.0.2.10", "::"):
        with pytest.raises(ConfigError, match="PMCP_AUTH_TOKEN_FILE"):
            check_bind(host, c)
    empty = tmp_path / "tokens"
    empty.write_text("")
    with pytest.raises(ConfigError, match="no token"):
        check_bind("0.0.0.0", ServerConfig("https://h:8006", "a@pve!b", "x", auth_token_file=empty))
    authtokens.add(empty, "claude")
    check_bind("0.0.0.0", ServerConfig("https://h:8006", "a@pve!b", "x", auth_token_file=empty))


@pytest.mark.parametrize(
    "name",
    [
        "pre-upgrade",
        "Pre_Upgrade",
        "a1",
        "ZZ",
        "x-",
        "a",
        "9lives",
        "-a",
        "pre upgrade",
        "pré",
        "a" * 40,
        "a" * 41,
    ],
)
def test_snapshot_names_agree_with_proxmox_and_the_simulator(name: str) -> None:
    """pve-common JSONSchema.pm: $CONFIGID_RE = qr/[a-z][a-z0-9_-]+/i, and pve-snapshot-name has
    maxLength 40: the server's check, the simulator's and Proxmox's accept the same names."""
    import re

    from pmcp.sim.schema import FORMATS

    proxmox = bool(re.fullmatch(r"[a-z][a-z0-9_-]+", name, re.IGNORECASE)) and len(name) <= 40
    simulator = FORMATS["pve-configid"](name) is None and len(name) <= 40
    try:
        validate.snapname(name)
        ours = True
    except validate.InvalidArgument:
        ours = False
    assert ours == simulator == proxmox, name


def test_a_server_started_early_waits_for_its_secrets(tmp_path):
    """The install starts the server beside the step that writes its token (PMCP_SECRETS_WAIT in .env):
    it waits until every file it needs is there and not empty, then starts; `pmcp serve` by hand does
    not wait at all."""
    import threading
    import time as clock

    from pmcp.server.config import wait_for_start_files

    secret, tokens = tmp_path / "proxmox-token", tmp_path / "client-tokens"
    env = {"PROXMOX_TOKEN_SECRET_FILE": str(secret), "PMCP_AUTH_TOKEN_FILE": str(tokens)}
    assert wait_for_start_files(env) == 0.0  # no variable: from_env says what is missing, at once
    tokens.write_text("")  # there, but empty: not yet written

    def install() -> None:
        clock.sleep(0.3)
        secret.write_text("s3cret")
        tokens.write_text("claude:abc\n")

    said: list[str] = []
    writer = threading.Thread(target=install)
    writer.start()
    waited = wait_for_start_files(env | {"PMCP_SECRETS_WAIT": "30"}, poll=0.01, log=said.append)
    writer.join()
    assert 0.25 <= waited < 5
    assert len(said) == 1 and str(secret) in said[0] and "pmcp install" in said[0]
    secret.unlink()
    assert 0.2 <= wait_for_start_files(env | {"PMCP_SECRETS_WAIT": "0.2"}, poll=0.01) < 2  # then gives up
    with pytest.raises(ConfigError, match="PMCP_SECRETS_WAIT"):
        wait_for_start_files(env | {"PMCP_SECRETS_WAIT": "soon"})
    with pytest.raises(ConfigError, match="between 0 and"):
        wait_for_start_files(env | {"PMCP_SECRETS_WAIT": "9999"})
