#!/usr/bin/env python3
"""Freeze pmcp into one reproducible file, ``dist/pmcp``, with shiv.

The file must run ``pmcp serve`` on Python 3.11 (Debian 12 / PVE 8) and 3.13 (Debian 13 / PVE 9) with
no pip and no network, so the server's compiled dependencies are bundled for both ABIs side by side:
extension modules carry the ABI in their file name, everything else is byte-identical because both
sets are resolved to the same versions (``scripts/dist.lock``).

Steps: resolve (only when the requirements changed, or ``--lock``), fetch the locked wheels into a
cache (``build/wheels``; offline once filled), unpack them into one staging site-packages, add the
pmcp package itself, hand that to shiv, then rewrite the archive in a canonical order so the same
commit always gives the same sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCK_FILE = ROOT / "scripts" / "dist.lock"
ABIS = ("3.11", "3.13")
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64")
ENTRY_POINT = "pmcp.cli:main"
SHEBANG = "/usr/bin/env python3"
FALLBACK_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can carry
DROP_DIST_INFO = {"RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json"}
DROP_DIRS = {"__pycache__", "tests", "test"}
DROP_SUFFIXES = (".pyc", ".pyo", ".pyi")


# Replaces shiv's two-line __main__.py. A warm run needs only the path of the already unpacked
# site-packages, which shiv's bootstrap finds after importing ~30 ms of modules (zipfile, json,
# hashlib, subprocess, compileall, ...): more than click itself. The first run, and any SHIV_*
# override, go through shiv's own bootstrap unchanged.
#
# It must run on any Python 3 a Proxmox host may have, so it is written for Python 3.5 (no f-strings,
# no walrus, no annotations; tests/unit/test_launcher.py parses it with `ast` at feature_version 3.5
# and runs it with the oldest interpreters it finds): on PVE 7 (Debian 11, Python 3.9) it must say
# what to do, not die in a SyntaxError inside click.
LAUNCHER = """\
# -*- coding: utf-8 -*-
import os
import sys

BUILD_ID = "{build_id}"
MIN_PYTHON = (3, 11)
EXIT_NOT_READY = 4  # pmcp.errors.ExitCode.NOT_READY


def _too_old():
    found = "%d.%d" % sys.version_info[:2]
    message = (
        "pmcp needs Python 3.11 or newer, as on Proxmox VE 8 (Debian 12) and 9 (Debian 13); "
        "this is Python %s" % found
    )
    fix = (
        "on a Proxmox VE 7 host (Debian 11, Python 3.9): PVE 7 reached its end of life on 2024-07-31 "
        "and gets no security updates. Upgrade it: run `pve7to8 --full`, fix what it reports, then "
        "follow https://pve.proxmox.com/wiki/Upgrade_from_7_to_8 (and later 8 to 9). Elsewhere: run "
        "this file with Python 3.11+ (python3.11 %s ...)" % (sys.argv[0] or "pmcp")
    )
    if "--json" in sys.argv[1:]:
        import json

        error = {{"message": message, "fix": fix, "detail": sys.version}}
        doc = {{"ok": False, "command": " ".join(a for a in sys.argv[1:2] if not a.startswith("-")),
               "changed": False, "steps": [], "error": error, "data": {{}}, "transcript": None,
               "exit_code": EXIT_NOT_READY}}
        sys.stdout.write(json.dumps(doc, indent=2) + "\\n")
    sys.stderr.write("pmcp: error: %s\\n  fix: %s\\n" % (message, fix))
    sys.exit(EXIT_NOT_READY)


def _writable(root):
    try:
        if not os.path.isdir(root):
            os.makedirs(root)
        return os.access(root, os.W_OK | os.X_OK)
    except OSError:
        return False


def _private(path):
    # A directory only this user can write: created 0700, else refused unless it is ours and 0700
    # (someone else could have made it first, and code is unpacked there).
    try:
        os.mkdir(path, 0o700)
    except OSError:
        pass
    try:
        st = os.lstat(path)
    except OSError:
        return False
    import stat

    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _roots():
    # Where the site-packages are unpacked: SHIV_ROOT, else ~/.shiv, else (no writable HOME: a service
    # account, `sudo -u`, a read-only home) a private directory under XDG_RUNTIME_DIR or /tmp.
    root = os.environ.get("SHIV_ROOT")
    if root:
        return [os.path.expanduser(root)], True
    home = os.path.join(os.path.expanduser("~"), ".shiv")
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    fallbacks = [os.path.join(runtime, "pmcp-shiv")] if runtime else []
    fallbacks.append(os.path.join(os.environ.get("TMPDIR") or "/tmp", "pmcp-shiv-%d" % uid))
    return [home] + fallbacks, False


