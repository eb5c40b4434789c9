"""Client configurations: each parses, has its client's documented shape, and never leaks the token."""

from __future__ import annotations

import json
import shlex
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pmcp import authtokens, clients
from pmcp.cli import main
from pmcp.paths import InstallPaths
from tests.support.certs import self_signed_pem

URL = "https://pve.example.com:8443/mcp"
PEM = self_signed_pem()


@pytest.fixture
def install(tmp_path: Path) -> InstallPaths:
    """An install dir as `pmcp install` leaves it: state.json and one client token."""
    paths = InstallPaths.at(tmp_path / "prefix")
    paths.prefix.mkdir()
    recorded_state(paths.prefix, public_names=["pve.example.com"], https_port=8443)  # internal CA
    assert json.loads(paths.state_file.read_text())["url"] == URL
    authtokens.add(paths.client_tokens, "default")
    return paths


def token_of(paths: InstallPaths, name: str = "default") -> str:
    return authtokens.load(paths.client_tokens)[name]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["client-config", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def one(client: str, **kw: object) -> clients.ClientConfig:
    (cfg,) = clients.generate(client, clients.Target(name="pmcp", url=URL, **kw))  # type: ignore[arg-type]
    return cfg


def file_doc(cfg: clients.ClientConfig) -> dict:
    snip = cfg.file_snippet
    assert snip is not None
    return tomllib.loads(snip.text) if snip.language == "toml" else json.loads(snip.text)


def test_claude_code_command_and_mcp_json() -> None:
    cfg = one("claude-code")
    command = next(s for s in cfg.snippets if s.kind == "command")
    argv = shlex.split(command.text)
    assert argv[:5] == ["claude", "mcp", "add", "--transport", "http"]
    assert argv[5:7] == ["pmcp", URL]
    assert argv[7:] == ["--header", "Authorization: Bearer ${PMCP_TOKEN}"]
    assert '"Authorization: Bearer ${PMCP_TOKEN}"' in command.text  # the shell expands it when run
    assert file_doc(cfg) == {
        "mcpServers": {
            "pmcp": {"type": "http", "url": URL, "headers": {"Authorization": "Bearer ${PMCP_TOKEN}"}}
        }
    }
    assert cfg.file_snippet and cfg.file_snippet.path == ".mcp.json"


def test_claude_desktop_goes_through_mcp_remote() -> None:
    server = file_doc(one("claude-desktop"))["mcpServers"]["pmcp"]
    assert server["command"] == "npx"
    assert server["args"] == ["-y", "mcp-remote", URL, "--header", "Authorization:${AUTH}"]
    assert server["env"] == {"AUTH": "Bearer <PMCP_TOKEN>"}
    assert " " not in server["args"][-1]


def test_cursor_uses_env_interpolation() -> None:
    assert file_doc(one("cursor")) == {
        "mcpServers": {"pmcp": {"url": URL, "headers": {"Authorization": "Bearer ${env:PMCP_TOKEN}"}}}
    }


def test_vscode_prompts_for_a_password_input() -> None:
    doc = file_doc(one("vscode"))
    server = doc["servers"]["pmcp"]
    assert server["type"] == "http" and server["url"] == URL
    (prompt,) = doc["inputs"]
    assert prompt["type"] == "promptString" and prompt["password"] is True
    assert server["headers"]["Authorization"] == "Bearer ${input:" + prompt["id"] + "}"
    assert "mcpServers" not in doc


def test_codex_reads_the_token_from_an_env_var() -> None:
    cfg = one("codex", token="s3cr3t-token-value-0123456789")
    doc = file_doc(cfg)
    assert doc == {"mcp_servers": {"pmcp": {"url": URL, "bearer_token_env_var": "PMCP_TOKEN"}}}
    assert "s3cr3t" not in cfg.file_snippet.text  # type: ignore[union-attr]  # Codex has no inline token


def test_windsurf_uses_server_url() -> None:
    assert file_doc(one("windsurf")) == {
        "mcpServers": {"pmcp": {"serverUrl": URL, "headers": {"Authorization": "Bearer ${env:PMCP_TOKEN}"}}}
    }


def test_all_covers_every_client_and_each_file_parses() -> None:
    configs = clients.generate("all", clients.Target(name="my-pve", url="https://10.0.0.2"))
    assert [c.client for c in configs] == list(clients.CLIENTS)
    for cfg in configs:
        doc = file_doc(cfg)
        text = json.dumps(doc)
        assert "https://10.0.0.2/mcp" in text and "my-pve" in text


def test_literal_token_only_when_given() -> None:
    token = "tok-" + "x" * 40
    for cfg in clients.generate("all", clients.Target(name="pmcp", url=URL, token=token)):
        if cfg.client != "codex":
            assert cfg.secret and token in cfg.file_snippet.text  # type: ignore[union-attr]
    for cfg in clients.generate("all", clients.Target(name="pmcp", url=URL)):
        assert not cfg.secret


def recorded_state(prefix: Path, **config: object) -> Path:
    """state.json exactly as install records it (install._record), for a given stack configuration."""
    from pmcp.lifecycle.install import InstallOptions, _record
    from pmcp.stack import render
    from pmcp.steps import RunResult

    cfg = render.StackConfig(mcp_image="m", base_image="b", caddy_image="c", prometheus_image="p", **config)
    paths = InstallPaths.at(prefix)
    _record(paths, InstallOptions(prefix=str(prefix)), cfg, RunResult(), "install", "pve1")
    return paths.state_file


@pytest.mark.parametrize(
    ("config", "url", "public"),
    [
        (
            {"public_names": ["192.0.2.10", "localhost"], "https_port": 8443},
            "https://192.0.2.10:8443/mcp",
            False,
        ),
        ({"domain": "pve.example.com"}, "https://pve.example.com/mcp", True),
        ({"public_names": ["2001:db8::1"]}, "https://[2001:db8::1]/mcp", False),
        ({"public_names": ["pve"], "tls_cert": "/c.pem", "tls_key": "/k.pem"}, "https://pve/mcp", True),
    ],
)
def test_url_from_the_state_install_records(tmp_path: Path, config: dict, url: str, public: bool) -> None:
    state = recorded_state(tmp_path, **config)
    assert clients.url_from_state(state) == (url, public)


def test_public_tls_means_no_ca_note() -> None:
    cfg = one("cursor", public_tls=True)
    assert not any("TLS" in n for n in cfg.notes)


def test_a_state_without_url_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"schema": 1}))
    with pytest.raises(clients.ClientConfigError, match="records no URL") as err:
        clients.url_from_state(tmp_path / "state.json")
    assert "--url" in err.value.fix


