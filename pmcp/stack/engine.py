"""The Docker engine through its SDK (imported lazily): images present / loaded / built, container health.

Building the MCP image needs no registry and no network: a Python base image plus this very pmcp file.
Health is polled quickly (no fixed sleeps) and a failure names the container and shows its last log lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmcp.files import sha256_file
from pmcp.steps import StepError

POLL = 0.25
# Docker turns a container healthy at a fixed time (its check, an interval after the start): a
# shorter poll ends the wait sooner, each poll is one list call (the containers' inspects included)
HEALTH_POLL = 0.1
LOG_TAIL = 30


def client() -> Any:
    """A Docker SDK client, or a StepError that says how to get the engine running."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - bundled in the zipapp
        raise StepError("the docker Python SDK is missing", fix="use the pmcp release file") from exc
    try:
        c = docker.from_env(timeout=120)
        c.ping()
        return c
    except DockerException as exc:
        raise StepError(
            "the Docker engine is not reachable",
            fix="apt-get install docker.io && systemctl enable --now docker",
            detail=str(exc),
        ) from exc


def self_file() -> Path | None:
    """The pmcp zipapp that runs now (`$PMCP_SELF` wins): what the image is built from."""
    env = os.environ.get("PMCP_SELF")
    if env:
        return Path(env).resolve()
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 and argv0.is_file() and zipfile.is_zipfile(argv0):
        return argv0.resolve()
    return None


file_digest = sha256_file  # the one sha256 helper lives in pmcp.files


def image_present(c: Any, name: str) -> str | None:
    """The image id, or None."""
    from docker.errors import ImageNotFound

    try:
        return c.images.get(name).id
    except ImageNotFound:
        return None


def image_labels(c: Any, name: str) -> dict[str, str]:
    """The labels of an image (by tag or id), {} when it is absent."""
    from docker.errors import ImageNotFound

    try:
        return dict(c.images.get(name).labels or {})
    except ImageNotFound:
        return {}


def load_archive(c: Any, archive: Path) -> list[str]:
    """Load a `docker save` archive (gzip or plain tar), streamed: the engine decompresses it itself."""
    if not archive.is_file():
        raise StepError(f"image archive {archive} not found", fix="give the path of the pmcp bundle archive")
    try:
        with archive.open("rb") as fh:
            out = c.api.load_image(fh)
    except Exception as exc:
        raise StepError(
            f"could not load images from {archive}",
            fix="check that the archive is complete (compare its sha256), made by `pmcp bundle create`",
            detail=str(exc),
        ) from exc
    loaded = []
    for chunk in out if not isinstance(out, dict) else [out]:
        stream = chunk.get("stream", "") if isinstance(chunk, dict) else ""
        if "Loaded image" in stream:
            loaded.append(stream.split(":", 1)[1].strip())
    return loaded


def ensure_pulled(c: Any, name: str) -> str:
    """Image id; pulls only when missing, and says exactly what to do when the registry is unreachable."""
    found = image_present(c, name)
    if found:
        return found
    try:
        return c.images.pull(name).id
    except Exception as exc:
        raise StepError(
            f"image {name} is not on this host and could not be pulled (offline?)",
            fix=(
                f"on a machine with network: `docker pull {name} && docker save {name} | gzip >images.tar.gz`"
                " (or `pmcp bundle create`), copy it here, then `pmcp install --images images.tar.gz`"
            ),
            detail=str(exc),
        ) from exc


def build_mcp_image(c: Any, context: Path, tag: str, base: str, pmcp_file: Path) -> str:
    """Build the MCP image from the base + the pmcp file, with no network (nothing is fetched)."""
    from docker.errors import BuildError

    ensure_pulled(c, base)
    context.mkdir(parents=True, exist_ok=True)
    target = context / "pmcp"
    if not target.exists() or file_digest(target) != file_digest(pmcp_file):
        tmp = context / ".pmcp.tmp"
        shutil.copyfile(pmcp_file, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    try:
        image, _ = c.images.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE": base},
            network_mode="none",
            pull=False,
            rm=True,
            forcerm=True,
        )
    except BuildError as exc:
        log = "".join(str(x.get("stream", x.get("error", ""))) for x in exc.build_log)
        raise StepError(
            f"building image {tag} failed",
            fix=f"check that {base} has python3 (3.11 or newer) on PATH",
            detail="\n".join(log.strip().splitlines()[-LOG_TAIL:]),
        ) from exc
    return image.id


def remove_image(c: Any, name: str) -> None:
    from docker.errors import APIError, ImageNotFound

    with contextlib.suppress(ImageNotFound, APIError):
        c.images.remove(name)


UPDATE_PROJECT_LABEL = "io.pmcp.update-project"  # on an update's standby/candidate servers; value: project


def remove_labelled(c: Any, label: str, value: str) -> int:
    """Force-remove every container carrying ``label=value`` (e.g. an update's leftover standby)."""
    from docker.errors import APIError, NotFound

    removed = 0
    for ctr in c.containers.list(all=True, filters={"label": f"{label}={value}"}):
        with contextlib.suppress(NotFound, APIError):
            ctr.remove(force=True)
            removed += 1
    return removed


@dataclass
class ContainerState:
    service: str
    name: str
    status: str  # running, exited, restarting, ...
    health: str  # healthy, unhealthy, starting, none
    restarts: int
    image: str
    id: str

    @property
    def ready(self) -> bool:
        return self.status == "running" and self.health in ("healthy", "none")

    @property
    def failed(self) -> bool:
        return self.status in ("exited", "dead", "restarting") or self.health == "unhealthy"


