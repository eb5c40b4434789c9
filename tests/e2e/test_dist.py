"""dist/pmcp, the one file: runs offline on Debian 12 and 13, carries both ABIs, builds reproducibly."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import build
from pmcp import __version__
from pmcp.cli import main
from tests.support import images

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist" / "pmcp"
HEAVY = ("docker", "requests", "mcp", "pydantic", "pydantic_core", "uvicorn", "httpx2", "starlette")
# One import per compiled extension (and the server's main packages): each must load on each ABI.
SERVER_IMPORTS = (
    "pydantic_core._pydantic_core, rpds.rpds, _cffi_backend, cryptography.hazmat.bindings._rust, "
    "charset_normalizer.md, mcp, mcp.server, uvicorn, httpx2, pmcp.server.proxmox, prometheus_client, "
    "starlette, pydantic"
)
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs() -> Iterator[Path]:
    yield from (REPO / "build.py", REPO / "pyproject.toml", build.LOCK_FILE)
    yield from (p for p in (REPO / "pmcp").rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="session")
def dist() -> Path:
    """dist/pmcp as ``make dist`` leaves it; rebuilt when any input is newer (wheels come from the cache)."""
    if not DIST.exists() or max(p.stat().st_mtime for p in _inputs()) > DIST.stat().st_mtime:
        proc = subprocess.run([sys.executable, "build.py"], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    return DIST


def command_paths(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(cmd, click.Group):
            yield from command_paths(cmd, (*path, name))


def help_script(pmcp: str) -> str:
    """One shell script that runs --version, --help and every command's --help, stopping at a failure."""
    lines = ["set -e", f"{pmcp} --version", f"{pmcp} --help >/dev/null"]
    lines += [f"{pmcp} {' '.join(p)} --help >/dev/null" for p in command_paths()]
    return "\n".join(lines)


# -- build.py's rules, without building -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("certifi/tests/test_certify.py", False),
        ("pydantic/__pycache__/main.cpython-311.pyc", False),
        ("pydantic_core/core_schema.pyi", False),
        ("rpds_py-1.0.dist-info/RECORD", False),
        ("pydantic_core-2.0.dist-info/sboms/x.json", False),
        ("pydantic_core-2.0.dist-info/METADATA", True),
        ("pydantic_core-2.0.dist-info/licenses/LICENSE", True),
        ("pydantic_core/_pydantic_core.cpython-313-x86_64-linux-gnu.so", True),
        ("mcp/shared/testing.py", True),
    ],
)
def test_build_keeps_only_what_runs(path: str, kept: bool) -> None:
    assert build.keep(path) is kept


def test_build_maps_wheel_data_dirs() -> None:
    assert build.install_path("x-1.data/purelib/x/a.py") == "x/a.py"
    assert build.install_path("x-1.data/scripts/x") is None
    assert build.install_path("x/a.py") == "x/a.py"


def test_lock_pins_one_version_per_package_for_both_abis() -> None:
    digest, wheels = build.read_lock()
    assert digest == build.requirements_digest(build.requirements()), "run `python build.py --lock`"
    versions: dict[str, set[str]] = {}
    for filename in wheels:
        name, version = build.wheel_name_version(filename)
        versions.setdefault(name, set()).add(version)
    assert all(len(v) == 1 for v in versions.values()), versions
    compiled = {f for f in wheels if re.search(r"-cp3\d+-cp3\d+-", f)}
    for tag in ("cp311", "cp313"):
        names = {build.wheel_name_version(f)[0] for f in compiled if f"-{tag}-" in f}
        assert {"pydantic-core", "rpds-py", "cffi"} <= names, (tag, names)
    assert {build.python_version_for(f) for f in compiled} == {"3.11", "3.13"}


# -- the built file ---------------------------------------------------------------------------


@pytest.mark.dist
def test_file_is_a_clean_compressed_zipapp_with_both_abis(dist: Path) -> None:
    assert dist.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(dist, os.X_OK)
    with zipfile.ZipFile(dist) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert sorted(names[-2:]) == ["__main__.py", "environment.json"]
    site = [n for n in names if n.startswith("site-packages/")]
    assert site == sorted(site)
    assert len({i.date_time for i in infos}) == 1
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
    for forbidden in ("/__pycache__/", "/tests/", ".pyc"):
        assert not [n for n in site if forbidden in n], forbidden
    assert not [n for n in site if n.endswith(".pyi")]
    for abi in ("cpython-311", "cpython-313"):
        for ext in ("pydantic_core/_pydantic_core", "rpds/rpds", "_cffi_backend"):
            assert f"site-packages/{ext}.{abi}-x86_64-linux-gnu.so" in names
    assert "site-packages/pmcp/cli.py" in names
    assert f"site-packages/pmcp-{__version__}.dist-info/METADATA" in names


