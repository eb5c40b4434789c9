"""Tiny Docker images made offline (`docker import` of a small tar) for bundle tests: no registry needed."""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


def docker_client() -> Any:
    """A reachable engine, or skip with the reason (CI always has one)."""
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine reachable ({exc}); start dockerd or set DOCKER_HOST")
    return client


def tiny_rootfs(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def import_tiny(client: Any, repo: str, tag: str = "1", size: int = 64 * 1024) -> str:
    """Import a one-file image (random content so each is distinct) and return its id."""
    client.api.import_image_from_data(tiny_rootfs(os.urandom(size)), repository=repo, tag=tag)
    return client.images.get(f"{repo}:{tag}").id


def remove(client: Any, *names: str) -> None:
    from docker.errors import APIError, ImageNotFound

    for name in names:
        with contextlib.suppress(ImageNotFound, APIError):
            client.images.remove(name, force=True)


@pytest.fixture
def tiny_images() -> Iterator[tuple[Any, list[str]]]:
    """Two distinct tiny images under a unique repo, removed afterwards."""
    client = docker_client()
    repo = f"pmcp-test/bundle-{uuid.uuid4().hex[:8]}"
    names = [f"{repo}-a:1", f"{repo}-b:1"]
    for name in names:
        import_tiny(client, name.rsplit(":", 1)[0])
    try:
        yield client, names
    finally:
        remove(client, *names)