def _launch():
    if sys.version_info < MIN_PYTHON:
        _too_old()
    name = os.path.basename(os.path.realpath(sys.argv[0]))
    candidates, explicit = _roots()
    root = None
    for i, cand in enumerate(candidates):
        if os.path.isdir(os.path.join(cand, name + "_" + BUILD_ID, "site-packages")):
            if i == 0 or _private(cand):
                root = cand
                break
    if root is None:
        for i, cand in enumerate(candidates):
            if (i == 0 and _writable(cand)) or (i > 0 and _private(cand)):
                root = cand
                break
    if root is None:
        where = candidates[0] if explicit else ", ".join(candidates)
        sys.stderr.write(
            "pmcp: error: cannot unpack into %s (not writable, or not a private directory of this user)\\n"
            "  fix: set SHIV_ROOT to a directory you own, e.g. SHIV_ROOT=$HOME/.cache/pmcp\\n" % where
        )
        sys.exit(EXIT_NOT_READY)
    site_packages = os.path.join(root, name + "_" + BUILD_ID, "site-packages")
    unpacked = os.path.isdir(site_packages)
    if root != candidates[0] or explicit:
        os.environ["SHIV_ROOT"] = root  # shiv's bootstrap and every pmcp this one starts use it too
    if not unpacked or any(k.startswith("SHIV_") and k != "SHIV_ROOT" for k in os.environ):
        if not unpacked and sys.stderr.isatty():
            sys.stderr.write("pmcp: first run of this build: unpacking into %s ...\\n" % root)
        import _bootstrap

        _bootstrap.bootstrap()
        return
    index = next(
        (i for i, p in enumerate(sys.path) if os.path.basename(p) in ("site-packages", "dist-packages")),
        len(sys.path),
    )
    sys.path.insert(index, site_packages)
    from {module} import {function}

    sys.exit({function}())


_launch()
"""


class BuildError(Exception):
    """A build step failed; the message says what to do."""


def requirements() -> list[str]:
    """Runtime dependencies plus the server extra: everything ``pmcp serve`` needs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return sorted(project["dependencies"] + project["optional-dependencies"]["server"])