@pytest.mark.dist
def test_help_of_the_built_file_imports_nothing_heavy(dist: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SHIV_ROOT": str(tmp_path)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for run in ("cold", "warm"):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", str(dist), "--help"], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        modules = {m[1] for m in re.finditer(r"^import time:.*\|\s*([\w.]+)$", proc.stderr, re.M)}
        assert "click" in modules
        heavy = {m for m in modules if m.split(".")[0] in HEAVY}
        assert not heavy, f"{run} run imported {sorted(heavy)}"
    assert (tmp_path / f"pmcp_{build_id(dist)}" / "site-packages" / "pmcp" / "cli.py").exists()


def build_id(dist: Path) -> str:
    with zipfile.ZipFile(dist) as zf:
        return re.search(r'BUILD_ID = "(\w+)"', zf.read("__main__.py").decode())[1]  # type: ignore[index]


@pytest.mark.dist
def test_unwritable_shiv_root_fails_with_the_fix(dist: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, "SHIV_ROOT": str(blocker / "root")}
    proc = subprocess.run([sys.executable, str(dist), "--version"], env=env, capture_output=True, text=True)
    assert proc.returncode == 4  # the host is not ready for it (README, exit codes)
    assert "cannot unpack into" in proc.stderr and "set SHIV_ROOT to a directory you own" in proc.stderr


def _snapshot(dest: Path) -> Path:
    """The build's inputs, copied: other work in this tree must not change the sources mid-test."""
    for rel in ("build.py", "pyproject.toml", "scripts/dist.lock"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    shutil.copytree(REPO / "pmcp", dest / "pmcp", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.dist
@pytest.mark.slow
def test_two_builds_give_the_same_sha256(tmp_path: Path) -> None:
    """Two builds in two directories, sharing only the wheel cache, give the same bytes."""
    first = _snapshot(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(build.source_date_epoch())}
    shas = []
    for src in (first, second):
        cmd = [sys.executable, "build.py", "--wheels", str(REPO / "build" / "wheels")]
        proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out = src / "dist" / "pmcp"
        assert f"sha256: {sha256(out)}" in proc.stdout
        shas.append(sha256(out))
    assert shas[0] == shas[1]


# -- on Debian 12 and 13, no pip, no network --------------------------------------------------


def _need_root_tools() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("debootstrap"):
        pytest.skip("needs root, unshare and debootstrap: run scripts/ensure-test-env as root (CI does)")


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_runs_offline_in_a_fresh_debian_root(dist: Path, suite: str) -> None:
    _need_root_tools()
    pmcp = "/usr/local/bin/pmcp"
    script = "\n".join(
        [
            "python3 -c 'import sys; print(\"python\", sys.version.split()[0])'",
            "! python3 -m pip --version 2>/dev/null",
            "python3 -c 'import socket; print(\"interfaces\", [n for _, n in socket.if_nameindex()])'",
            help_script(pmcp),
            f"SHIV_INTERPRETER=1 {pmcp} -c 'import {SERVER_IMPORTS}; print(\"server deps ok\")'",
        ]
    )
    proc = images.run_in_rootfs(suite, ["sh", "-c", script], files={pmcp: dist})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"python {SUITE_PYTHON[suite]}." in proc.stdout
    assert f"pmcp, version {__version__}" in proc.stdout
    assert "server deps ok" in proc.stdout
    assert "interfaces ['lo']" in proc.stdout, "the network was not cut"


# -- a container image from the base image plus this one file ---------------------------------

DOCKERFILE = """\
FROM {base}
COPY pmcp /usr/local/bin/pmcp
ENV SHIV_ROOT=/opt/pmcp/shiv
RUN pmcp --version && python3 -m compileall -q -j 0 /opt/pmcp/shiv
USER 65534:65534
CMD ["pmcp", "--version"]
"""


@pytest.mark.docker
@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_image_from_base_plus_file_builds_and_runs_offline(dist: Path, suite: str, tmp_path: Path) -> None:
    base = images.python_base_image(suite)
    shutil.copy2(dist, tmp_path / "pmcp")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    tag = f"pmcp-test/dist:{suite}"
    proc = subprocess.run(
        ["docker", "build", "--network", "none", "-q", "-t", tag, str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    try:
        run = ["docker", "run", "--rm", "--network", "none", "--read-only", tag]
        proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"pmcp, version {__version__}"
        check = f"import sys, {SERVER_IMPORTS}; print(sys.version_info[:2])"
        proc = subprocess.run(
            [*run[:-1], "-e", "SHIV_INTERPRETER=1", tag, "pmcp", "-c", check],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(tuple(int(x) for x in SUITE_PYTHON[suite].split(".")))
        proc = subprocess.run([*run[:-1], tag, "pmcp", "serve", "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)
