"""The command runner and the pvesh wrapper, with real processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pmcp.host.run import CommandError, Pvesh, PveshError, parse_pveversion, pveversion, run

FAKE_PVESH = """
import json, sys
args = sys.argv[1:]
if args[:2] == ["get", "/version"]:
    print(json.dumps({"version": "9.1.2", "args": args}))
elif args[:2] == ["set", "/x"]:
    pass
elif args[:2] == ["get", "/bad"]:
    print("400 Parameter verification failed.\\nprivs: invalid", file=sys.stderr); sys.exit(255)
elif args[:2] == ["get", "/missing"]:
    print("no such user ('x@pve')", file=sys.stderr); sys.exit(2)
else:
    print("not json")
"""


@pytest.fixture
def pvesh(tmp_path: Path) -> Pvesh:
    script = tmp_path / "pvesh.py"
    script.write_text(FAKE_PVESH)
    return Pvesh([sys.executable, str(script)])


def test_run_captures_and_closes_stdin() -> None:
    res = run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read() == ''); print('e', file=sys.stderr)"]
    )
    assert res.ok and res.stdout.strip() == "True" and res.stderr.strip() == "e"


def test_run_passes_secrets_on_stdin_only() -> None:
    res = run([sys.executable, "-c", "import sys; print(len(sys.stdin.read()))"], input="s3cret")
    assert res.stdout.strip() == "6"
    assert "s3cret" not in " ".join(res.argv)


def test_run_timeout_and_missing_command() -> None:
    with pytest.raises(CommandError, match="did not finish"):
        run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    with pytest.raises(CommandError, match="command not found"):
        run(["/nonexistent/pmcp-tool"])


def test_secret_output_is_not_kept_on_failure() -> None:
    res = run(
        [sys.executable, "-c", "import sys; print('tok', file=sys.stderr); sys.exit(1)"], secret_output=True
    )
    assert not res.ok and res.stderr == "tok\n"
    res = run([sys.executable, "-c", "import sys; print('tok', file=sys.stderr)"], secret_output=True)
    assert res.ok and res.stderr == ""


def test_pvesh_builds_argv_and_parses(pvesh: Pvesh) -> None:
    data = pvesh.get("/version", {"full-tokenid": "a"}, enable=True, skip=None, ids=[1, 2])
    assert data["version"] == "9.1.2"
    assert data["args"] == [
        "get", "/version", "--full-tokenid", "a", "--enable", "1", "--ids", "1", "--ids", "2",
        "--output-format", "json",
    ]  # fmt: skip
    assert pvesh.set("/x", a=1) is None


def test_pvesh_errors_carry_pve_message(pvesh: Pvesh) -> None:
    with pytest.raises(PveshError) as err:
        pvesh.get("/bad")
    assert err.value.status == 400 and err.value.message.startswith("Parameter verification failed")
    with pytest.raises(PveshError) as err:
        pvesh.get("/missing")
    assert err.value.status is None and "no such user" in err.value.message
    with pytest.raises(PveshError, match="not JSON"):
        pvesh.get("/other")


def test_pvesh_command_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PMCP_PVESH", f"{sys.executable} -m pmcp sim pvesh")
    assert Pvesh().command == [sys.executable, "-m", "pmcp", "sim", "pvesh"]
    monkeypatch.delenv("PMCP_PVESH")
    assert Pvesh().command == ["pvesh"]


def test_pveversion(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_pveversion("pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-10-pve)") == (
        8,
        "8.4.1",
    )
    assert parse_pveversion("pve-manager/9.1.2/abc") == (9, "9.1.2")
    with pytest.raises(ValueError):
        parse_pveversion("bash: pveversion: command not found")
    monkeypatch.setenv("PMCP_PVEVERSION", "printf pve-manager/9.1.2/x")
    assert parse_pveversion(pveversion()) == (9, "9.1.2")
    monkeypatch.setenv("PMCP_PVEVERSION", "false")
    with pytest.raises(CommandError):
        pveversion()


def test_perl_locale_warnings_before_the_error_line(sim: object) -> None:
    """A host reached over SSH with a LANG it lacks: every real pvesh prints perl's locale warning first
    (the simulator's pvesh does the same); the error keeps PVE's status and message, success its JSON."""
    from tests.unit.host.conftest import _sim_env

    env = {**_sim_env(sim), "LANG": "xx_XX.UTF-8", "LC_ALL": ""}
    shim = Pvesh([sys.executable, "-m", "pmcp", "sim", "pvesh"], env=env)
    raw = run([*shim.command, "get", "/version"], env=env)
    assert raw.ok and raw.stderr.startswith("perl: warning: Setting locale failed.")
    assert shim.get("/version")["version"]  # stdout is still the JSON
    with pytest.raises(PveshError) as err:
        shim.create("/access/users", userid="bad user")
    assert err.value.status == 400
    assert err.value.message.startswith("Parameter verification failed.")
    assert "perl" not in err.value.message and err.value.warnings[0].startswith("perl: warning:")
