"""The command tree: every command documents itself, unbuilt ones say so, and `--help` stays light."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from pmcp import __version__
from pmcp.cli import NotImplementedYet, main

# Imported only by the commands that need them: never by `pmcp --help` or `pmcp --version`.
HEAVY = ("docker", "requests", "mcp", "pydantic", "pydantic_core", "uvicorn", "proxmoxer", "starlette")


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


def only_raises_not_implemented(cmd: click.Command) -> bool:
    """True when the callback's whole body is ``raise NotImplementedYet(...)``: safe to invoke."""
    if cmd.callback is None:
        return False
    tree = ast.parse(textwrap.dedent(inspect.getsource(cmd.callback)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (
        len(body) == 1
        and isinstance(body[0], ast.Raise)
        and isinstance(body[0].exc, ast.Call)
        and getattr(body[0].exc.func, "id", None) == NotImplementedYet.__name__
    )


ALL = list(commands())
UNBUILT = [(path, cmd) for path, cmd in ALL if only_raises_not_implemented(cmd)]


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


@pytest.mark.parametrize("path", [p for p, _ in UNBUILT] or [()], ids=lambda p: " ".join(p) or "none")
def test_unbuilt_commands_exit_2_and_say_so(path: tuple[str, ...]) -> None:
    if not path:
        pytest.skip("every command is built")
    cmd = dict(ALL)[path]
    args = ["x" for p in cmd.params if isinstance(p, click.Argument) and p.required]
    result = CliRunner().invoke(main, [*path, *args])
    assert result.exit_code == 2, result.output
    assert "not implemented yet" in result.output


def test_unbuilt_command_fails_in_a_real_process() -> None:
    """Exit status 2 and the message on stderr from the real entry point, not only click's runner."""
    if not UNBUILT:
        pytest.skip("every command is built")
    path, cmd = UNBUILT[0]
    args = ["x" for p in cmd.params if isinstance(p, click.Argument) and p.required]
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp", *path, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "not implemented yet" in proc.stderr
