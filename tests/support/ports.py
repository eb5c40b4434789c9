"""Free TCP ports for tests and benchmarks."""

from __future__ import annotations

import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed out before.

    The kernel may give the same ephemeral port to two binds in a row once the first socket is closed: CI once
    got 40083 for the simulator and for Pebble in one fixture, and compose failed on "address already in use".
    Remembering what was handed out keeps the ports of one fixture distinct.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port in 100 tries")
