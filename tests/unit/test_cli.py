"""The command tree: every command documents itself, takes --json, and `--help` stays light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from pmcp import __version__
from pmcp.cli import main

# Imported only by the commands that need them: never by `pmcp --help` or `pmcp --version`.
HEAVY = ("docker", "requests", "mcp", "pydantic", "pydantic_core", "uvicorn", "httpx2", "starlette")


def imported_modules(argv: list[str]) -> set[str]:
    """Every module a Python run imports, from ``-X importtime``; also checks the run succeeded."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {m[1] for m in re.finditer(r"^import time:.*\|\s*([\w.]+)$", proc.stderr, re.M)}


def heavy_in(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


def commands(
    group: click.Group = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))


ALL = list(commands())


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["sim", "--help"], ["install", "--help"]])
def test_light_commands_import_nothing_heavy(argv: list[str]) -> None:
    modules = imported_modules(["-m", "pmcp", *argv])
    assert "click" in modules
    assert not heavy_in(modules), f"pmcp {' '.join(argv)} imported {sorted(heavy_in(modules))}"


def test_importtime_sees_heavy_imports() -> None:
    """The check above can fail: a heavy import is seen when it happens."""
    assert "requests" in heavy_in(imported_modules(["-c", "import requests"]))


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"pmcp, version {__version__}"


def test_the_whole_product_is_in_the_tree() -> None:
    names = {path[0] for path, _ in ALL}
    expected = {"install", "update", "status", "verify", "logs", "uninstall", "rollback"}
    expected |= {"client-config", "bundle", "serve", "demo", "sim"}
    assert expected <= names


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=" ".join)
def test_every_command_has_real_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    cmd = dict(ALL)[path]
    assert (cmd.help or "").strip(), f"pmcp {' '.join(path)} has no help text"


# `sim pvesh` answers as Proxmox's pvesh does (its own --output-format, exit codes): no envelope.
NO_JSON = {("sim", "pvesh")}


@pytest.mark.parametrize(
    "path", [p for p, c in ALL if not isinstance(c, click.Group) and p not in NO_JSON], ids=" ".join
)
def test_every_command_takes_json_and_quiet(path: tuple[str, ...]) -> None:
    opts = {o for p in dict(ALL)[path].params for o in p.opts}
    assert {"--json", "--quiet"} <= opts, f"pmcp {' '.join(path)} lacks --json/--quiet"


def invoke(*argv: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(argv))
    return result.exit_code, result.stdout, result.stderr


def test_failure_is_one_envelope_on_stdout_and_the_fix_on_stderr(tmp_path) -> None:
    code, out, err = invoke("status", "--prefix", str(tmp_path / "none"), "--json")
    assert code == 4
    doc = json.loads(out)
    assert set(doc) == {"ok", "command", "changed", "steps", "error", "data", "transcript", "exit_code"}
    assert doc["ok"] is False and doc["command"] == "status" and doc["exit_code"] == 4
    assert "no pmcp install" in doc["error"]["message"] and doc["error"]["fix"]
    assert doc["error"]["message"] in err and f"fix: {doc['error']['fix']}" in err


def test_success_has_the_same_envelope() -> None:
    code, out, _ = invoke("sim", "routes", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["error"] is None and doc["command"] == "sim routes"
    assert {"method": "GET", "path": "/version"} in doc["data"]["routes"]


def test_quiet_prints_nothing_on_success_and_the_error_on_failure(tmp_path) -> None:
    assert invoke("sim", "routes", "--quiet")[1:] == ("", "")
    code, out, err = invoke("status", "--prefix", str(tmp_path), "--quiet")
    assert code == 4 and out == "" and "no pmcp install" in err


def test_click_usage_errors_take_the_same_way_out() -> None:
    code, out, err = invoke("install", "--no-such-option", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and "--no-such-option" in doc["error"]["message"]
    assert "pmcp install --help" in doc["error"]["fix"] and "Traceback" not in err


def test_an_unexpected_exception_is_one_line_and_a_transcript(tmp_path, monkeypatch) -> None:
    """A bug: one line on stderr, the traceback only in the transcript (0600), exit 70."""
    import pmcp.lifecycle.status as status_mod

    def boom(prefix: object) -> None:
        raise KeyError("the-bug")

    monkeypatch.setattr(status_mod, "status", boom)
    monkeypatch.setenv("PMCP_LOG_DIR", str(tmp_path / "logs"))
    code, _, err = invoke("status", "--prefix", str(tmp_path))
    assert code == 70, err
    assert "Traceback" not in err and "unexpected KeyError" in err
    logs = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and f"transcript: {logs[0]}" in err
    text = logs[0].read_text()
    assert "Traceback" in text and "boom" in text and oct(logs[0].stat().st_mode & 0o777) == "0o600"


def test_interrupt_exits_130_without_a_traceback(tmp_path, monkeypatch) -> None:
    import pmcp.lifecycle.status as status_mod

    def interrupted(prefix: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(status_mod, "status", interrupted)
    code, _, err = invoke("status", "--prefix", str(tmp_path))
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_host_changing_commands_check_root_first(tmp_path, monkeypatch) -> None:
    """As non-root the first and only complaint is root, with the sudo fix (exit 4): not a list of
    wrong fixes, and before any prompt."""
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for argv in (
        ["install", "--dry-run", "--agent-user", ""],
        ["uninstall"],
        ["update"],
        ["rollback"],
        ["demo", "--stack"],
    ):
        code, out, err = invoke(*argv, "--prefix", str(tmp_path), "--json")
        doc = json.loads(out)
        assert code == 4, (argv, out, err)
        assert "must run as root" in doc["error"]["message"] and "sudo pmcp" in doc["error"]["fix"]


def test_uninstall_of_nothing_says_so_and_changes_nothing(tmp_path) -> None:
    before = sorted(tmp_path.iterdir())
    code, out, err = invoke("uninstall", "--prefix", str(tmp_path), "--yes")
    assert code == 0 and "nothing to remove" in out and err == ""
    assert sorted(tmp_path.iterdir()) == before
    doc = json.loads(invoke("uninstall", "--prefix", str(tmp_path), "--json")[1])
    assert doc["ok"] and not doc["changed"] and doc["steps"] == [] and doc["data"]["installed"] is False


def test_readme_documents_every_exit_code() -> None:
    from pathlib import Path

    from pmcp.errors import ExitCode

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [c.name for c in ExitCode if f"\n| {int(c)} |" not in readme]
    assert not missing, f"README.md's exit code table lacks {missing}"


def test_preflight_comes_before_the_question(tmp_path, monkeypatch) -> None:
    """On a host that cannot take the stack, nobody is asked "Install?" only to learn it afterwards."""
    monkeypatch.setattr("pmcp.cli.tty", lambda: True)
    monkeypatch.setattr("os.geteuid", lambda: 0)  # past the root check, to the host's own problems
    monkeypatch.setenv("PMCP_PVESH", "false")
    monkeypatch.setenv("PMCP_PVEVERSION", "false")
    result = CliRunner().invoke(
        main, ["install", "--prefix", str(tmp_path / "inst"), "--agent-user", ""], input="y\n"
    )
    assert result.exit_code == 4, result.output
    assert "Install pmcp into" not in result.output and "not a Proxmox VE host" in result.stderr
    assert not (tmp_path / "inst").exists()
