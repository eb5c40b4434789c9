"""Generic test plumbing only: skip tests marked ``docker`` when no engine answers, saying why."""

from __future__ import annotations

import functools

import pytest

from tests.support.images import docker_available


@functools.cache
def _engine() -> bool:
    return docker_available()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") and not _engine():
        pytest.skip("no Docker engine answers: run `scripts/ensure-test-env` as root (CI does)")
