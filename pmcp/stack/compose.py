"""`docker compose` (v2) or `docker-compose` (v1), found once, version checked before use.

v1 exits 0 on flags it does not know, so a flag is never used to probe it: the version decides. Health is
never waited for with `--wait` (v1 lacks it): the engine module polls the containers.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pmcp import paths
from pmcp.paths import InstallPaths
from pmcp.steps import StepError

MIN_V1 = (1, 28, 0)  # profiles
MIN_V2 = (2, 0, 0)
DEFAULT_PREFIX = Path(paths.DEFAULT_PREFIX)
_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def project_name(prefix: str | Path) -> str:
    """Stable per prefix: the default install is `pmcp`; others get a short hash so installs coexist."""
    p = Path(prefix).resolve()
    if p == DEFAULT_PREFIX:
        return "pmcp"
    return "pmcp-" + hashlib.sha256(str(p).encode()).hexdigest()[:10]


def _version(text: str) -> tuple[int, int, int] | None:
    m = _VERSION_RE.search(text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


@dataclass(frozen=True)
class ComposeCommand:
    argv: tuple[str, ...]
    version: tuple[int, int, int]

    @property
    def v1(self) -> bool:
        return self.version[0] == 1

    def describe(self) -> str:
        return f"{' '.join(self.argv)} {'.'.join(map(str, self.version))}"


_found: ComposeCommand | None = None
_found_for: str | None = None  # the $PMCP_COMPOSE it was found with


def find_compose(refresh: bool = False) -> ComposeCommand:
    """`$PMCP_COMPOSE` if set, else `docker compose` v2, else `docker-compose` v1 (>= 1.28). Found once per
    process (each probe is a compose run: 0.3-0.4 s for v1), again when $PMCP_COMPOSE changes."""
    global _found, _found_for
    if _found and not refresh and _found_for == os.environ.get("PMCP_COMPOSE"):
        return _found
    _found_for = os.environ.get("PMCP_COMPOSE")
    candidates: list[tuple[str, ...]] = []
    if os.environ.get("PMCP_COMPOSE"):
        candidates.append(tuple(os.environ["PMCP_COMPOSE"].split()))
    else:
        if shutil.which("docker"):
            candidates.append(("docker", "compose"))
        if shutil.which("docker-compose"):
            candidates.append(("docker-compose",))
    seen = []
    for argv in candidates:
        try:
            proc = subprocess.run(
                [*argv, "version", "--short"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        ver = _version(proc.stdout) if proc.returncode == 0 else None
        if not ver:
            continue
        seen.append(f"{' '.join(argv)} {'.'.join(map(str, ver))}")
        minimum = MIN_V1 if ver[0] == 1 else MIN_V2
        if ver >= minimum:
            _found = ComposeCommand(argv, ver)
            return _found
    raise StepError(
        "docker compose not found" + (f" (too old: {', '.join(seen)})" if seen else ""),
        fix="apt-get install docker-compose (v1 >= 1.28) or the docker-compose-plugin (v2)",
    )


@dataclass
class Compose:
    """Runs compose for one install: fixed project name and file, in the install dir (for `.env`)."""

    paths: InstallPaths
    project: str
    profiles: list[str] = field(default_factory=list)
    command: ComposeCommand | None = None

    def _argv(self, *args: str) -> list[str]:
        cmd = self.command or find_compose()
        out = [*cmd.argv, "-p", self.project, "-f", str(self.paths.compose_file)]
        out += ["--project-directory", str(self.paths.prefix)]
        for prof in self.profiles:
            out += ["--profile", prof]
        return [*out, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COMPOSE_INTERACTIVE_NO_CLI": "1"}
        env.pop("COMPOSE_PROJECT_NAME", None)
        env.pop("COMPOSE_FILE", None)
        try:
            proc = subprocess.run(
                self._argv(*args),
                cwd=self.paths.prefix,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise StepError(
                f"compose {args[0]} did not finish within {timeout:g}s", fix="see `pmcp logs`"
            ) from exc
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-20:])
            raise StepError(
                f"compose {' '.join(args)} failed (exit {proc.returncode})",
                fix=f"fix the error below, then run again; the files are in {self.paths.prefix}",
                detail=tail,
            )
        return proc

    def config_check(self) -> None:
        self.run("config", "-q", timeout=60)

    def up(self, *services: str, recreate: bool = False) -> None:
        """`up -d`; recreating named services never touches their dependencies (`--no-deps`)."""
        args = ["up", "-d", "--remove-orphans"]
        if recreate:
            args.append("--force-recreate")
            if services:
                args.append("--no-deps")
        self.run(*args, *services)

    def create(self) -> None:
        """`up --no-start`: the network and every container, none started (v1 and v2 both know it)."""
        self.run("up", "--no-start", "--remove-orphans")

    def down(self) -> None:
        self.run("down", "--remove-orphans", "--timeout", "10")

    def logs_argv(self, follow: bool, tail: int, service: str | None) -> list[str]:
        args = ["logs", "--tail", str(tail)]
        if follow:
            args.append("-f")
        if service:
            args.append(service)
        return self._argv(*args)