def project_containers(c: Any, project: str) -> dict[str, Any]:
    """The project's containers by compose service name (running or not)."""
    found = c.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    out: dict[str, Any] = {}
    for ctr in found:
        svc = ctr.labels.get("com.docker.compose.service", ctr.name)
        if svc not in out or ctr.status == "running":
            out[svc] = ctr
    return out


def service_subnet(c: Any, project: str, service: str = "mcp-server") -> str | None:
    """The IPv4 subnet of the Docker network a service's container is on (its source address range when
    it connects to the host), or None when there is no such container."""
    ctr = project_containers(c, project).get(service)
    if ctr is None:
        return None
    for name in (ctr.attrs.get("NetworkSettings") or {}).get("Networks") or {}:
        try:
            ipam = c.networks.get(name).attrs.get("IPAM") or {}
        except Exception:  # a network removed meanwhile: try the next one
            continue
        for cfg in ipam.get("Config") or []:
            subnet = cfg.get("Subnet") or ""
            if subnet and ":" not in subnet:
                return str(subnet)
    return None


def start_services(c: Any, project: str, services: list[str]) -> list[str]:
    """Start these services' existing containers, in this order, through the engine (a `compose up`
    costs 0.4-1 s more); returns the ones started. Only for containers compose created from the
    current files (pmcp.stack.steps.ContainersStep), so nothing is left to compose to converge."""
    from docker.errors import APIError

    ctrs = project_containers(c, project)
    started = []
    for svc in services:
        ctr = ctrs.get(svc)
        if ctr is None:
            raise StepError(f"service {svc} has no container", fix="pmcp install (again)")
        if ctr.status == "running":
            continue
        try:
            ctr.start()
        except APIError as exc:
            raise StepError(
                f"docker could not start {ctr.name} ({svc})",
                fix=f"fix the cause below, then run again (see `pmcp logs {svc}`)",
                detail=str(exc.explanation or exc),
            ) from exc
        started.append(svc)
    return started


def state_of(ctr: Any) -> ContainerState:
    attrs = ctr.attrs
    st = attrs.get("State", {})
    health = (st.get("Health") or {}).get("Status", "none")
    return ContainerState(
        service=ctr.labels.get("com.docker.compose.service", ctr.name),
        name=ctr.name,
        status=st.get("Status", ctr.status),
        health=health,
        restarts=int(attrs.get("RestartCount", 0)),
        image=attrs.get("Image", ""),
        id=ctr.id,
    )


def states(c: Any, project: str) -> dict[str, ContainerState]:
    return {svc: state_of(ctr) for svc, ctr in project_containers(c, project).items()}


def log_tail(ctr: Any, lines: int = LOG_TAIL) -> str:
    try:
        return ctr.logs(tail=lines).decode("utf-8", "replace").rstrip()
    except Exception as exc:
        return f"(no logs: {exc})"


def wait_healthy(
    c: Any,
    project: str,
    services: list[str],
    timeout: float = 180,
    redact: Callable[[str], str] = lambda s: s,
) -> dict[str, ContainerState]:
    """Poll until every service is running and healthy; fail fast on exit/unhealthy/restart with its logs."""
    deadline = time.monotonic() + timeout
    last: dict[str, ContainerState] = {}
    first_restarts: dict[str, int] = {}
    while True:
        ctrs = project_containers(c, project)
        last = {}
        for svc in services:
            ctr = ctrs.get(svc)
            if ctr is None:
                continue
            last[svc] = state_of(ctr)  # list() inspected it just now (docker-py's non-sparse list)
            first_restarts.setdefault(ctr.id, last[svc].restarts)
            if last[svc].failed or last[svc].restarts > first_restarts[ctr.id]:
                raise _unhealthy(last[svc], ctr, redact)
        if len(last) == len(services) and all(s.ready for s in last.values()):
            return last
        if time.monotonic() >= deadline:
            waiting = [s for s in services if s not in last or not last[s].ready]
            svc = waiting[0]
            ctr = ctrs.get(svc)
            if ctr is None:
                raise StepError(f"service {svc} has no container", fix="see `pmcp logs`")
            raise _unhealthy(last[svc], ctr, redact, timed_out=timeout)
        time.sleep(HEALTH_POLL)


def _unhealthy(st: ContainerState, ctr: Any, redact: Callable[[str], str], timed_out: float = 0) -> StepError:
    why = f"not healthy after {timed_out:g}s" if timed_out else f"{st.status}, health {st.health}"
    if st.restarts and not timed_out:
        why += f", restarted {st.restarts}x"
    return StepError(
        f"container {st.name} ({st.service}) failed: {why}",
        fix=f"read the log lines below (all of them: `pmcp logs {st.service}`), fix the cause, run again",
        detail=redact(log_tail(ctr)),
    )


def reload_caddy(c: Any, project: str) -> None:
    """Reload Caddy's configuration in place (no restart: open connections and the TLS state survive)."""
    ctr = project_containers(c, project).get("caddy")
    if ctr is None:
        raise StepError("the caddy container is not running", fix="pmcp install")
    code, out = ctr.exec_run(
        ["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    )
    if code != 0:
        raise StepError(
            "caddy reload failed",
            fix="check the Caddyfile and caddy.d/upstream.caddy in the install dir",
            detail=out.decode("utf-8", "replace")[-2000:],
        )
