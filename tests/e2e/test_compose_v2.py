"""The same stack under Docker Compose v2 (the `docker compose` plugin Proxmox VE 9 / Debian 13 ships).

The rest of the e2e suite runs Debian 12's compose v1 (1.29.2); this module makes `docker compose` v2
available through DOCKER_CONFIG and proves install -> verify -> no-op re-run -> uninstall with it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import demo_opts, pmcp_cli, project_containers

pytestmark = [pytest.mark.docker, pytest.mark.dist, pytest.mark.slow]


@pytest.fixture(scope="module")
def compose_v2(stack_env: dict[str, str]) -> Iterator[str]:
    from pmcp.stack.compose import find_compose
    from tests.support import images

    config_dir = images.compose_v2_plugin()
    saved = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(config_dir)
    try:
        found = find_compose(refresh=True)
        assert found.argv == ("docker", "compose") and found.version[0] == 2, found.describe()
        yield found.describe()
    finally:
        if saved is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = saved
        find_compose(refresh=True)


def test_install_verify_rerun_uninstall_with_compose_v2(compose_v2: str, tmp_path: Path) -> None:
    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall

    prefix = tmp_path / "v2"
    opts = demo_opts(prefix)
    try:
        res = install(opts, kind="demo")
        assert res.ok, "\n".join(f"{s.name}: {s.error}\n{s.detail}" for s in res.run.steps if s.error)
        checks = {r["check"]: r["result"] for r in res.verify}
        assert checks["mcp session"] == "pass" and checks["tls"] == "pass", res.verify
        labels = subprocess.run(
            ["docker", "inspect", "-f", '{{index .Config.Labels "com.docker.compose.version"}}',
             *project_containers(prefix)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert labels and all(v.startswith("2.") for v in labels), f"not made by compose v2: {labels}"

        before = sorted(project_containers(prefix))
        again = install(opts, kind="demo")
        assert again.ok and not again.run.changed, [s for s in again.run.steps if s.status != "ok"]
        assert sorted(project_containers(prefix)) == before

        status = pmcp_cli("status", "--prefix", str(prefix), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        undone = uninstall(prefix, purge=True)
    assert undone.ok, undone.to_dict()
    assert project_containers(prefix) == []
