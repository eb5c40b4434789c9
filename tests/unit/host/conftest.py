"""Fixtures for host-step tests: the simulator, and `pvesh` answered by it (as on a real node, as root).

``pvesh`` runs `python -m pmcp sim pvesh` as a real subprocess, exactly as install does with
``PMCP_PVESH``. ``fast_pvesh`` runs the same shim's entry point in-process (same argv, same output
and exit status; only the interpreter start-up is skipped) for the tests that make many calls.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pmcp.host.run import Pvesh, PveshError, Result


@pytest.fixture
def sim() -> Iterator[Any]:
    from pmcp.sim.testing import running_sim  # a broken simulator fails these tests: it never skips them

    with running_sim(nodes=1, guests=4, seed=1, task_seconds=0.05) as s:
        yield s


def _sim_env(sim: Any) -> dict[str, str]:
    return {"PMCP_SIM_URL": sim.url, "PMCP_SIM_ROOT_TOKEN": f"{sim.root_token_id}={sim.root_token_secret}"}


@pytest.fixture
def shim_pvesh(sim: Any) -> Pvesh:
    return Pvesh([sys.executable, "-m", "pmcp", "sim", "pvesh"], env=_sim_env(sim))


class InProcessPvesh(Pvesh):
    """`pmcp sim pvesh` without a new interpreter per call: argv in, stdout/stderr/exit status out."""

    def _exec(self, argv: list[str]) -> Result:
        from pmcp.sim.pvesh import run_pvesh

        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as mp:
            for k, v in (self.env or {}).items():
                mp.setenv(k, v)
            code = 0
            with contextlib.suppress(SystemExit):
                code = run_pvesh(argv[len(self.command) :], out, err)
        return Result(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture
def pvesh(sim: Any) -> Pvesh:
    return InProcessPvesh(["pvesh"], env=_sim_env(sim))


@pytest.fixture
def node(pvesh: Pvesh) -> str:
    return pvesh.get("/nodes")[0]["node"]


SCHEMA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "pve-api"
VERBS = {"get": "GET", "create": "POST", "set": "PUT", "delete": "DELETE"}


def schema(version: str = "9.1") -> dict[str, Any]:
    path = SCHEMA_DIR / f"pve-{version}.json"
    if not path.exists():
        pytest.skip(f"the PVE API schema is not at {path}")
    return json.loads(path.read_text())


def schema_privileges(version: str) -> set[str]:
    returns = schema(version)["endpoints"]["/access/roles/{roleid}"]["GET"]["returns"]
    return {k.rstrip("?") for k in returns}


class RecordingPvesh(Pvesh):
    """The real pvesh shim, plus a record of every call (to check them against the official schema)."""

    def __init__(self, inner: Pvesh, fail_on: tuple[str, str] | None = None) -> None:
        super().__init__(inner.command, inner.timeout, inner.env)
        self.inner = inner
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_on = fail_on

    def _exec(self, argv: list[str]) -> Any:
        return self.inner._exec(argv)

    def call(self, verb: str, path: str, params: Any = None) -> Any:
        self.calls.append((verb, path, dict(params or {})))
        if self.fail_on and (verb, path) == self.fail_on:
            raise PveshError("injected failure", status=500)
        return super().call(verb, path, params)


def assert_calls_in_schema(calls: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Each pvesh call exists in BOTH official schemas (8.4, 9.1), with every parameter name."""
    from tests.support.pve_schema import problems

    found = problems([(VERBS[verb], path, tuple(params)) for verb, path, params in calls])
    assert not found, "\n".join(found)


@pytest.fixture
def netns() -> Iterator[list[str]]:
    """`iptables` inside a private network namespace with a DOCKER-USER chain and FORWARD policy DROP."""
    if not shutil.which("ip") or not shutil.which("iptables"):
        pytest.skip("needs iproute2 and iptables")
    name = "pmcpt-" + uuid.uuid4().hex[:8]
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace (needs root / CAP_SYS_ADMIN)")
    try:
        ipt = ["ip", "netns", "exec", name, "iptables"]
        subprocess.run([*ipt, "-N", "DOCKER-USER"], check=True)
        subprocess.run([*ipt, "-P", "FORWARD", "DROP"], check=True)
        yield ipt
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def docker_user_rules(ipt: list[str]) -> str:
    return subprocess.run([*ipt, "-S", "DOCKER-USER"], capture_output=True, text=True, check=True).stdout
