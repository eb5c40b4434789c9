"""End-to-end fixtures: the real Docker engine, compose, the offline test images, dist/pmcp.

The engine is started with scripts/ensure-test-env when none answers (root only); tests are skipped with
the reason when it cannot be had. Images come from tests/support/images.py (debootstrap + docker import,
cached), and reach the installer through the same env overrides an air-gapped admin would use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist" / "pmcp"


def _engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A reachable engine, started by scripts/ensure-test-env when needed; else skip with the reason."""
    if _engine_answers():
        return
    script = ROOT / "scripts" / "ensure-test-env"
    if script.exists() and os.geteuid() == 0:
        subprocess.run(["bash", str(script)], capture_output=True, timeout=600, check=False)
    if not _engine_answers():
        pytest.skip("no Docker engine reachable (run scripts/ensure-test-env as root)")


@pytest.fixture(scope="session")
def pmcp_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of dist/pmcp: a rebuild during the run must not change the file under the image."""
    if not DIST.is_file():
        pytest.skip("dist/pmcp missing (make dist)")
    copy = tmp_path_factory.mktemp("dist") / "pmcp"
    shutil.copy2(DIST, copy)
    return copy


@pytest.fixture(scope="session")
def stack_env(
    docker_engine: None, pmcp_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Environment for installs under test: offline images, this pmcp file, private log dir and lock."""
    sys.path.insert(0, str(ROOT))
    from tests.support import images

    try:
        base, caddy = images.python_base_image("bookworm"), images.caddy_image()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot make the offline test images: {exc}")
    logs = tmp_path_factory.mktemp("logs")
    env = {
        "PMCP_SELF": str(pmcp_file),
        "PMCP_PYTHON_BASE_IMAGE": base,
        "PMCP_CADDY_IMAGE": caddy,
        "PMCP_LOG_DIR": str(logs),
        "PMCP_LOCK_FILE": str(logs / "pmcp.lock"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pmcp_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the CLI from source (the same code the zipapp holds)."""
    return subprocess.run(
        [sys.executable, "-m", "pmcp", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@dataclass
class DemoStack:
    prefix: Path
    opts: Any
    result: Any
    steps: list[Any]


def demo_opts(prefix: Path, **kw: Any) -> Any:
    from pmcp.lifecycle.demo_stack import demo_options

    opts = demo_options(
        prefix,
        mode=kw.pop("mode", "read-only"),
        agent_user=kw.pop("agent_user", None),
        guests=kw.pop("guests", 12),
        https_port=free_port(),
        server_port=free_port(),
        sim_port=free_port(),
        health_timeout=kw.pop("health_timeout", 120.0),
    )
    for k, v in kw.items():
        setattr(opts, k, v)
    return opts


def step_statuses(result: Any) -> dict[str, str]:
    """Step name -> status of an install/uninstall result."""
    return {s.name: s.status for s in result.run.steps}


def project_services(prefix: Path) -> list[str]:
    """The compose services that have a container (running or not) in the install at ``prefix``."""
    from pmcp.stack.compose import project_name

    out = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.service"}}',
         "--filter", f"label=com.docker.compose.project={project_name(prefix)}"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return sorted(out.split())


def project_containers(prefix: Path) -> list[str]:
    from pmcp.stack.compose import project_name

    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project_name(prefix)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.split()


@pytest.fixture(scope="module")
def demo_stack(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DemoStack]:
    """One demo stack (install against the simulator service) shared by a module's tests; removed after.
    A module's ``STACK_EXTRA_ENV`` goes into the server's .env (test_update turns the rate limits off)."""
    from pmcp.lifecycle.install import install

    prefix = tmp_path_factory.mktemp("stack") / "inst"
    opts = demo_opts(prefix)
    opts.extra_env = dict(getattr(request.module, "STACK_EXTRA_ENV", {}))
    saved_caddy = os.environ.get("PMCP_CADDY_IMAGE")
    if getattr(request.module, "UPSTREAM_CADDY", False):
        # Debian 12's caddy 2.6.2 drops about 1 in 300 answers under a looping client (see
        # test_update_sessions.upstream_caddy); production runs caddy:2.10: load tests use the upstream build
        from tests.support import images

        os.environ["PMCP_CADDY_IMAGE"] = images.upstream_caddy_image()
    steps: list[Any] = []
    result = install(opts, report=steps.append, kind="demo")
    try:
        yield DemoStack(prefix, opts, result, steps)
    finally:
        if saved_caddy is None:
            os.environ.pop("PMCP_CADDY_IMAGE", None)
        else:
            os.environ["PMCP_CADDY_IMAGE"] = saved_caddy
        from pmcp.lifecycle.uninstall import uninstall

        with contextlib.suppress(Exception):
            uninstall(prefix, purge=True)
        for cid in project_containers(prefix):  # never leave containers behind, whatever failed
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