def test_no_install_says_what_to_do(tmp_path: Path) -> None:
    code, _, err = run("--prefix", str(tmp_path / "nothing"))
    assert code == 1
    assert "pmcp install" in err and "fix:" in err and "--url" in err


def test_url_override_needs_no_install(tmp_path: Path) -> None:
    code, out, _ = run("--prefix", str(tmp_path / "nothing"), "--url", "https://h.example:9443", "--json")
    assert code == 0
    doc = json.loads(out)["data"]
    assert doc["url"] == "https://h.example:9443/mcp"


def test_cli_never_prints_the_token_without_show_token(install: InstallPaths) -> None:
    token = token_of(install)
    for args in (["--client", "all"], ["--client", "all", "--json"], ["--client", "codex"]):
        code, out, err = run("--prefix", str(install.prefix), *args)
        assert code == 0, err
        assert token not in out and token not in err
    code, out, _ = run("--prefix", str(install.prefix), "--client", "all", "--show-token")
    assert code == 0 and token in out


def test_output_file_modes(install: InstallPaths, tmp_path: Path) -> None:
    token = token_of(install)
    shared = tmp_path / "shared" / ".mcp.json"
    code, out, err = run("--prefix", str(install.prefix), "-o", str(shared))
    assert code == 0 and out == ""
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    assert token not in shared.read_text()
    assert json.loads(shared.read_text())["mcpServers"]["pmcp"]["type"] == "http"

    private = tmp_path / "private.json"
    code, out, err = run(
        "--prefix", str(install.prefix), "--client", "cursor", "--show-token", "-o", str(private)
    )
    assert code == 0 and token not in out + err
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (
        json.loads(private.read_text())["mcpServers"]["pmcp"]["headers"]["Authorization"] == f"Bearer {token}"
    )


def test_output_merges_into_existing_config(install: InstallPaths, tmp_path: Path) -> None:
    cursor_file = tmp_path / "mcp.json"
    cursor_file.write_text(json.dumps({"mcpServers": {"other": {"url": "https://o/mcp"}}, "x": 1}))
    assert run("--prefix", str(install.prefix), "--client", "cursor", "-o", str(cursor_file))[0] == 0
    doc = json.loads(cursor_file.read_text())
    assert set(doc["mcpServers"]) == {"other", "pmcp"} and doc["x"] == 1

    codex_file = tmp_path / "config.toml"
    codex_file.write_text(
        'model = "o3"\n\n[mcp_servers.pmcp]\nurl = "https://old/mcp"\n\n[mcp_servers.pmcp.env]\nA = "1"\n\n'
        '[mcp_servers.other]\ncommand = "x"\n'
    )
    assert run("--prefix", str(install.prefix), "--client", "codex", "-o", str(codex_file))[0] == 0
    doc = tomllib.loads(codex_file.read_text())
    assert doc["model"] == "o3"
    assert doc["mcp_servers"]["other"] == {"command": "x"}
    assert doc["mcp_servers"]["pmcp"] == {"url": URL, "bearer_token_env_var": "PMCP_TOKEN"}