def requirements_digest(reqs: list[str]) -> str:
    return hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(python_version: str, dest: Path, args: list[str]) -> None:
    """Download manylinux x86_64 wheels for one CPython version, whatever interpreter runs the build."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    cmd += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["--dest", str(dest), *args]
    # The host's pip config may carry unrelated global constraints; the lock is the only constraint here.
    env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_REQUIRE_VIRTUALENV": "0"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"pip download for Python {python_version} failed:\n{proc.stdout}{proc.stderr}\n"
            "Fix: check network access to PyPI (only needed until build/wheels/ holds every locked wheel)."
        )


def wheel_name_version(filename: str) -> tuple[str, str]:
    name, version = filename.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def read_lock() -> tuple[str | None, dict[str, str]]:
    """The lock: requirements digest, and wheel file name -> sha256."""
    if not LOCK_FILE.exists():
        return None, {}
    digest, wheels = None, {}
    for line in LOCK_FILE.read_text().splitlines():
        if line.startswith("# requirements-digest:"):
            digest = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            filename, sha = line.split()
            wheels[filename] = sha.removeprefix("sha256:")
    return digest, wheels


def write_lock(digest: str, wheels: dict[str, str], reqs: list[str]) -> None:
    lines = [
        "# Wheels bundled into dist/pmcp, for every ABI it serves. Generated by `python build.py --lock`.",
        "# The same versions for cp311 and cp313, so only the extension modules differ between them.",
        f"# requirements-digest: {digest}",
        *(f"# requirement: {r}" for r in reqs),
        *(f"{name} sha256:{sha}" for name, sha in sorted(wheels.items())),
    ]
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOCK_FILE.write_text("\n".join(lines) + "\n")


def resolve(reqs: list[str], cache: Path) -> dict[str, str]:
    """Resolve once for the oldest ABI, then pin the other ABIs to exactly those versions."""
    wheels: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pmcp-resolve-") as tmp:
        pins = Path(tmp, "pins.txt")
        for i, version in enumerate(ABIS):
            dest = Path(tmp, version)
            pip_download(version, dest, reqs if i == 0 else [*reqs, "--constraint", str(pins)])
            if i == 0:
                pins.write_text("".join(f"{n}=={v}\n" for n, v in map(wheel_name_version, os.listdir(dest))))
            for whl in sorted(dest.glob("*.whl")):
                wheels[whl.name] = sha256_file(whl)
                if not (cache / whl.name).exists():
                    shutil.copy2(whl, cache / whl.name)
    versions: dict[str, set[str]] = {}
    for filename in wheels:
        name, version = wheel_name_version(filename)
        versions.setdefault(name, set()).add(version)
    split = {n: v for n, v in versions.items() if len(v) > 1}
    if split:
        raise BuildError(f"ABIs resolved to different versions: {split}. Fix: pin them in pyproject.toml.")
    return wheels


def python_version_for(filename: str) -> str:
    """Which target Python to ask pip for, to fetch exactly this wheel again."""
    python_tag = filename[:-4].split("-")[-3]
    for version in ABIS:
        if f"cp{version.replace('.', '')}" in python_tag.split("."):
            return version
    return ABIS[0]


def fetch(wheels: dict[str, str], cache: Path) -> None:
    """Fill the cache with the locked wheels and verify every hash; no network when all are present."""
    missing = [f for f in sorted(wheels) if not (cache / f).exists()]
    for filename in missing:
        name, version = wheel_name_version(filename)
        with tempfile.TemporaryDirectory(prefix="pmcp-fetch-") as tmp:
            pip_download(python_version_for(filename), Path(tmp), ["--no-deps", f"{name}=={version}"])
            got = Path(tmp, filename)
            if not got.exists():
                raise BuildError(
                    f"PyPI no longer offers {filename} (got {os.listdir(tmp)}). "
                    "Fix: run `python build.py --lock` and commit scripts/dist.lock."
                )
            shutil.copy2(got, cache / filename)
    for filename, sha in sorted(wheels.items()):
        actual = sha256_file(cache / filename)
        if actual != sha:
            raise BuildError(
                f"{cache / filename} has sha256 {actual}, the lock says {sha}. "
                f"Fix: delete it and build again (it will be downloaded anew)."
            )


def keep(relpath: str) -> bool:
    """Drop what never runs: tests, caches, type stubs, and the per-ABI wheel bookkeeping and SBOMs."""
    parts = relpath.split("/")
    if any(p in DROP_DIRS for p in parts[1:-1]) or relpath.endswith(DROP_SUFFIXES):
        return False
    in_dist_info = parts[0].endswith(".dist-info")
    return not (in_dist_info and (parts[-1] in DROP_DIST_INFO or parts[1] == "sboms"))


def install_path(relpath: str) -> str | None:
    """Where a wheel entry lands in site-packages (``*.data/purelib|platlib`` merge into the root)."""
    parts = relpath.split("/")
    if parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        return None
    return relpath


def unpack(wheels: list[Path], site_packages: Path) -> None:
    """Unpack every wheel into one dir; a shared file must be byte-identical across ABIs."""
    for whl in wheels:
        with zipfile.ZipFile(whl) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                relpath = install_path(info.filename)
                if relpath is None or not keep(relpath):
                    continue
                data = zf.read(info)
                target = site_packages / relpath
                if target.exists():
                    if target.read_bytes() != data:
                        raise BuildError(f"{relpath} differs between wheels ({whl.name}); the ABIs diverge.")
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)


def add_pmcp(site_packages: Path) -> str:
    """Copy the package itself (sources and templates) plus the metadata importlib.metadata reads."""
    version = re.search(r'^__version__ = "([^"]+)"', (ROOT / "pmcp" / "__init__.py").read_text(), re.M)[1]

    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in DROP_DIRS or n.endswith(DROP_SUFFIXES)}

    shutil.copytree(ROOT / "pmcp", site_packages / "pmcp", ignore=ignore)
    info = site_packages / f"pmcp-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pmcp\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[console_scripts]\npmcp = {ENTRY_POINT}\n")
    (info / "top_level.txt").write_text("pmcp\n")
    return version


def normalize_tree(root: Path) -> None:
    """Modes end up in the zip; make them independent of umask and of how wheels were unpacked."""
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def source_date_epoch() -> int:
    """The commit's time: the same commit gives the same file, a new commit a new build date."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return max(int(out), FALLBACK_EPOCH)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return FALLBACK_EPOCH


