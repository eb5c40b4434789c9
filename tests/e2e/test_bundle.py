"""`pmcp bundle create` → remove the images → `pmcp bundle load`: the same images come back, offline.

Uses the real CLI and the real engine. The stack's own test images (made offline by tests/support/images.py)
are bundled under unique tags when they exist, so other tests sharing the engine keep theirs; tiny imported
images are removed completely and must come back with the same ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pmcp.stack.bundle import verify_bundle
from tests.support.bundles import docker_client, import_tiny, remove

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def pmcp(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pmcp {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def stack_test_images() -> list[str]:
    """The offline-made stack images (tests/support/images.py builds them when missing): a failure to
    make them is a broken test set-up and fails the test, never a skip."""
    from tests.support.images import caddy_image, python_base_image

    return [python_base_image(), caddy_image()]


def test_bundle_round_trip_with_tiny_images(tmp_path: Path) -> None:
    client = docker_client()
    repo = f"pmcp-test/e2e-{uuid.uuid4().hex[:8]}"
    names = [f"{repo}-base:1", f"{repo}-proxy:1"]
    ids = [import_tiny(client, n.rsplit(":", 1)[0], size=256 * 1024) for n in names]
    out = tmp_path / "bundle.tar.gz"
    try:
        created = json.loads(
            pmcp(
                "bundle",
                "create",
                "-o",
                str(out),
                "--image",
                names[0],
                "--image",
                names[1],
                "--no-pull",
                "--json",
            ).stdout
        )
        assert [e["id"] for e in created["data"]["images"]] == ids
        remove(client, *names)
        assert not [i for i in client.images.list() if i.id in ids]

        verified = json.loads(pmcp("bundle", "verify", str(out), "--json").stdout)
        assert verified["ok"] and [e["name"] for e in verified["data"]["images"]] == names

        loaded = pmcp("bundle", "load", str(out))
        assert all(f"loaded {n}" in loaded.stdout for n in names)
        assert [client.images.get(n).id for n in names] == ids
    finally:
        remove(client, *names)


def test_bundle_of_the_stack_images(tmp_path: Path, record_property: Any) -> None:
    client = docker_client()
    sources = stack_test_images()
    tag = uuid.uuid4().hex[:8]
    names = []
    for src in sources:
        repo = f"pmcp-test/bundle-{src.split('/')[-1].split(':')[0]}"
        client.images.get(src).tag(repo, tag)
        names.append(f"{repo}:{tag}")
    ids = [client.images.get(n).id for n in names]
    out = tmp_path / "pmcp-bundle.tar.gz"
    try:
        start = time.monotonic()
        args = [a for n in names for a in ("--image", n)]
        pmcp("bundle", "create", "-o", str(out), *args, "--no-pull")
        create_s = time.monotonic() - start
        remove(client, *names)  # only our tags: the shared images stay for other tests
        start = time.monotonic()
        pmcp("bundle", "load", str(out))
        load_s = time.monotonic() - start
        assert [client.images.get(n).id for n in names] == ids
        size = out.stat().st_size
        raw = sum(e.size for e in verify_bundle(out).images)
        record_property("bundle_bytes", size)
        print(
            f"\nbundle of {sources}: {size / 1e6:.1f} MB gzip ({raw / 1e6:.1f} MB as docker save), "
            f"create {create_s:.1f}s, load {load_s:.1f}s"
        )
    finally:
        remove(client, *names)


def test_corrupt_bundle_is_refused_by_the_cli(tmp_path: Path) -> None:
    client = docker_client()
    name = f"pmcp-test/e2e-{uuid.uuid4().hex[:8]}:1"
    import_tiny(client, name.rsplit(":", 1)[0])
    out = tmp_path / "bundle.tar.gz"
    try:
        pmcp("bundle", "create", "-o", str(out), "--image", name, "--no-pull")
        remove(client, name)
        out.write_bytes(out.read_bytes()[:-4096])
        proc = pmcp("bundle", "load", str(out), check=False)
        assert proc.returncode == 1
        assert (
            "corrupt or incomplete" in proc.stderr
            and "fix:" in proc.stderr
            and "Traceback" not in proc.stderr
        )
        assert not [i for i in client.images.list() if name in i.tags]
    finally:
        remove(client, name)
