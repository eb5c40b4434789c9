"""The one way pmcp runs host commands, and `pvesh`/`pveversion` on top of it.

Why one runner: every host command must run without a shell, with a timeout, with its output captured, and
with secrets kept out of process arguments (anyone on the host can read argv in /proc). Secrets go in through
stdin (``input=``) or a file; outputs that may carry a secret (``secret_output=True``) never reach an error
message.

Interfaces (stable, used by pmcp.lifecycle):
    run(argv, *, input=None, timeout=60.0, env=None, cwd=None, secret_output=False) -> Result
    Result(argv, returncode, stdout, stderr).ok / .text
    CommandError(message, result=None)            -- the command could not be started or timed out
    Pvesh(command=None, timeout=120.0, env=None)  -- command defaults to shlex.split($PMCP_PVESH or "pvesh")
        .get/.create/.set/.delete(api_path, params=None, /, **kw) -> parsed JSON (None when PVE returns
        nothing); params and kw are PVE's parameter names (``path=`` works: api_path is positional-only)
    PveshError(message, status=None, argv=())     -- PVE's own message (e.g. "no such user ('x@pve')")
    pveversion(command=None) -> str               -- $PMCP_PVEVERSION or "pveversion"; raises CommandError
    parse_pveversion(text) -> tuple[int, str]     -- ("pve-manager/8.4.1/...") -> (8, "8.4.1")
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        """Both streams, for version probes that print to either."""
        return (self.stdout + "\n" + self.stderr).strip()


class CommandError(Exception):
    """A command could not run at all (missing, timed out); a non-zero exit is a Result, not this."""

    def __init__(self, message: str, result: Result | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.result = result


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    secret_output: bool = False,
) -> Result:
    """Run argv (no shell) and capture its output; stdin is closed unless ``input`` is given."""
    argv = [str(a) for a in argv]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(f"command not found: {argv[0]}") from exc
    except PermissionError as exc:
        raise CommandError(f"cannot execute {argv[0]}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from exc
    if secret_output:
        return Result(argv, proc.returncode, proc.stdout, "" if proc.returncode == 0 else proc.stderr)
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


class PveshError(Exception):
    """PVE refused a call: ``message`` is what PVE said, ``status`` the HTTP code when pvesh printed one."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        argv: Sequence[str] = (),
        warnings: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.argv = list(argv)
        self.warnings = list(warnings)  # what perl printed before the error (kept for the transcript)


_STATUS = re.compile(r"^(\d{3})\s+(.*)$", re.S)
# What perl prints on stderr before pvesh's own error: its locale warning block (a LANG the host lacks,
# common over SSH from a desktop) with tab/space-indented continuation lines, and "... at FILE line N."
# warnings. On success pvesh's JSON is on stdout and stderr is ignored; on failure these lines must not
# become the message or hide the "CODE message" line (pve-common PVE/Exception.pm stringify).
_PERL_WARNING = re.compile(r"^(perl: warning:|\s)|.* at \S+ line \d+\.$")


def pvesh_error(stderr: str, returncode: int) -> tuple[int | None, str, list[str]]:
    """(HTTP status if printed, PVE's message, warnings printed before it) from a failed pvesh's stderr."""
    lines = stderr.strip("\n").splitlines()
    warnings: list[str] = []
    while lines and _PERL_WARNING.match(lines[0]) and not _STATUS.match(lines[0]):
        warnings.append(lines.pop(0))
    text = "\n".join(lines).strip() or f"exit status {returncode}"
    m = _STATUS.match(text)
    if m:
        return int(m.group(1)), m.group(2).strip(), warnings
    return None, text, warnings


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class Pvesh:
    """`pvesh <verb> <path> --k v ... --output-format json`, parsed; the command comes from $PMCP_PVESH."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if command is None:
            command = shlex.split(os.environ.get("PMCP_PVESH") or "pvesh")
        self.command = list(command)
        self.timeout = timeout
        self.env = env

    def call(self, verb: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        argv = [*self.command, verb, path]
        for key, value in (params or {}).items():
            if value is None:
                continue
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                argv += [f"--{key}", _encode(v)]
        argv += ["--output-format", "json"]
        try:
            res = self._exec(argv)
        except CommandError as exc:
            raise PveshError(exc.message, argv=argv) from exc
        if not res.ok:
            status, message, warnings = pvesh_error(res.stderr or res.stdout, res.returncode)
            raise PveshError(message, status=status, argv=argv, warnings=warnings)
        out = res.stdout.strip()
        if not out:
            return None
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise PveshError(f"pvesh returned something that is not JSON: {out[:200]!r}", argv=argv) from exc

    def _exec(self, argv: list[str]) -> Result:
        """One pvesh process; output is treated as secret (token creation prints the token's secret)."""
        return run(argv, timeout=self.timeout, env=self.env, secret_output=True)

    def get(self, api_path: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        return self.call("get", api_path, {**(params or {}), **kw})

    def create(self, api_path: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        return self.call("create", api_path, {**(params or {}), **kw})

    def set(self, api_path: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        return self.call("set", api_path, {**(params or {}), **kw})

    def delete(self, api_path: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        return self.call("delete", api_path, {**(params or {}), **kw})


_PVEVERSION = re.compile(r"pve-manager/(\d+)\.(\d+)(?:\.(\d+))?")


def parse_pveversion(text: str) -> tuple[int, str]:
    """Major version and full version from `pveversion` output; ValueError when it is not Proxmox VE."""
    m = _PVEVERSION.search(text)
    if not m:
        raise ValueError(f"not pveversion output: {text.strip()[:120]!r}")
    version = ".".join(g for g in m.groups() if g is not None)
    return int(m.group(1)), version


def pveversion(command: Sequence[str] | None = None, timeout: float = 30.0) -> str:
    """Raw `pveversion` output; raises CommandError when it is missing or fails."""
    if command is None:
        command = shlex.split(os.environ.get("PMCP_PVEVERSION") or "pveversion")
    res = run(list(command), timeout=timeout)
    if not res.ok:
        raise CommandError(f"`{shlex.join(res.argv)}` failed: {res.text[:300]}", res)
    return res.stdout


def systemctl(command: Sequence[str], *args: str) -> None:
    """Run ``systemctl ARGS`` (``command`` is injectable for tests); a failure is a StepError with the fix."""
    from pmcp.steps import StepError

    fix = "systemctl " + " ".join(args)
    try:
        res = run([*command, *args], timeout=60)
    except CommandError as exc:
        raise StepError(f"cannot run systemctl: {exc.message}", fix=fix) from exc
    if not res.ok:
        raise StepError(f"{fix} failed", fix=fix, detail=res.text[-300:])