def test_new_token_is_shown_once_then_referenced(install: InstallPaths) -> None:
    code, out, _ = run("--prefix", str(install.prefix), "--new-token", "laptop")
    assert code == 0
    token = token_of(install, "laptop")
    assert out.count(token) == 1 and "shown once" in out
    code, out, err = run("--prefix", str(install.prefix), "--token-name", "laptop")
    assert code == 0 and token not in out + err and "laptop" in out
    code, _, err = run("--prefix", str(install.prefix), "--new-token", "laptop")
    assert code == 1 and "exists" in err


def test_new_token_written_with_output_is_not_printed(install: InstallPaths, tmp_path: Path) -> None:
    target = tmp_path / "laptop.mcp.json"
    code, out, err = run("--prefix", str(install.prefix), "--new-token", "ci", "-o", str(target))
    assert code == 0
    token = token_of(install, "ci")
    assert token not in out + err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert (
        json.loads(target.read_text())["mcpServers"]["pmcp"]["headers"]["Authorization"] == f"Bearer {token}"
    )


def test_several_tokens_need_a_name(install: InstallPaths) -> None:
    authtokens.add(install.client_tokens, "second")
    code, _, err = run("--prefix", str(install.prefix))
    assert code == 1 and "--token-name" in err and "default" in err and "second" in err


def test_revoke(install: InstallPaths) -> None:
    authtokens.add(install.client_tokens, "laptop")
    code, out, _ = run("--prefix", str(install.prefix), "--revoke", "laptop")
    assert code == 0 and "no restart" in out
    assert set(authtokens.load(install.client_tokens)) == {"default"}
    assert stat.S_IMODE(install.client_tokens.stat().st_mode) == 0o600
    code, _, err = run("--prefix", str(install.prefix), "--revoke", "laptop")
    assert code == 1 and "no client token named 'laptop'" in err and "default" in err


def test_ca_cert_export_and_trust_notes(install: InstallPaths, tmp_path: Path) -> None:
    code, _, err = run("--prefix", str(install.prefix), "--ca-cert", str(tmp_path / "ca.crt"))
    assert code == 1 and "root certificate" in err

    install.caddy_root_ca.parent.mkdir(parents=True)
    install.caddy_root_ca.write_text(PEM)
    dest = tmp_path / "ca.crt"
    code, out, err = run("--prefix", str(install.prefix), "--client", "all", "--ca-cert", str(dest), "--json")
    assert code == 0, err
    assert dest.read_text() == PEM and stat.S_IMODE(dest.stat().st_mode) == 0o644
    doc = json.loads(out)["data"]
    notes = {c["client"]: " ".join(c["notes"]) for c in doc["clients"]}
    assert f"NODE_EXTRA_CA_CERTS={dest}" in notes["claude-code"]
    assert f"CODEX_CA_CERTIFICATE={dest}" in notes["codex"]
    for client in ("cursor", "vscode", "windsurf"):
        assert "trust store" in notes[client] and f"NODE_EXTRA_CA_CERTS={dest}" in notes[client]
    desktop = next(c for c in doc["clients"] if c["client"] == "claude-desktop")
    env = json.loads(desktop["snippets"][0]["text"])["mcpServers"]["pmcp"]["env"]
    assert env["NODE_EXTRA_CA_CERTS"] == str(dest)


def test_https_without_ca_says_how_to_trust() -> None:
    notes = " ".join(one("claude-code").notes)
    assert "--ca-cert" in notes and "--domain" in notes
    (cfg,) = clients.generate("claude-code", clients.Target(name="pmcp", url="http://127.0.0.1:8080/mcp"))
    assert not any("TLS" in n for n in cfg.notes)


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "-x"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(clients.ClientConfigError, match="invalid server name"):
        clients.generate("cursor", clients.Target(name=bad, url=URL))


def test_bad_url_is_refused() -> None:
    with pytest.raises(clients.ClientConfigError, match="invalid URL"):
        clients.normalize_url("pve.example.com")