def canonicalize(path: Path) -> None:
    """Rewrite the zipapp with sorted entries, fixed times, modes and compression, and the fast launcher.

    shiv sorts site-packages but adds its bootstrap in directory-listing order and copies file
    modes, both of which depend on the machine; this makes the bytes depend on the content only.
    """
    raw = path.read_bytes()
    shebang, _, _ = raw.partition(b"\n")
    with zipfile.ZipFile(path) as zf:
        entries = [(i.filename, zf.read(i), i.date_time) for i in zf.infolist()]
        build_id = json.loads(zf.read("environment.json"))["build_id"]
    if any(name.endswith(".pth") for name, _, _ in entries):
        raise BuildError("a bundled package ships a .pth file, which the fast launcher does not process.")
    module, function = ENTRY_POINT.split(":")
    launcher = LAUNCHER.format(build_id=build_id, module=module, function=function).encode()
    entries = [(n, launcher if n == "__main__.py" else d, t) for n, d, t in entries]
    order = {"site-packages/": 0, "_bootstrap/": 1}
    entries.sort(key=lambda e: (next((v for k, v in order.items() if e[0].startswith(k)), 2), e[0]))
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(shebang + b"\n")
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as out:
            for name, data, date_time in entries:
                info = zipfile.ZipInfo(name, date_time=date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o100644 << 16
                info.create_system = 3
                out.writestr(info, data, compresslevel=9)
    tmp.chmod(0o755)
    tmp.replace(path)


def build(output: Path, cache: Path, relock: bool) -> Path:
    reqs = requirements()
    digest = requirements_digest(reqs)
    cache.mkdir(parents=True, exist_ok=True)
    locked_digest, wheels = read_lock()
    if relock or locked_digest != digest or not wheels:
        print(f"resolving {len(reqs)} requirements for CPython {', '.join(ABIS)} ...", file=sys.stderr)
        wheels = resolve(reqs, cache)
        write_lock(digest, wheels, reqs)
    fetch(wheels, cache)

    epoch = source_date_epoch()
    with tempfile.TemporaryDirectory(prefix="pmcp-build-") as tmp:
        site_packages = Path(tmp, "site-packages")
        site_packages.mkdir()
        unpack([cache / f for f in sorted(wheels)], site_packages)
        add_pmcp(site_packages)
        normalize_tree(site_packages)
        output.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tmp, output.name)
        shiv = [sys.executable, "-m", "shiv", "-e", ENTRY_POINT, "-p", SHEBANG, "--reproducible"]
        # Uncompressed here: canonicalize() compresses once, at level 9.
        cmd = [*shiv, "--uncompressed", "--site-packages", str(site_packages), "-o", str(staged)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"shiv failed:\n{proc.stdout}{proc.stderr}\nFix: `make dev` installs shiv.")
        canonicalize(staged)
        # Atomic: whoever runs dist/pmcp meanwhile sees the old file or the new one, never half of one.
        part = output.with_name(f".{output.name}.part")
        shutil.copy2(staged, part)
        part.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "pmcp")
    parser.add_argument("--wheels", type=Path, default=ROOT / "build" / "wheels", help="wheel cache")
    parser.add_argument("--lock", action="store_true", help="resolve the dependencies anew")
    args = parser.parse_args(argv)
    try:
        out = build(args.output.resolve(), args.wheels.resolve(), args.lock)
    except BuildError as e:
        print(f"build.py: error: {e}", file=sys.stderr)
        return 1
    size = out.stat().st_size
    print(
        f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: {size} bytes ({size / 2**20:.1f} MiB)"
    )
    print(f"sha256: {sha256_file(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
