"""The Proxmox client shares an identical read that is in flight, and nothing else (proxmox.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from pmcp.server.config import ServerConfig
from pmcp.server.metrics import Metrics
from pmcp.server.proxmox import ProxmoxClient, ProxmoxError

LATENCY = 0.3


@pytest.fixture(scope="module")
def own_sim() -> Iterator[Any]:
    """A simulator of this module's own: latency and request logs must not meet other tests'."""
    from pmcp.sim.testing import running_sim

    with running_sim(nodes=1, guests=4) as s:
        yield s


@pytest.fixture
def px(own_sim: Any) -> Iterator[ProxmoxClient]:
    config = ServerConfig(
        proxmox_url=own_sim.url,
        proxmox_token_id=own_sim.root_token_id,
        proxmox_token_secret=own_sim.root_token_secret,
    )
    own_sim.state.clear_requests()
    try:
        yield ProxmoxClient(config, Metrics())
    finally:
        own_sim.state.reset_controls()


def _gets(sim: Any, path: str) -> int:
    return sum(1 for method, p in sim.state.requests if (method, p) == ("GET", path))


def test_identical_reads_in_flight_are_one_request_and_each_caller_gets_its_own_copy(own_sim, px):
    own_sim.state.inject_latency(LATENCY)
    answers: list[Any] = []

    async def main() -> None:
        async def one() -> None:
            answers.append(await px.get("/cluster/resources", type="vm"))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)

    anyio.run(main)
    assert _gets(own_sim, "/cluster/resources") == 1
    assert len(answers) == 4 and all(a == answers[0] for a in answers) and answers[0]
    answers[0].clear()  # a caller that changes its answer changes nobody else's
    assert answers[1]
    assert px.metrics is not None and px.metrics.proxmox_shared._value.get() == 3


def test_a_read_after_an_answer_that_came_meanwhile_sends_its_own(own_sim, px):
    """A caller may know of a change answered after the flight left (its own write, a task's end): it
    never gets an answer that may predate it."""
    vmid = next(int(v) for v, g in own_sim.state.world["guests"].items() if g["type"] == "lxc")
    node = own_sim.state.world["guests"][str(vmid)]["node"]
    first: list[Any] = []

    async def main() -> None:
        async def slow_read() -> None:
            first.append(await px.get("/cluster/resources", type="vm"))

        async with anyio.create_task_group() as tg:
            own_sim.state.inject_latency(LATENCY)
            tg.start_soon(slow_read)
            await anyio.sleep(LATENCY / 4)  # the read is on its way, slowed; the write is not
            own_sim.state.inject_latency(0)
            await px.put(f"/nodes/{node}/lxc/{vmid}/config", description="changed")
            mine = await px.get("/cluster/resources", type="vm")
            assert mine is not None

    anyio.run(main)
    assert first and _gets(own_sim, "/cluster/resources") == 2


def test_writes_are_never_shared(own_sim, px):
    vmid = next(int(v) for v, g in own_sim.state.world["guests"].items() if g["type"] == "lxc")
    node = own_sim.state.world["guests"][str(vmid)]["node"]
    own_sim.state.inject_latency(LATENCY)

    async def main() -> None:
        async def write() -> None:
            await px.put(f"/nodes/{node}/lxc/{vmid}/config", description="same")

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            tg.start_soon(write)

    anyio.run(main)
    assert [m for m, _ in own_sim.state.requests].count("PUT") == 2


def test_a_cancelled_first_caller_does_not_cancel_the_ones_that_joined(own_sim, px):
    own_sim.state.inject_latency(LATENCY)
    joined: list[Any] = []

    async def main() -> None:
        async def joiner() -> None:
            joined.append(await px.get("/version"))

        async with anyio.create_task_group() as tg:
            with anyio.move_on_after(LATENCY / 2):  # the first caller's client goes away
                async with anyio.create_task_group() as first:
                    first.start_soon(px.get, "/version")
                    await anyio.sleep(LATENCY / 6)
                    tg.start_soon(joiner)
                    await anyio.sleep(LATENCY)

    anyio.run(main)
    assert joined and joined[0]["version"]
    assert _gets(own_sim, "/version") == 2  # it asked again once the first was gone


def test_an_error_reaches_every_caller_that_shared_the_read(own_sim, px):
    own_sim.state.inject_latency(LATENCY)
    own_sim.state.inject_errors(403, 1, "Permission check failed")
    errors: list[ProxmoxError] = []

    async def main() -> None:
        async def one() -> None:
            try:
                await px.call("GET", "/cluster/resources", retry=False)
            except ProxmoxError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            await anyio.sleep(LATENCY / 6)
            tg.start_soon(one)

    anyio.run(main)
    assert len(errors) == 2 and {e.status for e in errors} == {403} and errors[0] is not errors[1]
    assert _gets(own_sim, "/cluster/resources") == 1


def test_a_write_once_sent_is_waited_for_when_its_caller_is_cancelled(own_sim, px):
    vmid = next(int(v) for v, g in own_sim.state.world["guests"].items() if g["type"] == "lxc")
    node = own_sim.state.world["guests"][str(vmid)]["node"]
    own_sim.state.inject_latency(LATENCY)
    finished: list[bool] = []

    async def main() -> None:
        with anyio.move_on_after(LATENCY / 3):  # the client goes away while the change is on its way
            await px.put(f"/nodes/{node}/lxc/{vmid}/config", description="kept")
            await anyio.sleep(0)  # the cancellation arrives here, after the answer
            finished.append(True)

    anyio.run(main)
    assert not finished
    assert own_sim.state.guest(vmid)["config"].get("description") == "kept"
