"""The SSE event store: replay within this process, and what a reconnect to another process gets."""

from __future__ import annotations

import anyio
from mcp_types import JSONRPCNotification

from pmcp.server.events import GET_STREAM, StreamEvents


def _note(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"n": n})


def test_replay_after_an_id_and_a_reconnect_to_another_process() -> None:
    async def go() -> tuple[list[int], str | None, str | None, str | None, str | None]:
        store, other = StreamEvents(), StreamEvents()
        priming = await store.store_event("7", None)
        ids = [await store.store_event("7", _note(n)) for n in range(3)]
        got: list[int] = []

        async def collect(event) -> None:
            got.append(event.message.params["n"])

        again = await store.replay_events_after(ids[0], collect)
        assert await store.replay_events_after(priming, collect) == "7"  # all three once more
        get_id = await store.store_event(GET_STREAM, None)
        return (
            got,
            again,
            await other.replay_events_after(get_id, collect),  # the GET stream goes on, live
            await other.replay_events_after(ids[1], collect),  # a request it never ran: nothing
            await store.replay_events_after("garbage", collect),
        )

    got, again, moved_get, moved_request, garbage = anyio.run(go)
    assert again == "7" and got == [1, 2, 0, 1, 2]
    assert moved_get == GET_STREAM and moved_request is None and garbage is None


def test_memory_is_bounded() -> None:
    async def go() -> StreamEvents:
        store = StreamEvents(per_stream=3, streams=2)
        for stream in ("a", "b", "c"):
            for n in range(5):
                await store.store_event(stream, _note(n))
        return store

    store = anyio.run(go)
    assert list(store._events) == ["b", "c"] and all(len(e) == 3 for e in store._events.values())
