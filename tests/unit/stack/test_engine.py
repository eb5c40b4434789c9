"""The engine module against the real Docker engine: a build with no network, an archive streamed in,
health polling that fails fast with the container's own last lines."""

from __future__ import annotations

import gzip
import io
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pmcp.steps import StepError

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def docker() -> Any:
    from pmcp.stack import engine

    try:
        return engine.client()
    except StepError as exc:
        pytest.skip(f"no Docker engine: {exc.message}")


@pytest.fixture(scope="module")
def base_image(docker: Any) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.support import images

    try:
        return images.python_base_image("bookworm")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot make the offline base image: {exc}")


@pytest.fixture
def project(docker: Any) -> Iterator[str]:
    name = "pmcp-t-" + secrets.token_hex(4)
    yield name
    for c in docker.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"}):
        c.remove(force=True)


def _run(docker: Any, image: str, project: str, service: str, command: list[str], **kw: Any) -> Any:
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service}
    return docker.containers.run(image, command, detach=True, labels=labels, **kw)


def test_build_runs_with_no_network(docker: Any, base_image: str, tmp_path: Path) -> None:
    from pmcp.stack import engine

    pmcp = tmp_path / "pmcp-file"
    pmcp.write_text("#!/bin/sh\necho fake\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    only_loopback = "import socket,sys; sys.exit([n for _, n in socket.if_nameindex()] != ['lo'])"
    (ctx / "Dockerfile").write_text(
        f'ARG BASE\nFROM ${{BASE}}\nRUN python3 -c "{only_loopback}"\nCOPY pmcp /usr/local/bin/pmcp\n'
    )
    tag = "pmcp-test/engine-build:" + secrets.token_hex(4)
    try:
        image_id = engine.build_mcp_image(docker, ctx, tag, base_image, pmcp)
        assert engine.image_present(docker, tag) == image_id
        out = docker.containers.run(tag, ["pmcp"], remove=True)
        assert out.strip() == b"fake"
    finally:
        engine.remove_image(docker, tag)


def test_load_archive_streams_a_gzip_docker_save(docker: Any, tmp_path: Path) -> None:
    from pmcp.stack import engine

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    tag = "pmcp-test/engine-load:" + secrets.token_hex(4)
    subprocess.run(["docker", "import", "-", tag], input=raw.getvalue(), check=True, capture_output=True)
    saved = subprocess.run(["docker", "save", tag], check=True, capture_output=True).stdout
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(gzip.compress(saved))
    engine.remove_image(docker, tag)
    assert engine.image_present(docker, tag) is None
    try:
        assert tag in engine.load_archive(docker, archive)
        assert engine.image_present(docker, tag)
    finally:
        engine.remove_image(docker, tag)
    with pytest.raises(StepError, match="not found"):
        engine.load_archive(docker, tmp_path / "missing.tar.gz")


def test_wait_healthy_fails_fast_with_the_log_tail(docker: Any, base_image: str, project: str) -> None:
    from pmcp.stack import engine

    hc = {"test": ["CMD", "false"], "interval": 1_000_000_000, "retries": 100}
    _run(
        docker,
        base_image,
        project,
        "svc",
        ["sh", "-c", "echo boom-marker >&2; sleep 1; exit 3"],
        healthcheck=hc,
    )
    started = time.monotonic()
    with pytest.raises(StepError) as err:
        engine.wait_healthy(docker, project, ["svc"], timeout=60)
    assert time.monotonic() - started < 15
    assert "svc" in err.value.message and "exited" in err.value.message
    assert "boom-marker" in err.value.detail and "pmcp logs svc" in err.value.fix


def test_wait_healthy_waits_for_the_healthcheck(docker: Any, base_image: str, project: str) -> None:
    from pmcp.stack import engine

    hc = {"test": ["CMD", "test", "-e", "/tmp/ready"], "interval": 200_000_000, "retries": 100}
    _run(
        docker, base_image, project, "ok", ["sh", "-c", "sleep 1; touch /tmp/ready; sleep 60"], healthcheck=hc
    )
    _run(docker, base_image, project, "never", ["sleep", "60"], healthcheck=hc)
    assert engine.wait_healthy(docker, project, ["ok"], timeout=30)["ok"].health == "healthy"
    with pytest.raises(StepError, match=r"not healthy after 2s"):
        engine.wait_healthy(docker, project, ["never"], timeout=2)


def test_caddy_service_can_exec_a_binary_with_file_capabilities(
    docker: Any, base_image: str, tmp_path: Path
) -> None:
    """The official caddy image's binary has cap_net_bind_service=+ep: with the caddy service's own
    security settings (from the rendered compose file) such a binary must still start."""
    import shutil

    from pmcp.stack import render

    setcap = shutil.which("setcap") or shutil.which("setcap", path="/usr/sbin:/sbin")
    if not setcap:
        pytest.skip("needs setcap (apt-get install libcap2-bin)")
    text = render.compose_text(render.StackConfig())
    caddy = text[text.index("\n  caddy:") : text.index("\n  prometheus:")]
    cap_add = ["NET_BIND_SERVICE"] if "cap_add: [NET_BIND_SERVICE]" in caddy else []
    assert "cap_drop: [ALL]" in caddy and 'security_opt: ["no-new-privileges:true"]' in caddy
    binary = tmp_path / "captrue"
    shutil.copy2("/bin/true", binary)
    subprocess.run([setcap, "cap_net_bind_service=+ep", str(binary)], check=True)
    out = docker.containers.run(
        base_image,
        ["/captrue"],
        remove=True,
        user="10001:10001",
        cap_drop=["ALL"],
        cap_add=cap_add,
        security_opt=["no-new-privileges:true"],
        volumes={str(binary): {"bind": "/captrue", "mode": "ro"}},
    )
    assert out == b""
