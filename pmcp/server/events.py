"""SSE event IDs, the priming event and the retry field (issue 14), with a small replay buffer.

The SDK sends a priming event (an event ID, empty data, and our `retry` in milliseconds) at the start of
every SSE stream of a 2025-11-25 session only when it has an event store; a client that received an ID
reconnects a dropped stream with `Last-Event-ID` and gets what it missed. This store keeps the last
events of each stream in memory, bounded (a server restart loses them: the client then starts afresh).

The IDs carry the process and the stream (`<process>.<seq>.<stream, base64>`), because a reconnect can
reach another server process: after `pmcp update` the session is restored on the new server
(sessions.py), which never saw the old one's events. There the GET stream (server-to-client
notifications) resumes as a live stream, as a fresh GET would; a request's stream cannot be resumed on a
process that is not running that request, so it answers nothing and the client reports the call lost
(as it did without IDs) instead of waiting forever.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
from collections import OrderedDict, deque

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

RETRY_MS = 1000  # what the SDK client waits anyway without a retry field (DEFAULT_RECONNECTION_DELAY_MS)
GET_STREAM = "_GET_stream"  # the SDK's key of the standalone GET stream (streamable_http.GET_STREAM_KEY)


def _encode(stream_id: str) -> str:
    return base64.urlsafe_b64encode(stream_id.encode()).decode().rstrip("=")


def _decode(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


class StreamEvents(EventStore):
    """The last `per_stream` events of the last `streams` streams of this process."""

    def __init__(self, per_stream: int = 100, streams: int = 1000) -> None:
        self._process = secrets.token_hex(4)
        self._seq = itertools.count(1)
        self._per_stream = per_stream
        self._streams = streams
        self._events: OrderedDict[str, deque[tuple[int, JSONRPCMessage | None]]] = OrderedDict()

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        seq = next(self._seq)
        events = self._events.get(stream_id)
        if events is None:
            events = self._events[stream_id] = deque(maxlen=self._per_stream)
            while len(self._events) > self._streams:
                self._events.popitem(last=False)
        events.append((seq, message))
        return f"{self._process}.{seq}.{_encode(stream_id)}"

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        process, _, rest = last_event_id.partition(".")
        seq_text, _, encoded = rest.partition(".")
        stream_id = _decode(encoded)
        if stream_id is None or not seq_text.isdigit():
            return None
        events = self._events.get(stream_id) if process == self._process else None
        if events is None:  # another process's stream, or one this process has forgotten
            return stream_id if stream_id == GET_STREAM else None
        for seq, message in list(events):
            if seq > int(seq_text) and message is not None:
                await send_callback(EventMessage(message, f"{self._process}.{seq}.{encoded}"))
        return stream_id
