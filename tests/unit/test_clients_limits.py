"""`pmcp client-config --new-token NAME --mode/--scope/--budget`: a client token's own limits, written
to the token file the server reads, and every bad input refused in the --json envelope with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pmcp import authtokens, record
from pmcp.cli import main
from pmcp.paths import InstallPaths
from pmcp.stack.render import StackConfig

from .test_clients import recorded_state


@pytest.fixture
def install(tmp_path: Path) -> InstallPaths:
    """An operator install (state.json records the mode) with its first client token."""
    paths = InstallPaths.at(tmp_path / "prefix")
    paths.prefix.mkdir()
    recorded_state(paths.prefix, public_names=["pve.example.com"], https_port=8443)
    stack = StackConfig(mode="operator", public_names=["pve.example.com"], https_port=8443)
    record.update(paths, config=stack.to_dict())  # as the stack step records it
    authtokens.add(paths.client_tokens, "default")
    return paths


def run_json(paths: InstallPaths, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["client-config", "--prefix", str(paths.prefix), "--json", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout)


def test_a_new_token_carries_its_mode_scope_and_budget(install: InstallPaths) -> None:
    code, doc = run_json(
        install, "--new-token", "web", "--mode", "read-only", "--scope", "tag:Web,pool:lab/a", "--budget", "3"
    )
    assert code == 0 and doc["ok"], doc
    limits = {"mode": "read-only", "scope": {"tags": ["web"], "pools": ["lab/a"]}, "budget_per_hour": 3}
    assert doc["data"]["limits"] == limits
    entry = authtokens.load_entries(install.client_tokens)["web"]
    assert entry.token == doc["data"]["new_token"]
    assert entry.limits == authtokens.TokenLimits("read-only", ("web",), ("lab/a",), 3)
    assert authtokens.load(install.client_tokens)["default"], "the other token is untouched"
    line = next(x for x in install.client_tokens.read_text().splitlines() if x.startswith("web:"))
    assert line == f"web:{entry.token} ‖ mode=read-only scope=tag:web,pool:lab/a budget=3"


def test_an_existing_token_gets_new_limits_and_keeps_its_secret(install: InstallPaths) -> None:
    before = authtokens.load(install.client_tokens)["default"]
    code, doc = run_json(install, "--token-name", "default", "--scope", "pool:lab")
    assert code == 0 and doc["data"]["limits"]["scope"] == {"tags": [], "pools": ["lab"]}, doc
    code, doc = run_json(install, "--token-name", "default", "--budget", "0")
    assert code == 0 and doc["data"]["limits"]["budget_per_hour"] == 0
    entry = authtokens.load_entries(install.client_tokens)["default"]
    assert entry.token == before and entry.limits == authtokens.TokenLimits(pools=("lab",), budget=0)
    code, doc = run_json(install, "--token-name", "default", "--scope", "")
    assert code == 0 and doc["data"]["limits"]["scope"] is None


@pytest.mark.parametrize(
    ("args", "message", "fix"),
    [
        (["--new-token", "a", "--scope", "web"], "neither tag:NAME nor pool:NAME", "tag:web,pool:lab"),
        (["--new-token", "a", "--scope", "tag:a b"], "is not a Proxmox tag", "tag:NAME and/or pool:NAME"),
        (["--new-token", "a", "--scope", "pool:lab!x"], "is not a Proxmox pool name", "comma-separated"),
        (["--new-token", "a", "--mode", "root"], "'root' is not a mode", "read-only, operator or admin"),
        (["--new-token", "a", "--mode", "admin"], "above this install's mode (operator)", "--mode operator"),
        (["--new-token", "a", "--budget", "-1"], "-1 is not a budget", "0 (none) to 100000"),
        (["--new-token", "a", "--budget", "many"], "'many' is not a number", "--help"),
        (["--mode", "read-only"], "set one client token's limits", "--new-token NAME"),
        (["--revoke", "default", "--budget", "1"], "--revoke removes a token", "run them separately"),
        (["--token-name", "nobody", "--budget", "1"], "no client token named 'nobody'", "--new-token nobody"),
    ],
)
def test_bad_limits_are_refused_with_the_fix(
    install: InstallPaths, args: list[str], message: str, fix: str
) -> None:
    before = install.client_tokens.read_text()
    code, doc = run_json(install, *args)
    assert not doc["ok"] and code == doc["exit_code"] != 0, doc
    assert message in doc["error"]["message"], doc["error"]
    assert fix in doc["error"]["fix"], doc["error"]
    assert install.client_tokens.read_text() == before, "nothing was written"
